"""Every claim ``compat.versions`` makes about OpenVPN 2.6 (trivpn/diagnostics/compat_rules.py,
rules with basis "verified"), checked against the real 2.6 binary: openvpn runs with a client
profile plus the rule's options in a fresh namespace with only loopback, and must print what the
rule says it prints. The lint must also flag the same options."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.openvpn import as_config, openvpn_output, write_pki
from tests.netns import NetnsLab
from trivpn.config.reader import read_config_text
from trivpn.diagnostics.checks_compat import lint
from trivpn.diagnostics.compat_rules import RULES, Rule

pytestmark = pytest.mark.integration

CLIENT = ["--client", "--dev", "tun", "--proto", "udp", "--remote", "198.18.0.9", "1194",
          "--nobind", "--ca", "ca.crt", "--cert", "client.crt", "--key", "client.key",
          "--verb", "4"]
ROOT = Path(__file__).resolve().parent.parent.parent
VERIFIED = [r for r in RULES if r.basis == "verified" and not r.verified_in]


def test_every_2_6_rule_is_verified_here_or_in_the_test_it_names() -> None:
    elsewhere = [r for r in RULES if r.target == "openvpn-2.6" and r.verified_in]
    assert {r.id for r in RULES if r.target == "openvpn-2.6"} == {
        r.id for r in [*VERIFIED, *elsewhere]}
    assert len(VERIFIED) >= 7
    for rule in elsewhere:
        path, _, function = rule.verified_in.partition("::")
        assert f"def {function}(" in (ROOT / path).read_text(), rule.verified_in


@pytest.mark.parametrize("rule", VERIFIED, ids=[r.id for r in VERIFIED])
def test_openvpn_2_6_does_what_the_rule_says(lab: NetnsLab, openvpn_binary: None,
                                              tmp_path: Path, rule: Rule) -> None:
    write_pki(tmp_path)
    out = openvpn_output(lab, tmp_path, [*CLIENT, *rule.openvpn_args], seconds=1)
    assert rule.openvpn_says in out, out[-3000:]
    if rule.effect == "refused":
        assert "Options error" in out, out[-2000:]
    else:
        assert "Options error" not in out, out[-2000:]
    # what the rule quotes from OpenVPN is what it printed
    if "('" in rule.says:
        assert rule.openvpn_says in rule.says, rule.says
    # and the lint flags the same profile with this rule
    text = as_config([*CLIENT, *rule.openvpn_args])
    found = lint(read_config_text(text, tmp_path / "c.conf").directives, "client")
    assert rule.id in {f["rule"] for f in found}
