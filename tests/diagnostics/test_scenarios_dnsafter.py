"""DNS after connect against a real openvpn 2.6 server, with real clients (openvpn 2.6, and
``trivpn run``) up in the client namespace, the host's resolver played by Debian's openresolv
(tests/runtime/resolvconfkit.py) or Debian's real systemd-resolved (tests/runtime/resolvedkit.py).

Namespaces: the client (198.18.0.2, default route via the "home router" 198.18.0.254, which
runs a DNS responder: the resolver a client has before the VPN) reaches the server
(198.18.0.1); the server pushes ``redirect-gateway def1`` and ``dhcp-option DNS 198.18.20.53``
(a DNS responder in the "lan" namespace behind the server, which knows www.corp.test) and
MASQUERADEs the VPN subnet towards the LAN. The client namespace's /etc/resolv.conf is
/etc/netns/NAME/resolv.conf (what ``ip netns exec`` shows a process there).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio
from jeepney import DBusAddress, new_method_call
from jeepney.io.blocking import open_dbus_connection

from tests.conftest import _unavailable, require_netns, require_openvpn
from tests.diagnostics.scenariokit import client_lines, server_lines
from tests.interop.openvpn import PkiFiles, start_openvpn, write_pki
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import Netns, NetnsLab
from tests.runtime import resolvedkit
from tests.runtime.resolvconfkit import Openresolv, openresolv
from trivpn.config import load_config
from trivpn.diagnostics import (
    checks_dnsafter,
    checks_mtu,
    checks_nat,
    checks_port,
    checks_tls,
    checks_tunnel,
)
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext
from trivpn.diagnostics.runner import run_checks
from trivpn.diagnostics.tunnel_session import TunnelBroker
from trivpn.runtime.netns import enter_netns

pytestmark = pytest.mark.integration

SERVER_IP, CLIENT_IP, HOME_DNS = "198.18.0.1", "198.18.0.2", "198.18.0.254"
SERVER_LAN, HOST, DNS = "198.18.20.1", "198.18.20.10", "198.18.20.53"
NAME = "www.corp.test"
NETWORK_CHECKS: tuple[Check, ...] = (*checks_port.CHECKS, *checks_nat.CHECKS,
                                     *checks_tls.CHECKS, *checks_mtu.CHECKS,
                                     *checks_tunnel.CHECKS, *checks_dnsafter.CHECKS)
DNS_IDS = [c.id for c in checks_dnsafter.CHECKS]
NAT = ("table ip dnsnat {\n chain post {\n"
       "  type nat hook postrouting priority srcnat; policy accept;\n"
       "  ip saddr 198.18.8.0/24 oifname \"{ifname}\" masquerade\n }\n}\n")
PUSHES = ['push "redirect-gateway def1"', f'push "dhcp-option DNS {DNS}"',
          'push "dhcp-option DOMAIN corp.test"', "duplicate-cn"]  # the doctor's session too


@dataclass
class Lab:
    lab: NetnsLab
    workdir: Path
    server: Netns
    client: Netns
    lan: Netns
    client_if: str
    pki: PkiFiles
    resolv: Path  # /etc/netns/NAME/resolv.conf

    def context(self, *, targets: tuple[str, ...] = ()) -> DoctorContext:
        path = self.workdir / "client.conf"
        return DoctorContext(path, load_config(path), "client", 10.0, netns=self.client.name,
                             targets=targets)

    def set_resolv_conf(self, text: str | None = None, *, link: Path | None = None) -> None:
        self.resolv.unlink(missing_ok=True)
        if link is not None:
            self.resolv.symlink_to(link)
        elif text is not None:
            self.resolv.write_text(text)


def _answer(query: bytes) -> bytes | None:
    """A DNS responder's answer: A for www.corp.test, SOA for the root, NXDOMAIN else."""
    if len(query) < 17:
        return None
    end = query.index(b"\0", 12) + 5
    qname, (qtype,) = query[12:end - 4], struct.unpack("!H", query[end - 4:end - 2])
    head = query[:2]
    if qname == b"\x03www\x04corp\x04test\0" and qtype == 1:
        rr = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + IPv4Address(HOST).packed
        return head + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + query[12:end] + rr
    if qname == b"\0" and qtype == 6:
        soa = (b"\x02ns\x04corp\x04test\0\x04root\x04corp\x04test\0"
               + struct.pack("!IIIII", 1, 3600, 600, 86400, 60))
        rr = b"\0" + struct.pack("!HHIH", 6, 1, 60, len(soa)) + soa
        return head + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + query[12:end] + rr
    return head + b"\x81\x83\x00\x01\x00\x00\x00\x00\x00\x00" + query[12:end]


