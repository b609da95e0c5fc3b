"""DNS after connect, from fake resolver data: which resolvers get which names (resolv.conf,
systemd-resolved's links, '~.' and DefaultRoute), whether the pushed DNS is in use, leaks under
redirect-gateway, the prediction when no tunnel is up, and the name asked through the tunnel."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

from tests.diagnostics.doctorkit import CLIENT, write_config
from trivpn.config import Options, load_config
from trivpn.diagnostics import registry
from trivpn.diagnostics.checks_dnsafter import (
    LEAK_ID,
    LOOKUP_ID,
    RESOLVER_ID,
    NameProbe,
    ResolvConf,
    ResolvedLink,
    ResolvedState,
    Snapshot,
    SystemDns,
    TunDevice,
    _pushed,
    effective_redirect,
    find_processes,
    leak_verdict,
    lookup_name,
    management_state,
    openvpn_script,
    parse_resolv_conf,
    resolv_conf_path,
    resolver_verdict,
)
from trivpn.diagnostics.model import CheckResult, DoctorContext
from trivpn.diagnostics.probe_inner import QTYPE_A, parse_dns_answer
from trivpn.diagnostics.tunnel_session import Tunnel, TunnelBroker, TunnelUnavailable
from trivpn.protocol.push import DhcpOption, PushedOptions, parse_pushed_options
from trivpn.runtime.dns import plan_client_dns
from trivpn.runtime.netconf import RouteLookup

DNS = "198.18.20.53"
LAN_DNS = "198.18.0.254"
TUN = TunDevice("tun0", 7, ("198.18.8.2",), "'dev tun0'", {"pid": 1, "program": "openvpn"})
PUSH = PushedOptions(dhcp_options=(DhcpOption("DNS", DNS), DhcpOption("DOMAIN", "corp.test")),
                     redirect_gateway=("def1",))


def _options(tmp_path: Path, extra: str = "") -> Options:
    return load_config(write_config(tmp_path, CLIENT + extra), read_files=False)


def _route(dst: str, oif: str, gateway: str | None = None) -> RouteLookup:
    return RouteLookup(dst, oif, 2, gateway, None, None, 254, "unicast")


def _snap(tmp_path: Path, system: SystemDns, *, tunnel: TunDevice | None = TUN,
          pushed: PushedOptions = PUSH, lookups: dict[str, RouteLookup | str] | None = None,
          mechanism: str | None = None, extra: str = "") -> Snapshot:
    o = _options(tmp_path, extra)
    redirect = pushed.redirect_gateway
    return Snapshot(plan_client_dns(o, pushed), pushed, True, redirect, system, tunnel,
                    lookups or {}, mechanism, openvpn_script(o))


def _resolv(*servers: str) -> ResolvConf:
    return ResolvConf("/etc/resolv.conf", servers)


STUB = ResolvConf("/etc/resolv.conf", ("127.0.0.53",))


def test_resolv_conf_nameservers_and_the_last_search_line_are_read():
    conf = parse_resolv_conf("# generated\nnameserver 198.18.0.254\nsearch a.test b.test\n"
                             "nameserver fe80::1%eth0 ; scoped\ndomain c.test\noptions edns0\n")
    assert conf.nameservers == ("198.18.0.254", "fe80::1")
    assert conf.search == ("c.test",)
    assert not conf.stub
    assert parse_resolv_conf("nameserver 127.0.0.53\n").stub


def test_a_namespace_s_own_resolv_conf_is_the_one_ip_netns_exec_would_show(tmp_path: Path):
    assert resolv_conf_path(None) == Path("/etc/resolv.conf")
    assert resolv_conf_path("tvpn-no-such-namespace") == Path("/etc/resolv.conf")


def test_resolved_sends_every_name_to_the_links_with_the_root_routing_domain():
    state = ResolvedState((
        ResolvedLink(2, "eth0", (LAN_DNS,), (("lan.test", False),), True),
        ResolvedLink(7, "tun0", (DNS,), (("corp.test", False), (".", True)), True)))
    resolvers = SystemDns(STUB, state).resolvers()
    assert [(r.address, r.link, r.names) for r in resolvers] == [
        (LAN_DNS, "eth0", ("lan.test",)), (DNS, "tun0", ())]


def test_without_a_root_routing_domain_every_default_route_link_gets_the_names():
    state = ResolvedState((
        ResolvedLink(2, "eth0", (LAN_DNS,), (), True),
        ResolvedLink(7, "tun0", (DNS,), (("corp.test", True),), False)),
        global_servers=("198.18.1.1",))
    resolvers = SystemDns(STUB, state).resolvers()
    assert [(r.address, r.link, r.names) for r in resolvers] == [
        (LAN_DNS, "eth0", ()), (DNS, "tun0", ("corp.test",)), ("198.18.1.1", None, ())]


def test_pushed_dns_on_the_tunnel_link_is_in_use(tmp_path: Path):
    state = ResolvedState((ResolvedLink(7, "tun0", (DNS,), (("corp.test", False), (".", True)),
                                        True),))
    result = resolver_verdict(_snap(tmp_path, SystemDns(STUB, state)))
    assert result.status == "ok", result.summary
    assert "systemd-resolved link tun0" in result.summary


def test_pushed_dns_missing_from_the_tunnel_link_is_reported_with_the_resolver_used(
        tmp_path: Path):
    state = ResolvedState((ResolvedLink(2, "eth0", (LAN_DNS,), (), True),))
    result = resolver_verdict(_snap(tmp_path, SystemDns(STUB, state)))
    assert result.status == "warn"
    assert LAN_DNS in result.summary and DNS in result.summary
    assert "no servers on the tunnel's link tun0" in result.explanation
    assert "update-systemd-resolved" in result.fix and "--dns-mode" in result.fix


def test_resolv_conf_with_the_pushed_server_first_is_in_use(tmp_path: Path):
    conf = ResolvConf("/etc/resolv.conf", (DNS, LAN_DNS), ("corp.test",))
    result = resolver_verdict(_snap(tmp_path, SystemDns(conf, None)))
    assert result.status == "ok"
    assert "/etc/resolv.conf" in result.summary


def test_nothing_pushed_skips(tmp_path: Path):
    result = resolver_verdict(_snap(tmp_path, SystemDns(_resolv(LAN_DNS), None),
                                    pushed=PushedOptions()))
    assert result.status == "skip"


def test_a_resolver_on_another_link_under_redirect_gateway_is_a_leak(tmp_path: Path):
    state = ResolvedState((ResolvedLink(2, "eth0", (LAN_DNS,), (), True),
                           ResolvedLink(7, "tun0", (DNS,), (), True)))
    result = leak_verdict(_snap(tmp_path, SystemDns(STUB, state)))
    assert result.status == "fail"
    assert result.evidence["leaks"] == [{"address": LAN_DNS, "link": "eth0", "names": "all",
                                         "source": "systemd-resolved link eth0",
                                         "why": "systemd-resolved sends its queries out of "
                                                "eth0"}]
    # the tunnel's link has the servers but no '~.': the fix says how to give it
    assert "resolvectl domain tun0 \"~.\"" in result.fix
    assert "Windows-only" in result.fix
    assert json.loads(json.dumps(result.as_json()))["evidence"]["tunnel"]["device"] == "tun0"


def test_the_root_routing_domain_on_the_tunnel_link_stops_the_leak(tmp_path: Path):
    state = ResolvedState((ResolvedLink(2, "eth0", (LAN_DNS,), (("lan.test", True),), True),
                           ResolvedLink(7, "tun0", (DNS,), ((".", True),), True)))
    result = leak_verdict(_snap(tmp_path, SystemDns(STUB, state)))
    assert result.status == "ok", result.explanation
    assert result.evidence["leaks"] == []
    # the names the LAN link claims for itself still go there: said, not a leak
    assert result.summary.endswith(f"names under lan.test still go to {LAN_DNS} on eth0, the "
                                   "domain(s) that link claims")
    assert [r["address"] for r in result.evidence["outside_for_their_domains"]] == [LAN_DNS]


def test_a_resolv_conf_nameserver_routed_outside_the_tunnel_is_a_leak(tmp_path: Path):
    lookups: dict[str, RouteLookup | str] = {LAN_DNS: _route(LAN_DNS, "eth0")}
    result = leak_verdict(_snap(tmp_path, SystemDns(_resolv(LAN_DNS), None), lookups=lookups))
    assert result.status == "fail"
    assert "its route goes out of eth0" in result.explanation
    assert "update-resolv-conf" in result.fix


def test_a_fallback_nameserver_outside_the_tunnel_warns(tmp_path: Path):
    lookups: dict[str, RouteLookup | str] = {DNS: _route(DNS, "tun0"),
                                             LAN_DNS: _route(LAN_DNS, "eth0")}
    result = leak_verdict(_snap(tmp_path, SystemDns(_resolv(DNS, LAN_DNS), None),
                                lookups=lookups))
    assert result.status == "warn"
    assert "fallback" in result.summary


def test_a_nameserver_routed_into_the_tunnel_does_not_leak(tmp_path: Path):
    lookups: dict[str, RouteLookup | str] = {"198.18.1.1": _route("198.18.1.1", "tun0",
                                                                  "198.18.8.1")}
    result = leak_verdict(_snap(tmp_path, SystemDns(_resolv("198.18.1.1"), None),
                                lookups=lookups))
    assert result.status == "ok"


def test_no_redirect_gateway_means_no_leak_to_judge(tmp_path: Path):
    split = PushedOptions(dhcp_options=(DhcpOption("DNS", DNS),))
    result = leak_verdict(_snap(tmp_path, SystemDns(_resolv(LAN_DNS), None), pushed=split))
    assert result.status == "skip"


def test_predicted_without_any_mechanism_an_on_link_resolver_would_leak(tmp_path: Path):
    lookups: dict[str, RouteLookup | str] = {LAN_DNS: _route(LAN_DNS, "eth0")}
    snap = _snap(tmp_path, SystemDns(_resolv(LAN_DNS), None), tunnel=None, lookups=lookups)
    leak, resolver = leak_verdict(snap), resolver_verdict(snap)
    assert leak.status == "warn" and resolver.status == "warn"
    assert "would leak" in leak.summary
    assert "redirect-gateway does not redirect" in leak.explanation
    assert leak.evidence["tunnel"] is None


def test_predicted_a_resolver_behind_the_default_route_would_go_through_the_tunnel(
        tmp_path: Path):
    lookups: dict[str, RouteLookup | str] = {"198.18.1.1": _route("198.18.1.1", "eth0",
                                                                  "198.18.0.1")}
    snap = _snap(tmp_path, SystemDns(_resolv("198.18.1.1"), None), tunnel=None,
                 lookups=lookups)
    assert leak_verdict(snap).status == "ok"


def test_predicted_with_trivpn_native_dns_nothing_leaks(tmp_path: Path):
    snap = _snap(tmp_path, SystemDns(STUB, ResolvedState()), tunnel=None,
                 mechanism="systemd-resolved (trivpn --dns-mode auto)")
    resolver = resolver_verdict(snap)
    assert resolver.status == "ok"
    assert "with openvpn it would not be" in resolver.summary
    assert leak_verdict(snap).status == "ok"


def test_an_openvpn_up_script_counts_as_a_mechanism(tmp_path: Path):
    snap = _snap(tmp_path, SystemDns(_resolv(LAN_DNS), None), tunnel=None,
                 extra="script-security 2\nup /etc/openvpn/update-resolv-conf\n")
    assert snap.openvpn_script == "/etc/openvpn/update-resolv-conf"
    assert resolver_verdict(snap).status == "ok"
    assert leak_verdict(snap).status == "ok"


def test_an_up_script_without_script_security_2_does_not_run(tmp_path: Path):
    o = _options(tmp_path, "up /etc/openvpn/update-resolv-conf\n")
    assert openvpn_script(o) is None


def test_the_name_asked_is_the_target_then_the_remote_then_the_root(tmp_path: Path):
    o = _options(tmp_path)
    ctx = DoctorContext(None, o, "client", 5.0, targets=("198.18.20.10", "www.corp.test"))
    assert lookup_name(ctx, o) == ("www.corp.test", QTYPE_A, "--target")
    named = _options(tmp_path, "remote vpn.corp.test 1194\n")
    assert lookup_name(DoctorContext(None, named, "client", 5.0), named)[0] == "vpn.corp.test"
    assert lookup_name(DoctorContext(None, o, "client", 5.0), o)[0] == "."


def test_the_name_probe_asks_for_its_name_and_reads_the_a_records():
    probe = NameProbe(DNS, 53, name="www.corp.test", qtype=QTYPE_A)
    query = probe.query
    assert b"\x03www\x04corp\x04test\x00\x00\x01\x00\x01" in query
    answer = (query[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + query[12:]
              + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04"
              + IPv4Address("198.18.20.10").packed)
    parsed = parse_dns_answer(answer, query)
    assert parsed is not None and parsed.addresses == ("198.18.20.10",)


@contextmanager
def _management(lines: list[bytes], password: bytes | None = None) -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            if password is not None:
                conn.sendall(b"ENTER PASSWORD:")
                got.append(conn.recv(100))
                conn.sendall(b"SUCCESS: password is correct\r\n")
            conn.sendall(b">INFO:OpenVPN Management Interface Version 5\r\n")
            got.append(conn.recv(100))
            conn.sendall(b"".join(lines))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        thread.join(3)
        server.close()
        assert got[-1] == b"state\n"
        if password is not None:
            assert got[0] == password + b"\n"


def test_the_management_interface_state_gives_the_tunnel_address(tmp_path: Path):
    state = [b"1733300000,CONNECTED,SUCCESS,198.18.8.2,198.18.0.1,1194,,,\r\n", b"END\r\n"]
    with _management(state) as port:
        o = _options(tmp_path, f"management 127.0.0.1 {port}\n")
        assert management_state(o) == "198.18.8.2"
    (tmp_path / "mgmt.pw").write_text("s3cret\n")
    with _management(state, password=b"s3cret") as port:
        o = _options(tmp_path, f"management 127.0.0.1 {port} mgmt.pw\n")
        assert management_state(o) == "198.18.8.2"


def test_the_checks_are_registered():
    ids = [c.id for c in registry.all_checks()]
    assert {RESOLVER_ID, LEAK_ID, LOOKUP_ID} <= set(ids)


def test_a_pushed_2_6_dns_server_is_the_one_compared(tmp_path: Path):
    pushed = parse_pushed_options(["dns server 0 address 198.18.20.54",
                                   "dhcp-option DNS 198.18.20.53", "redirect-gateway def1"])
    state = ResolvedState((ResolvedLink(7, "tun0", ("198.18.20.53",), ((".", True),), True),))
    result = resolver_verdict(_snap(tmp_path, SystemDns(STUB, state), pushed=pushed))
    # 'dns server' beats 'dhcp-option DNS': the link holds the wrong one
    assert result.status == "warn"
    assert result.evidence["pushed_dns"]["servers"] == ["198.18.20.54"]


def test_servers_applied_without_the_pushed_domain_warn(tmp_path: Path):
    result = resolver_verdict(_snap(tmp_path, SystemDns(_resolv(DNS), None)))
    assert result.status == "warn"
    assert "not the pushed domain(s) corp.test" in result.summary
    assert "intranet.corp.test" in result.explanation


def test_a_root_routing_domain_on_another_link_wins_and_leaks(tmp_path: Path):
    state = ResolvedState((ResolvedLink(2, "eth0", (LAN_DNS,), ((".", True),), True),
                           ResolvedLink(7, "tun0", (DNS,), (("corp.test", False),), True)))
    resolvers = SystemDns(STUB, state).resolvers()
    assert [(r.address, r.names) for r in resolvers] == [(LAN_DNS, ()), (DNS, ("corp.test",))]
    result = leak_verdict(_snap(tmp_path, SystemDns(STUB, state)))
    assert result.status == "fail"
    assert result.evidence["leaks"][0]["address"] == LAN_DNS


def test_an_unreadable_resolved_behind_the_stub_is_not_guessed(tmp_path: Path):
    system = SystemDns(STUB, None, "systemd-resolved is not on the system D-Bus")
    snap = _snap(tmp_path, system)
    assert resolver_verdict(snap).status == "skip"
    assert leak_verdict(snap).status == "skip"
    assert "not on the system D-Bus" in resolver_verdict(snap).summary


def test_redirecting_only_ipv6_leaves_ipv4_dns_alone(tmp_path: Path):
    o = _options(tmp_path)
    assert effective_redirect(o, PushedOptions(redirect_gateway=("ipv6", "!ipv4"))) is None
    assert effective_redirect(o, PUSH) == ("def1",)
    assert effective_redirect(_options(tmp_path, "redirect-gateway def1\n"), None) == ("def1",)


def test_a_running_tunnel_process_is_found_by_its_config_and_a_doctor_is_not(tmp_path: Path):
    conf = tmp_path / "client.conf"
    conf.write_text(CLIENT)
    program = tmp_path / "trivpn"
    program.symlink_to(sys.executable)
    code = "import time; time.sleep(20)"
    procs = [subprocess.Popen([str(program), "-c", code, verb, "client.conf"], cwd=tmp_path)
             for verb in ("run", "doctor")]
    try:
        found = find_processes(conf, None)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(5)
    assert [(p["pid"], p["program"]) for p in found] == [(procs[0].pid, "trivpn")]


async def test_no_second_handshake_is_tried_after_the_run_s_handshake_failed(tmp_path: Path):
    calls: list[str] = []

    @asynccontextmanager
    async def connect(ctx: DoctorContext) -> AsyncIterator[Tunnel]:
        calls.append("handshake")
        if calls:  # always: an async generator that fails like a handshake to nowhere
            raise TunnelUnavailable("handshake_failed", "no server")
        yield Tunnel.__new__(Tunnel)

    o = _options(tmp_path)
    failed = CheckResult("tls.handshake", "fail", "no handshake")
    async with TunnelBroker(connect) as broker:
        ctx = DoctorContext(None, o, "client", 5.0, {"tls.handshake": failed}, tunnel=broker)
        assert await _pushed(ctx) is None
        assert calls == []
        assert await _pushed(replace(ctx, results={})) is None
    assert calls == ["handshake"]
