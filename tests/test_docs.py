"""Citations in code, tests and docs point at documents in the repository.

Code and tests cite the protocol notes as ``docs/protocol.md §N`` (several numbers may follow,
``§1.2-§1.4, §2.4``); every number must be a section of that file. Documents outside the
repository are never cited.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL_DOC = ROOT / "docs" / "protocol.md"
CITATION = re.compile(r"docs/protocol\.md\s+((?:§[\d.]*\d(?:-§[\d.]*\d)?(?:,\s*)?)+)")
SECTION = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", re.M)
# names of documents that live outside the repository (split so this file does not match)
OUTSIDE = ("digest" + " §", "openvpn-" + "protocol.md", "openvpn-" + "config.md",
           "../" + "shared")


def _sources() -> list[Path]:
    files = [*(ROOT / "trivpn").rglob("*.py"), *(ROOT / "tests").rglob("*.py"),
             *(ROOT / "docs").rglob("*.md"), ROOT / "README.md"]
    return sorted(p for p in files if p.is_file() and p != Path(__file__).resolve())


def _sections() -> set[str]:
    return set(SECTION.findall(PROTOCOL_DOC.read_text()))


def test_protocol_doc_sections_are_found() -> None:
    sections = _sections()
    assert {"1", "1.2", "7.6", "10.1", "11", "12"} <= sections


def test_every_protocol_citation_names_an_existing_section() -> None:
    sections = _sections()
    cited = 0
    missing: list[str] = []
    for path in _sources():
        for match in CITATION.finditer(path.read_text()):
            for number in re.findall(r"§([\d.]*\d)", match.group(1)):
                cited += 1
                if number not in sections:
                    missing.append(f"{path.relative_to(ROOT)}: §{number}")
    assert cited > 20  # the scan sees the citations
    assert missing == []


def test_no_document_outside_the_repository_is_cited() -> None:
    found = [f"{path.relative_to(ROOT)}: {name}" for path in _sources()
             for name in OUTSIDE if name in path.read_text()]
    assert found == []


def test_every_cited_repository_document_exists() -> None:
    cited = {(path.relative_to(ROOT).as_posix(), name) for path in _sources()
             for name in re.findall(r"\bdocs/[\w./-]+\.md\b", path.read_text())}
    assert len(cited) > 10
    missing = sorted((where, name) for where, name in cited if not (ROOT / name).is_file())
    assert missing == []