@contextmanager
def dns_responder(ns: Netns, address: str) -> Iterator[list[bytes]]:
    with enter_netns(ns.name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 53))
    sock.settimeout(0.1)
    queries: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            queries.append(data)
            reply = _answer(data)
            if reply is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(reply, peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield queries
    finally:
        stop.set()
        thread.join(2)
        sock.close()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_netns()
    require_openvpn()
    workdir = tmp_path_factory.mktemp("dnsafter")
    with NetnsLab() as netlab:
        server, client, lan = netlab.add("srv"), netlab.add("cli"), netlab.add("lan")
        link = netlab.veth(server, client, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
        server.add_address(link.a_ifname, f"{HOME_DNS}/24")
        client.add_route("default", via=HOME_DNS)
        lan_link = netlab.veth(server, lan, f"{SERVER_LAN}/24", f"{DNS}/24")
        lan.add_address(lan_link.b_ifname, f"{HOST}/24")
        server.enable_forwarding()
        server.nft(NAT.replace("{ifname}", lan_link.a_ifname))
        pki = write_pki(workdir)
        proc = start_openvpn(server, workdir, "server", server_lines("tls-crypt", extra=PUSHES))
        assert proc.wait_for("Initialization Sequence Completed"), proc.text()
        _default_config(workdir)
        etc = Path("/etc/netns") / client.name
        etc.mkdir(parents=True, exist_ok=True)
        try:
            with dns_responder(lan, DNS), dns_responder(server, HOME_DNS):
                yield Lab(netlab, workdir, server, client, lan, link.b_ifname, pki,
                          etc / "resolv.conf")
        finally:
            shutil.rmtree(etc, ignore_errors=True)


def _stop(lab: Lab, pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    for proc in lab.lab.processes:
        if proc.pid == pid:
            proc.wait(15)


@contextmanager
def openvpn_client(lab: Lab, extra: tuple[str, ...] = ()) -> Iterator[str]:
    """A real openvpn 2.6 client on client.conf (rewritten with ``extra``), up in the client
    namespace until the block ends; yields its log so far."""
    (lab.workdir / "client.log").unlink(missing_ok=True)  # not the last client's log
    proc = start_openvpn(lab.client, lab.workdir, "client",
                         client_lines("tls-crypt", extra=extra))
    try:
        assert proc.wait_for("Initialization Sequence Completed", 20), proc.text()[-3000:]
        yield proc.text()
    finally:
        _stop(lab, proc.pid)
        _default_config(lab.workdir)


def _default_config(workdir: Path) -> None:
    (workdir / "client.conf").write_text("\n".join(client_lines("tls-crypt")) + "\n")


def debian_script(lab: Lab, tool: Openresolv) -> Path:
    """Debian's /etc/openvpn/update-resolv-conf, its /sbin/resolvconf replaced by the
    relocated openresolv."""
    source = Path("/etc/openvpn/update-resolv-conf")
    if not source.is_file():
        _unavailable("needs Debian's /etc/openvpn/update-resolv-conf (package openvpn)")
    script = lab.workdir / "update-resolv-conf"
    script.write_text(source.read_text().replace("/sbin/resolvconf", str(tool.program)))
    script.chmod(0o755)
    return script


async def _report(ctx: DoctorContext, checks: tuple[Check, ...] = NETWORK_CHECKS,
                  only: list[str] | None = None) -> dict[str, CheckResult]:
    async with TunnelBroker() as broker:
        report = await run_checks(checks, replace(ctx, tunnel=broker), only=only)
    assert broker.handshakes <= 1
    return {r.id: r for r in report.checks}


def _statuses(results: dict[str, CheckResult]) -> dict[str, tuple[str, str, str]]:
    return {i: (r.status, r.summary, r.explanation) for i, r in results.items()
            if r.status != "ok"}


async def test_healthy_debian_script_applies_the_pushed_dns_and_nothing_warns(
        lab: Lab, tmp_path: Path):
    tool = openresolv(tmp_path / "openresolv")
    script = debian_script(lab, tool)
    lab.set_resolv_conf(link=tool.resolv_conf)
    with openvpn_client(lab, ("script-security 2", f"up {script}", f"down {script}")):
        assert f"nameserver {DNS}" in tool.resolv_conf.read_text()
        start = trio.current_time()
        results = await _report(lab.context())
        elapsed = trio.current_time() - start

    assert _statuses(results) == {}
    assert elapsed < 15
    resolver = results["dns.tunnel_resolver"]
    assert resolver.evidence["resolver_via"] == "resolv.conf"
    assert resolver.evidence["tunnel"]["device"] == "tun0"
    assert resolver.evidence["tunnel"]["process"]["program"] == "openvpn"
    assert resolver.evidence["resolv_conf"]["nameservers"] == [DNS]
    assert results["dns.leak"].evidence["routes"][DNS]["interface"] == "tun0"
    lookup = results["dns.tunnel_lookup"]
    assert lookup.evidence["name"] == "." and lookup.evidence["qtype"] == "SOA"
    assert lookup.evidence["answers"][0]["records"] == 1


async def test_a_name_is_resolved_through_the_tunnel_s_dns(lab: Lab):
    lab.set_resolv_conf(f"nameserver {HOME_DNS}\n")
    results = await _report(lab.context(targets=(NAME,)), only=["dns.tunnel_lookup"])

    lookup = results["dns.tunnel_lookup"]
    assert lookup.status == "ok", lookup.summary
    assert lookup.summary == f"{NAME} resolves through the tunnel's DNS server {DNS}: {HOST}"
    assert lookup.evidence["answers"][0]["addresses"] == [HOST]
    # a name the tunnel's DNS does not know, asked for by the user
    unknown = await _report(lab.context(targets=("nowhere.corp.test",)),
                            only=["dns.tunnel_lookup"])
    assert unknown["dns.tunnel_lookup"].status == "warn"
    assert "NXDOMAIN" in unknown["dns.tunnel_lookup"].summary


async def test_resolv_conf_on_the_home_router_under_redirect_gateway_is_a_leak(lab: Lab):
    """openvpn without an up script: the pushed DNS is never applied, resolv.conf keeps the
    home router, which is on the client's own network: redirect-gateway does not cover it."""
    lab.set_resolv_conf(f"nameserver {HOME_DNS}\n")
    with openvpn_client(lab):
        results = await _report(lab.context(), only=DNS_IDS)

    resolver, leak = results["dns.tunnel_resolver"], results["dns.leak"]
    assert resolver.status == "warn", resolver.summary
    assert f"which uses {HOME_DNS}" in resolver.summary
    assert leak.status == "fail", leak.summary
    assert leak.evidence["leaks"] == [{"address": HOME_DNS, "link": None, "names": "all",
                                       "source": f"{lab.resolv} nameserver",
                                       "why": f"its route goes out of {lab.client_if}"}]
    assert leak.evidence["tunnel"]["device"] == "tun0"
    assert "update-resolv-conf" in leak.fix and "--dns-mode" in leak.fix
    assert "Windows-only" in leak.fix


async def test_without_a_tunnel_up_the_leak_is_predicted(lab: Lab,
                                                        monkeypatch: pytest.MonkeyPatch):
    lab.set_resolv_conf(f"nameserver {HOME_DNS}\n")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={lab.workdir}/no-bus")
    monkeypatch.setenv("PATH", str(lab.workdir / "empty-path"))  # no resolvconf program
    results = await _report(lab.context(), only=DNS_IDS)

    resolver, leak = results["dns.tunnel_resolver"], results["dns.leak"]
    assert resolver.evidence["tunnel"] is None
    assert resolver.status == "warn" and "nothing here would apply" in resolver.summary
    assert leak.status == "warn" and "would leak" in leak.summary
    assert "redirect-gateway does not redirect" in leak.explanation


# ------------------------------------------------------------------ real systemd-resolved


def _require_resolved() -> None:
    if not resolvedkit.RESOLVED.is_file():
        _unavailable(f"needs Debian's systemd-resolved unpacked at {resolvedkit.RESOLVED} "
                     "(scripts/test)")
    if shutil.which("unshare") is None or shutil.which("dbus-daemon") is None:
        _unavailable("needs unshare and dbus-daemon")


@contextmanager
def with_resolved(lab: Lab, command: list[str]) -> Iterator[tuple[str, Path]]:
    """Debian's systemd-resolved in the client namespace (its own mount namespace and bus),
    running ``command``; yields the bus address and the working directory."""
    _require_resolved()
    work = Path(tempfile.mkdtemp(prefix="trivpn-dnsafter-"))
    work.chmod(0o755)
    kit = lab.client.spawn(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-m",
         "tests.runtime.resolvedkit", "serve", str(work), *command],
        cwd=resolvedkit.ROOT, env={**os.environ, "PYTHONPATH": str(resolvedkit.ROOT)})
    try:
        yield f"unix:path={work / 'bus'}", work
    finally:
        os.kill(kit.pid, signal.SIGTERM)
        (work / "done").touch()
        kit.wait(15)
        shutil.rmtree(work, ignore_errors=True)


def _home_dns_on_the_lan_link(lab: Lab, bus: str) -> None:
    """What DHCP/networkd would have given resolved for the client's own link: the home
    router's DNS, default route."""
    ifindex = int(lab.client.run(["cat", f"/sys/class/net/{lab.client_if}/ifindex"]).stdout)
    manager = DBusAddress("/org/freedesktop/resolve1", bus_name="org.freedesktop.resolve1",
                          interface="org.freedesktop.resolve1.Manager")
    with open_dbus_connection(bus=bus) as conn:
        for method, sig, args in (
                ("SetLinkDNS", "ia(iay)", (ifindex, [(2, IPv4Address(HOME_DNS).packed)])),
                ("SetLinkDefaultRoute", "ib", (ifindex, True))):
            reply = conn.send_and_get_reply(new_method_call(manager, method, sig, args),
                                            timeout=5)
            assert reply.header.fields, reply


def _wait_for(predicate: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


async def test_healthy_trivpn_native_dns_on_a_real_systemd_resolved(
        lab: Lab, monkeypatch: pytest.MonkeyPatch):
    """``trivpn run --dns-mode resolved`` gives tun0 the pushed server, '~.' and the default
    route: the home router's DNS on the LAN link gets no names any more."""
    conf = lab.workdir / "client.conf"
    log = lab.workdir / "trivpn-resolved.log"
    lab.set_resolv_conf("nameserver 127.0.0.53\n")
    with with_resolved(lab, [sys.executable, "-m", "trivpn", "run", str(conf),
                             "--log-format", "json", "--log-file", str(log),
                             "--dns-mode", "resolved", "--dns-state-dir",
                             str(lab.workdir / "run")]) as (bus, _work):
        client = TrivpnProcess(log, 0)
        assert client.wait_event("dns_applied", 30) is not None, client.text()[-3000:]
        _home_dns_on_the_lan_link(lab, bus)
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus)
        results = await _report(lab.context(), only=DNS_IDS)

    assert _statuses(results) == {}
    resolver = results["dns.tunnel_resolver"]
    assert resolver.evidence["resolver_via"] == "resolved"
    assert "systemd-resolved link tun0" in resolver.summary
    assert resolver.evidence["tunnel"]["process"]["program"] == "trivpn"
    links = {link["link"]: link for link in resolver.evidence["resolved_links"]}
    assert links["tun0"]["servers"] == [DNS] and "~." in links["tun0"]["domains"]
    assert links[lab.client_if]["servers"] == [HOME_DNS]
    assert [r["address"] for r in resolver.evidence["resolvers"]] == [DNS]


async def test_openvpn_without_a_script_on_a_real_systemd_resolved_leaks(
        lab: Lab, monkeypatch: pytest.MonkeyPatch):
    """openvpn without update-systemd-resolved: resolved knows nothing of tun0 and keeps
    sending every name to the home router's DNS on the LAN link."""
    log = lab.workdir / "client-resolved.log"
    lab.set_resolv_conf("nameserver 127.0.0.53\n")
    with with_resolved(lab, ["openvpn", "--cd", str(lab.workdir), "--config", "client.conf",
                             "--log", str(log)]) as (bus, _work):
        _wait_for(lambda: log.exists() and "Initialization Sequence Completed"
                  in log.read_text(errors="replace"))
        _home_dns_on_the_lan_link(lab, bus)
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus)
        results = await _report(lab.context(), only=DNS_IDS)

    resolver, leak = results["dns.tunnel_resolver"], results["dns.leak"]
    assert resolver.status == "warn", resolver.summary
    assert f"which uses {HOME_DNS}" in resolver.summary
    assert "no servers on the tunnel's link tun0" in resolver.explanation
    assert resolver.evidence["tunnel"]["process"]["program"] == "openvpn"
    assert leak.status == "fail", leak.summary
    assert leak.evidence["leaks"] == [{
        "address": HOME_DNS, "link": lab.client_if, "names": "all",
        "source": f"systemd-resolved link {lab.client_if}",
        "why": f"systemd-resolved sends its queries out of {lab.client_if}"}]
    assert "update-systemd-resolved" in leak.fix


async def test_the_tunnel_device_is_found_through_the_management_interface(lab: Lab):
    lab.set_resolv_conf(f"nameserver {DNS}\nsearch corp.test\n")
    with openvpn_client(lab, ("management 127.0.0.1 7505",)):
        results = await _report(lab.context(), only=["dns.tunnel_resolver"])

    resolver = results["dns.tunnel_resolver"]
    assert resolver.status == "ok", resolver.summary
    tunnel = resolver.evidence["tunnel"]
    assert tunnel["device"] == "tun0"
    assert tunnel["found_by"] == f"the management interface's state ({tunnel['addresses'][0]})"
