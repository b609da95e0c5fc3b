"""The layer rules of docs/architecture.md ("Layers"), checked on the source.

* ``trivpn.protocol`` is sans-IO: it imports no trio, no socket, no clock and no config; bytes
  and time come in as arguments. Its imports are an allowlist, so a new dependency is a
  decision made here, not an accident.
* ``trivpn.diagnostics`` uses the runtime through its public names only.

Every import statement counts, also those inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = ROOT / "trivpn" / "protocol"
DIAGNOSTICS = ROOT / "trivpn" / "diagnostics"

# What the sans-IO core may import (top-level package names). Absent on purpose: trio, asyncio,
# socket, select, selectors, time, threading, subprocess, signal, and trivpn's other layers.
PROTOCOL_MAY_IMPORT = frozenset({
    "__future__", "base64", "binascii", "collections", "dataclasses", "datetime", "enum",
    "hashlib", "hmac",
    "importlib", "ipaddress", "os", "random", "re", "ssl", "string", "struct", "types", "typing",
    "cryptography", "lz4", "trivpn.protocol",
})
NEVER_IN_PROTOCOL = ("trio", "asyncio", "socket", "select", "selectors", "time", "threading",
                     "subprocess", "signal", "trivpn.config", "trivpn.runtime")
# ``os`` and ``datetime`` are allowed for these names only: randomness, and turning a given
# unix time into a datetime. No clock (os.times, datetime.now/utcnow/today), no files.
OS_NAMES = frozenset({"urandom"})
DATETIME_NAMES = frozenset({"UTC", "datetime", "timedelta", "timezone", "fromtimestamp"})
CLOCK_CALLS = frozenset({"now", "utcnow", "today", "time", "monotonic", "perf_counter"})



def _modules(package: Path) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(package.rglob("*.py")):
        yield path.relative_to(package).as_posix(), ast.parse(path.read_text(), str(path))


def _imports(tree: ast.Module) -> Iterator[tuple[str, list[str]]]:
    """(module, imported names) for every import; ``import a.b`` gives ("a.b", [])."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "trivpn uses absolute imports"
            yield node.module or "", [alias.name for alias in node.names]


def _package_of(module: str, known: frozenset[str]) -> str:
    """The entry of ``known`` that ``module`` is or lies under (else the module itself)."""
    for name in known:
        if module == name or module.startswith(name + "."):
            return name
    return module


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_protocol_imports_only_its_allowlist() -> None:
    unexpected = [f"trivpn/protocol/{name} imports {module}"
                  for name, tree in _modules(PROTOCOL) for module, _ in _imports(tree)
                  if _package_of(module, PROTOCOL_MAY_IMPORT) not in PROTOCOL_MAY_IMPORT]
    assert unexpected == []


@pytest.mark.parametrize("forbidden", NEVER_IN_PROTOCOL)
def test_protocol_never_imports_io_clock_or_other_layers(forbidden: str) -> None:
    assert _package_of(forbidden, PROTOCOL_MAY_IMPORT) not in PROTOCOL_MAY_IMPORT
    offenders = [f"{name}: {module}" for name, tree in _modules(PROTOCOL)
                 for module, _ in _imports(tree)
                 if _under(module, forbidden)]
    assert offenders == []


def test_protocol_reads_no_clock_through_os_or_datetime() -> None:
    misuse: list[str] = []
    for name, tree in _modules(PROTOCOL):
        for module, names in _imports(tree):
            if module == "os" and names:
                misuse += [f"{name}: from os import {n}" for n in names if n not in OS_NAMES]
            if module == "datetime":
                misuse += [f"{name}: from datetime import {n}" for n in names
                           if n not in DATETIME_NAMES]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            base = node.value
            if isinstance(base, ast.Name) and base.id == "os" and node.attr not in OS_NAMES:
                misuse.append(f"{name}:{node.lineno}: os.{node.attr}")
            if (isinstance(base, ast.Name) and base.id in {"datetime", "date"}
                    and node.attr in CLOCK_CALLS):
                misuse.append(f"{name}:{node.lineno}: {base.id}.{node.attr}")
    assert misuse == []


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_diagnostics_uses_public_runtime_names_only() -> None:
    found: set[tuple[str, str]] = set()
    for name, tree in _modules(DIAGNOSTICS):
        runtime_names: set[str] = set()
        for module, names in _imports(tree):
            if not _under(module, "trivpn.runtime"):
                continue
            parts = module.split(".")
            found.update((name, module) for part in parts if _is_private(part))
            found.update((name, f"{module}.{n}") for n in names if _is_private(n))
            runtime_names.update(names or [parts[-1]])
        for node in ast.walk(tree):  # a private attribute of something taken from the runtime
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in runtime_names and _is_private(node.attr)):
                found.add((name, f"{node.value.id}.{node.attr}"))
    assert found == set()


def test_the_layer_check_sees_a_violation() -> None:
    """The walkers above would notice: a module importing trio and a private runtime name."""
    tree = ast.parse("import trio\nfrom trivpn.runtime.link import _private\n"
                     "def f():\n    from time import monotonic\n")
    modules = [module for module, _ in _imports(tree)]
    assert modules == ["trio", "trivpn.runtime.link", "time"]
    assert _package_of("trio", PROTOCOL_MAY_IMPORT) not in PROTOCOL_MAY_IMPORT
    assert _package_of("time", PROTOCOL_MAY_IMPORT) not in PROTOCOL_MAY_IMPORT
    assert _is_private("_private") and not _is_private("__all__")


OPERATOR_VIEWS = ("operator.py", "management.py", "metrics.py", "stats.py", "status.py",
                  "events.py")
RUNTIMES = frozenset({"trivpn.runtime.client", "trivpn.runtime.server"})


def _runtime_modules(module: str, names: list[str]) -> set[str]:
    """The trivpn.runtime modules an import names (``from trivpn.runtime import x``)."""
    if module == "trivpn.runtime":
        return {f"trivpn.runtime.{name}" for name in names}
    return {module}


@pytest.mark.parametrize("view", OPERATOR_VIEWS)
def test_operator_views_import_neither_the_client_nor_the_server(view: str) -> None:
    """The operator tools read a runtime through small Protocols and its event bus: no import
    of client.py or server.py (not even for type checking), so no import circle."""
    tree = ast.parse((ROOT / "trivpn" / "runtime" / view).read_text())
    used = set().union(*(_runtime_modules(m, n) for m, n in _imports(tree)))
    assert not used & RUNTIMES


@pytest.mark.parametrize("runtime", ["client.py", "server.py"])
def test_the_runtimes_do_not_import_the_operator_tools(runtime: str) -> None:
    tree = ast.parse((ROOT / "trivpn" / "runtime" / runtime).read_text())
    used = set().union(*(_runtime_modules(m, n) for m, n in _imports(tree)))
    assert "trivpn.runtime.operator" not in used
