"""Every real server config in the corpus gets the outcome its manifest records.

The corpus (tests/config/corpus/servers, sources in SOURCES.json) holds server configs as
generator scripts (openvpn-install, PiVPN, docker-openvpn, dockovpn), Ansible roles and a
web UI render them with their defaults, and as OpenVPN's and Debian's samples ship them.
Each is judged as ``trivpn check`` judges a config (parse, read every referenced file, build
the TLS context, pool and tunnel plan, resolve user/group; no traffic) and must be accepted,
or refused with exactly the recorded reason. After a change that moves an outcome,
``python -m tests.config.corpus update --corpus servers`` rewrites the manifest.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.config.corpus import SERVER_CORPUS, SERVERS

ENTRIES = SERVER_CORPUS.entries()


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_server_config_gets_the_recorded_outcome(entry: dict[str, Any]) -> None:
    got = SERVER_CORPUS.trivpn_outcome(SERVER_CORPUS.profile(entry))
    assert (got.verdict, got.reason) == (entry["trivpn"]["outcome"], entry["trivpn"]["reason"])


def test_server_corpus_has_at_least_25_configs_each_with_its_source() -> None:
    assert len(ENTRIES) >= 25
    assert len({e["id"] for e in ENTRIES}) == len(ENTRIES)
    for e in ENTRIES:
        src = e["source"]
        assert ("repo" in src and "commit" in src) or "url" in src, e["id"]
        assert "retrieved" in src, e["id"]
        assert SERVER_CORPUS.profile(e).is_file(), e["id"]
        assert e["openvpn"]["evidence"], e["id"]


def test_server_corpus_files_the_configs_name_exist() -> None:
    """Every file a config names that is not a system path (plugins) sits beside it: the
    TEST material was created for each config, so a refusal is never a missing file."""
    names = {"ca", "cert", "key", "dh", "tls-auth", "tls-crypt", "tls-crypt-v2", "crl-verify",
             "secret", "client-config-dir", "up", "down"}
    for e in ENTRIES:
        conf = SERVER_CORPUS.profile(e)
        for line in conf.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in names and words[1] not in ("none", "[inline]"):
                assert not words[1].startswith("/"), (e["id"], line)
                assert (conf.parent / words[1]).exists(), (e["id"], line)


def test_server_corpus_holds_only_test_keys() -> None:
    """Every private key and static key in the server corpus is the one TEST key generated
    for it: all private keys are the same block, and so are all static keys."""
    private, static = set(), set()
    for path in SERVERS.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        private.update(re.findall(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*"
                                  r"PRIVATE KEY-----", text, re.S))
        static.update(re.findall(r"-----BEGIN OpenVPN Static key V1-----.*?"
                                 r"-----END OpenVPN Static key V1-----", text, re.S))
    assert len(private) == 1
    assert len(static) == 1


def test_readme_quotes_the_server_manifest_figures() -> None:
    """README.md's "Real server configs" table shows the acceptance the manifest records."""
    readme = (SERVERS.parents[3] / "README.md").read_text()
    section = readme.split("### Real server configs", 1)[1].split("\n### ", 1)[0]
    n = len(ENTRIES)
    ours = sum(1 for e in ENTRIES if e["trivpn"]["outcome"] == "accepted")
    theirs = sum(1 for e in ENTRIES if e["openvpn"]["outcome"] == "accepted")
    assert f"| trivpn (this version) | {ours}/{n} |" in section
    assert f"| OpenVPN 2.6.14 | {theirs}/{n} |" in section
