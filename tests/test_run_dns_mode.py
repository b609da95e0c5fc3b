"""``trivpn run --dns-mode``: its choices, and ``$TRIVPN_DNS_MODE`` as the default
(docs/dns.md)."""

from __future__ import annotations

import pytest

from trivpn.cli import build_parser


def test_dns_mode_defaults_to_the_environment_then_auto(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("TRIVPN_DNS_MODE", raising=False)
    assert build_parser().parse_args(["run", "c.conf"]).dns_mode == "auto"
    monkeypatch.setenv("TRIVPN_DNS_MODE", "resolvconf")
    assert build_parser().parse_args(["run", "c.conf"]).dns_mode == "resolvconf"
    assert build_parser().parse_args(["run", "c.conf", "--dns-mode", "off"]).dns_mode == "off"


def test_an_unknown_dns_mode_is_refused(monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "c.conf", "--dns-mode", "dnsmasq"])
    assert "invalid DNS mode 'dnsmasq'" in capsys.readouterr().err
    monkeypatch.setenv("TRIVPN_DNS_MODE", "sometimes")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "c.conf"])
    assert "invalid DNS mode 'sometimes'" in capsys.readouterr().err
