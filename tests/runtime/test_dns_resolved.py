"""The systemd-resolved backend against a recording stand-in on a private D-Bus bus: the exact
org.freedesktop.resolve1.Manager calls, signatures and arguments resolved documents
(SetLinkDNS a(iay), SetLinkDNSEx a(iayqs), SetLinkDomains a(sb), SetLinkDefaultRoute b,
SetLinkDNSSEC s, SetLinkDNSOverTLS s, RevertLink), docs/dns.md."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

import pytest

from tests.runtime.dbuskit import FakeResolved, private_bus
from trivpn.logging import get_logger
from trivpn.protocol.dns import DnsOptions, plan_dns
from trivpn.runtime.dns import DnsManager, ResolvedBackend
from trivpn.runtime.errors import RuntimeSetupError

LO = socket.if_nametoindex("lo")  # RevertLink checks that the link still exists


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[str]:
    with private_bus(tmp_path) as address:
        yield address


@pytest.fixture
def resolved(bus: str) -> Iterator[FakeResolved]:
    fake = FakeResolved(bus).start()
    yield fake
    fake.stop()


def options(*lines: str) -> DnsOptions:
    opts = DnsOptions()
    for line in lines:
        opts = opts.with_line(line.split()[1:])
    return opts


def packed(text: str) -> bytes:
    return ip_address(text).packed


def test_pushed_dhcp_options_become_link_dns_and_domains(resolved: FakeResolved):
    plan = plan_dns(DnsOptions(), [("DNS", "198.18.0.53"), ("DNS6", "2001:2::53"),
                                   ("DOMAIN", "example.test")], None)
    ResolvedBackend(resolved.address).apply("lo", LO, plan)
    assert resolved.calls == [
        ("SetLinkDNS", "ia(iay)", (LO, [(2, packed("198.18.0.53")),
                                        (10, packed("2001:2::53"))])),
        ("SetLinkDomains", "ia(sb)", (LO, [("example.test", False)])),
        ("SetLinkDefaultRoute", "ib", (LO, False)),
    ]


def test_redirect_gateway_adds_the_root_routing_domain_and_the_default_route(
        resolved: FakeResolved):
    plan = plan_dns(DnsOptions(), [("DNS", "198.18.0.53"), ("DOMAIN", "example.test")],
                    ("def1",))
    ResolvedBackend(resolved.address).apply("lo", LO, plan)
    assert resolved.calls[1:] == [
        ("SetLinkDomains", "ia(sb)", (LO, [("example.test", False), (".", True)])),
        ("SetLinkDefaultRoute", "ib", (LO, True)),
    ]


def test_dns_with_ports_sni_dnssec_and_dot_uses_the_extended_calls(resolved: FakeResolved):
    plan = plan_dns(options("dns server 0 address 198.18.0.53:853 [2001:2::53]:853",
                            "dns server 0 resolve-domains corp.test",
                            "dns server 0 dnssec optional", "dns server 0 transport DoT",
                            "dns server 0 sni dns.corp.test"), [], None)
    ResolvedBackend(resolved.address).apply("lo", LO, plan)
    assert resolved.calls == [
        ("SetLinkDNSEx", "ia(iayqs)", (LO, [(2, packed("198.18.0.53"), 853, "dns.corp.test"),
                                            (10, packed("2001:2::53"), 853,
                                             "dns.corp.test")])),
        ("SetLinkDomains", "ia(sb)", (LO, [("corp.test", True)])),
        ("SetLinkDefaultRoute", "ib", (LO, False)),
        ("SetLinkDNSSEC", "is", (LO, "allow-downgrade")),
        ("SetLinkDNSOverTLS", "is", (LO, "yes")),
    ]


def test_revert_link_undoes_it(resolved: FakeResolved):
    backend = ResolvedBackend(resolved.address)
    record = backend.apply("lo", LO, plan_dns(DnsOptions(), [("DNS", "198.18.0.53")], None))
    resolved.calls.clear()
    backend.revert(record)
    assert resolved.calls == [("RevertLink", "i", (LO,))]


def test_a_link_that_is_gone_is_not_reverted(resolved: FakeResolved):
    ResolvedBackend(resolved.address).revert({"ifindex": LO, "device": "tun-gone"})
    assert resolved.calls == []


def test_a_refused_call_reverts_the_link_and_raises(resolved: FakeResolved):
    resolved.fail["SetLinkDomains"] = "org.freedesktop.DBus.Error.InvalidArgs"
    plan = plan_dns(DnsOptions(), [("DNS", "198.18.0.53"), ("DOMAIN", "example.test")], None)
    with pytest.raises(RuntimeSetupError, match="SetLinkDomains"):
        ResolvedBackend(resolved.address).apply("lo", LO, plan)
    assert [c[0] for c in resolved.calls] == ["SetLinkDNS", "SetLinkDomains", "RevertLink"]


def test_resolved_is_available_only_when_it_owns_its_name(bus: str):
    assert not ResolvedBackend(bus).available()
    fake = FakeResolved(bus).start()
    try:
        assert ResolvedBackend(bus).available()
    finally:
        fake.stop()


def test_no_bus_means_resolved_is_unavailable_and_apply_fails_clearly(tmp_path: Path):
    backend = ResolvedBackend(f"unix:path={tmp_path}/no-bus")
    assert not backend.available()
    with pytest.raises(RuntimeSetupError, match="cannot reach systemd-resolved"):
        backend.apply("lo", LO, plan_dns(DnsOptions(), [("DNS", "198.18.0.53")], None))


def test_the_manager_records_resolved_state_and_reverts_it(
        resolved: FakeResolved, tmp_path: Path):
    manager = DnsManager(ResolvedBackend(resolved.address), get_logger(),
                         state_dir=tmp_path / "run")
    manager.apply("lo", LO, plan_dns(DnsOptions(), [("DNS", "198.18.0.53")], None))
    assert (tmp_path / "run" / "dns-lo.json").exists()
    manager.revert()
    assert resolved.calls[-1] == ("RevertLink", "i", (LO,))
    assert not (tmp_path / "run" / "dns-lo.json").exists()


def test_auto_mode_picks_resolved_when_it_runs_on_the_system_bus(
        resolved: FakeResolved, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", resolved.address)
    manager = DnsManager.for_mode("auto", get_logger(), state_dir=tmp_path)
    assert manager.backend is not None and manager.backend.name == "resolved"


def test_auto_mode_without_resolved_or_resolvconf_applies_nothing_and_says_why(
        bus: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus)  # a bus, but resolved is not on it
    monkeypatch.setenv("PATH", str(tmp_path))  # and no resolvconf program
    manager = DnsManager.for_mode("auto", get_logger(), state_dir=tmp_path)
    assert manager.backend is None
    assert "neither systemd-resolved" in manager.why
    with_resolvconf = tmp_path / "resolvconf"
    with_resolvconf.write_text("#!/bin/sh\n")
    with_resolvconf.chmod(0o755)
    manager = DnsManager.for_mode("auto", get_logger(), state_dir=tmp_path)
    assert manager.backend is not None and manager.backend.name == "resolvconf"


@pytest.mark.integration
def test_a_real_systemd_resolved_takes_the_plan_and_reverts_it(tmp_path: Path):
    """Debian's systemd-resolved, run without systemd in private namespaces
    (tests/runtime/resolvedkit.py), holds exactly what the backend set, and nothing after
    RevertLink."""
    import json
    import shutil
    import subprocess
    import sys

    from tests.conftest import _unavailable, require_root
    from tests.runtime import resolvedkit

    require_root()
    if not resolvedkit.RESOLVED.is_file():
        _unavailable(f"needs Debian's systemd-resolved unpacked at {resolvedkit.RESOLVED} "
                     "(scripts/test)")
    if shutil.which("unshare") is None or shutil.which("dbus-daemon") is None:
        _unavailable("needs unshare and dbus-daemon")
    done = subprocess.run(
        ["unshare", "--net", "--mount", "--propagation", "private", sys.executable, "-m",
         "tests.runtime.resolvedkit", str(tmp_path)], capture_output=True, text=True,
        timeout=60, check=False, cwd=resolvedkit.ROOT)
    log = (tmp_path / "resolved.log").read_text() if (tmp_path / "resolved.log").exists() else ""
    assert done.returncode == 0, done.stderr[-3000:] + log[-3000:]
    split, dot = json.loads(done.stdout)["plans"]
    assert split["applied"] == {
        "DNSEx": [[2, "198.18.8.53", 0, ""], [10, "2001:2::53", 0, ""]],
        "Domains": [["example.test", False], [".", True]], "DefaultRoute": True,
        "DNSSEC": "no", "DNSOverTLS": "no",
        "resolv_conf": ["nameserver 198.18.8.53", "nameserver 2001:2::53",
                        "search example.test"]}
    assert dot["applied"] == {
        "DNSEx": [[2, "198.18.8.54", 5353, "dns.corp.test"]],
        "Domains": [["lab.test", False], ["corp.test", True]], "DefaultRoute": False,
        "DNSSEC": "allow-downgrade", "DNSOverTLS": "yes",
        # resolv.conf cannot say "port 5353": resolved leaves that server out of it
        "resolv_conf": ["search lab.test"]}
    for plan in (split, dot):
        assert plan["reverted"]["DNSEx"] == [] and plan["reverted"]["Domains"] == []
        assert "198.18.8.5" not in " ".join(plan["reverted"]["resolv_conf"])


@pytest.mark.integration
def test_a_resolved_in_another_network_namespace_is_refused(bus: str, tmp_path: Path):
    """Its link numbers are not ours: SetLink* would configure some other link."""
    import subprocess
    import sys
    import time

    from tests.conftest import require_root
    from tests.runtime.dbuskit import RESOLVE1

    require_root()
    elsewhere = subprocess.Popen(
        ["unshare", "--net", sys.executable, "-c",
         "import sys, time; from tests.runtime.dbuskit import FakeResolved; "
         "FakeResolved(sys.argv[1]).start(); time.sleep(30)", bus],
        cwd=Path(__file__).resolve().parents[2])
    try:
        backend = ResolvedBackend(bus)
        for _ in range(100):
            if backend.available():
                break
            time.sleep(0.05)
        assert backend.available(), f"no {RESOLVE1} on the bus"
        with pytest.raises(RuntimeSetupError, match="another network namespace"):
            backend.apply("lo", LO, plan_dns(DnsOptions(), [("DNS", "198.18.0.53")], None))
    finally:
        elsewhere.kill()
        elsewhere.wait(5)
