"""Every real client profile in the corpus gets the outcome its manifest records.

The corpus (tests/config/corpus/clients, sources in SOURCES.json) holds client configs as
providers, router and cloud exports, generator scripts and OpenVPN's own samples publish
them. Each is parsed as ``trivpn run`` would (``load_config``: the file and every file it
references) and must be accepted, or refused with exactly the recorded reason. After a
change that moves an outcome, ``python -m tests.config.corpus update`` rewrites the manifest
(and ``report`` shows the acceptance rates that README.md quotes).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.config.corpus import CLIENTS, entries, profile, trivpn_outcome

ENTRIES = entries()
REQUIRED_SOURCE = ("retrieved",)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_profile_gets_the_recorded_outcome(entry: dict[str, Any]) -> None:
    got = trivpn_outcome(profile(entry))
    assert (got.verdict, got.reason) == (entry["trivpn"]["outcome"], entry["trivpn"]["reason"])


def test_corpus_has_at_least_sixty_profiles_each_with_its_source() -> None:
    assert len(ENTRIES) >= 60
    assert len({e["id"] for e in ENTRIES}) == len(ENTRIES)
    for e in ENTRIES:
        src = e["source"]
        assert ("repo" in src and "commit" in src) or "url" in src, e["id"]
        assert all(k in src for k in REQUIRED_SOURCE), e["id"]
        assert profile(e).is_file(), e["id"]


def test_corpus_holds_only_test_keys() -> None:
    """Every private key and static key in the corpus is one of the TEST keys generated for
    it (a provider's real key never slips in): all private keys are the same block, and so
    are all static keys."""
    private, static = set(), set()
    for path in CLIENTS.rglob("*"):
        if not path.is_file() or path.suffix == ".p12":
            continue
        text = path.read_text(errors="replace")
        private.update(re.findall(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*"
                                  r"PRIVATE KEY-----", text, re.S))
        static.update(re.findall(r"-----BEGIN OpenVPN Static key V1-----.*?"
                                 r"-----END OpenVPN Static key V1-----", text, re.S))
    assert len(private) == 1
    assert len(static) == 1


def test_readme_quotes_the_manifest_figures() -> None:
    """README.md's corpus table shows the acceptance the manifest records, for both."""
    readme = (CLIENTS.parents[3] / "README.md").read_text()
    n = len(ENTRIES)
    ours = sum(1 for e in ENTRIES if e["trivpn"]["outcome"] == "accepted")
    theirs = sum(1 for e in ENTRIES if e["openvpn"]["outcome"] == "accepted")
    assert f"| trivpn (this version) | {ours}/{n} |" in readme
    assert f"| OpenVPN 2.6.14 | {theirs}/{n} |" in readme
