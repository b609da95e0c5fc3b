"""``trivpn run --dns-mode``: its choices, and ``$TRIVPN_DNS_MODE`` as the default
(docs/dns.md)."""

from __future__ import annotations

import pytest

from trivpn.commands.run import build_parser, split_run_args


def dns_mode(*argv: str) -> str:
    split = split_run_args(["c.conf", *argv], 2)
    mode: str = build_parser().parse_args(split.own).dns_mode
    return mode


def test_dns_mode_defaults_to_the_environment_then_auto(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TRIVPN_DNS_MODE", raising=False)
    assert dns_mode() == "auto"
    monkeypatch.setenv("TRIVPN_DNS_MODE", "resolvconf")
    assert dns_mode() == "resolvconf"
    assert dns_mode("--dns-mode", "off", "--verb", "4") == "off"


def test_the_dns_state_dir_is_trivpns_own_flag():
    split = split_run_args(["c.conf", "--dns-state-dir", "/tmp/x", "--verb", "4"], 2)
    assert split.own == ["--dns-state-dir", "/tmp/x"]
    assert [d.name for d in split.directives] == ["config", "verb"]


def test_an_unknown_dns_mode_is_refused(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        dns_mode("--dns-mode", "dnsmasq")
    assert "invalid DNS mode 'dnsmasq'" in capsys.readouterr().err
    monkeypatch.setenv("TRIVPN_DNS_MODE", "sometimes")
    with pytest.raises(SystemExit):
        dns_mode()
    assert "invalid DNS mode 'sometimes'" in capsys.readouterr().err
