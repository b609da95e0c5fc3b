"""No directive is accepted and silently ignored.

Every directive in ``DIRECTIVES`` either has at least one behavioural test, tagged
``@pytest.mark.directive("name", ...)``, or an ``inert`` reason in its ``Spec`` saying that
OpenVPN on Linux also does nothing with it. The tags are found statically (the test files are
parsed, not imported), so this test gives the same answer when it runs alone.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from trivpn.config.directives import DIRECTIVES, UNSUPPORTED, Spec

TESTS_ROOT = Path(__file__).resolve().parents[1]

# An inert reason must actually explain something.
_MIN_REASON_LENGTH = 30


@dataclass(frozen=True, slots=True)
class Tag:
    """One ``pytest.mark.directive(...)`` found in a test file."""

    names: tuple[str, ...]
    where: str  # "tests/x/test_y.py:12 test_name"


# --- the walker --------------------------------------------------------------------------------

def _is_directive_mark(node: ast.expr) -> bool:
    """``pytest.mark.directive`` or ``mark.directive`` (``from pytest import mark``)."""
    if not (isinstance(node, ast.Attribute) and node.attr == "directive"):
        return False
    owner = node.value
    return ((isinstance(owner, ast.Attribute) and owner.attr == "mark")
            or (isinstance(owner, ast.Name) and owner.id == "mark"))


def _marks_in(expr: ast.AST, where: str, problems: list[str]) -> list[Tag]:
    """Every directive mark written anywhere inside ``expr`` (a decorator, a ``pytestmark``
    value, ``pytest.param(..., marks=...)`` inside a ``parametrize``)."""
    tags = []
    called = {id(n.func) for n in ast.walk(expr) if isinstance(n, ast.Call)}
    for node in ast.walk(expr):
        if not isinstance(node, ast.Call):
            if isinstance(node, ast.expr) and _is_directive_mark(node) and id(node) not in called:
                # a bare ``@pytest.mark.directive`` without arguments
                problems.append(f"{where}: directive mark without directive names")
            continue
        if not _is_directive_mark(node.func):
            continue
        names = []
        for arg in node.args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.append(arg.value)
            else:
                problems.append(f"{where}: directive mark arguments must be string literals")
        if not names:
            problems.append(f"{where}: directive mark without directive names")
        tags.append(Tag(tuple(names), where))
    return tags


def _pytestmark_values(body: Iterable[ast.stmt]) -> list[tuple[int, ast.expr]]:
    found = []
    for stmt in body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in targets):
            found.append((stmt.lineno, value))
    return found


def tags_in_source(source: str, label: str, problems: list[str]) -> list[Tag]:
    """The directive tags that apply to tests in one test module's source.

    Counted: marks on ``test_*`` functions and ``Test*`` classes (decorators, including
    ``pytest.param(..., marks=...)`` in ``parametrize``) and ``pytestmark`` assignments at
    module or test-class level. A mark on a helper that pytest would not collect is a problem,
    not a tag.
    """
    tree = ast.parse(source, filename=label)
    tags: list[Tag] = []
    for lineno, value in _pytestmark_values(tree.body):
        tags += _marks_in(value, f"{label}:{lineno} pytestmark", problems)

    def visit(body: Iterable[ast.stmt], in_test_class: bool) -> None:
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{label}:{stmt.lineno} {stmt.name}"
                found = [t for d in stmt.decorator_list for t in _marks_in(d, where, problems)]
                is_test = stmt.name.startswith("test")
                if found and not is_test:
                    problems.append(f"{where}: directive mark on a function pytest does not "
                                    "collect as a test")
                elif is_test:
                    tags.extend(found)
            elif isinstance(stmt, ast.ClassDef):
                where = f"{label}:{stmt.lineno} {stmt.name}"
                is_test = stmt.name.startswith("Test")
                found = [t for d in stmt.decorator_list for t in _marks_in(d, where, problems)]
                for lineno, value in _pytestmark_values(stmt.body):
                    found += _marks_in(value, f"{label}:{lineno} {stmt.name}.pytestmark",
                                       problems)
                if found and not is_test:
                    problems.append(f"{where}: directive mark on a class pytest does not "
                                    "collect as a test")
                elif is_test:
                    tags.extend(found)
                visit(stmt.body, is_test)

    visit(tree.body, False)
    return tags


def collect_tags(root: Path, problems: list[str]) -> list[Tag]:
    """Directive tags in every ``test_*.py`` under ``root``; marks in other files (helpers,
    conftest) are reported as problems since they tag no test."""
    tags: list[Tag] = []
    for path in sorted(root.rglob("*.py")):
        label = str(path.relative_to(root.parent))
        found = tags_in_source(path.read_text(encoding="utf-8"), label, problems)
        if not path.name.startswith("test_"):
            problems.extend(f"{t.where}: directive mark outside a test module" for t in found)
            continue
        tags.extend(found)
    return tags


def coverage_problems(table: Mapping[str, Spec], tags: Iterable[Tag],
                      unsupported: frozenset[str] = frozenset()) -> list[str]:
    """Everything wrong with how ``table`` is covered by ``tags`` (empty: all good)."""
    problems: list[str] = []
    tagged: dict[str, list[str]] = {}
    for tag in tags:
        for name in tag.names:
            tagged.setdefault(name, []).append(tag.where)
    for name in sorted(tagged):
        if name not in table:
            hint = " (it is refused as unsupported)" if name in unsupported else ""
            problems.append(f"{tagged[name][0]}: tags '{name}', which is not an accepted "
                            f"directive{hint}")
    for name, spec in sorted(table.items()):
        if spec.inert is not None:
            if len(spec.inert.strip()) < _MIN_REASON_LENGTH:
                problems.append(f"'{name}': inert reason too short to explain why OpenVPN on "
                                f"Linux also does nothing with it: {spec.inert!r}")
            continue
        if name not in tagged:
            problems.append(f"'{name}' is accepted but has no behavioural test "
                            "(@pytest.mark.directive) and no inert reason")
    return problems


# --- the real table ----------------------------------------------------------------------------

def test_every_accepted_directive_is_tested_or_inert_like_openvpn() -> None:
    problems: list[str] = []
    tags = collect_tags(TESTS_ROOT, problems)
    problems += coverage_problems(DIRECTIVES, tags, UNSUPPORTED)
    assert not problems, "\n".join(problems)


# --- the walker on synthetic input -------------------------------------------------------------

def _spec(inert: str | None = None) -> Spec:
    return Spec(0, 0, lambda st, d: st.opts, inert=inert)


REASON = "OpenVPN on Linux parses this and never reads it again"

SYNTHETIC = '''
import pytest
from pytest import mark

pytestmark = [pytest.mark.integration, pytest.mark.directive("alpha")]

@pytest.mark.directive("beta", "gamma")
def test_beta() -> None: ...

@mark.directive("delta")
async def test_delta() -> None: ...

@pytest.mark.parametrize("x", [pytest.param(1, marks=pytest.mark.directive("epsilon")), 2])
def test_params(x: int) -> None: ...

@pytest.mark.directive("zeta")
class TestZeta:
    pytestmark = pytest.mark.directive("eta")

    @pytest.mark.directive("theta")
    def test_inner(self) -> None: ...

@pytest.mark.directive("helper-only")
def make_thing() -> None: ...

@pytest.mark.directive
def test_bare() -> None: ...

NAME = "iota"

@pytest.mark.directive(NAME)
def test_dynamic() -> None: ...
'''


def _synthetic_tags() -> tuple[set[str], list[str]]:
    problems: list[str] = []
    tags = tags_in_source(SYNTHETIC, "tests/x/test_syn.py", problems)
    return {n for t in tags for n in t.names}, problems


def test_walker_finds_marks_on_functions_classes_params_and_pytestmark() -> None:
    names, _ = _synthetic_tags()
    assert names == {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"}


def test_walker_reports_marks_that_tag_no_test_or_name_nothing() -> None:
    _, problems = _synthetic_tags()
    assert any("make_thing" in p and "does not collect" in p for p in problems)
    assert any("test_bare" in p and "without directive names" in p for p in problems)
    assert any("test_dynamic" in p and "string literals" in p for p in problems)


def test_walker_reports_marks_outside_test_modules(tmp_path: Path) -> None:
    root = tmp_path / "tests"
    root.mkdir()
    (root / "helpers.py").write_text(
        "import pytest\n@pytest.mark.directive('alpha')\ndef test_x() -> None: ...\n")
    (root / "test_real.py").write_text(
        "import pytest\n@pytest.mark.directive('beta')\ndef test_y() -> None: ...\n")
    problems: list[str] = []
    tags = collect_tags(root, problems)
    assert [t.names for t in tags] == [("beta",)]
    assert problems == ["tests/helpers.py:3 test_x: directive mark outside a test module"]


def test_untested_directive_without_reason_fails() -> None:
    table = {"tested": _spec(), "untested": _spec(), "inert": _spec(REASON)}
    problems = coverage_problems(table, [Tag(("tested",), "t.py:1 test_a")])
    assert problems == ["'untested' is accepted but has no behavioural test "
                        "(@pytest.mark.directive) and no inert reason"]


def test_all_covered_table_passes() -> None:
    table = {"tested": _spec(), "inert": _spec(REASON)}
    assert coverage_problems(table, [Tag(("tested",), "t.py:1 test_a")]) == []


def test_tag_naming_an_unknown_directive_fails() -> None:
    problems = coverage_problems({"tested": _spec()},
                                 [Tag(("tested", "tsted"), "t.py:1 test_a"),
                                  Tag(("fragment",), "t.py:9 test_b")],
                                 unsupported=frozenset({"fragment"}))
    assert problems == [
        "t.py:9 test_b: tags 'fragment', which is not an accepted directive "
        "(it is refused as unsupported)",
        "t.py:1 test_a: tags 'tsted', which is not an accepted directive"]


def test_an_empty_or_token_inert_reason_fails() -> None:
    problems = coverage_problems({"x": _spec("ignored")}, [])
    assert len(problems) == 1 and "too short" in problems[0]


def test_inert_directive_may_also_have_a_test_checking_the_claim() -> None:
    # a test comparing against the real openvpn that it does nothing is welcome
    assert coverage_problems({"i": _spec(REASON)}, [Tag(("i",), "t.py:1 test_i")]) == []


@pytest.mark.parametrize("name", sorted(n for n, s in DIRECTIVES.items() if s.inert))
def test_inert_reasons_name_openvpn(name: str) -> None:
    reason = DIRECTIVES[name].inert
    assert reason is not None and "OpenVPN" in reason
