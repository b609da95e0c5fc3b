"""opt-verify, route-ipv6-gateway and tcp-queue-limit against the real ``openvpn`` 2.6.

Namespaces ``srv`` and ``cli`` joined by a veth carrying 198.18.0.1/.2; tunnels in
198.18.8.0/24 and 2001:2:0:8::/64. What the code says OpenVPN does (its messages, its
refusal of an inconsistent client) is checked here against the binary.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.interop.clientkit import stop_process
from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.serverkit import issue_client
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab
from trivpn.config import ConfigError, load_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER_IP = "198.18.0.1"
GATEWAY6 = "2001:2:0:8::99"
ROUTE6 = "2001:2:0:31::/64"


def _setup(lab: NetnsLab, workdir: Path) -> tuple[Netns, Netns]:
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", "198.18.0.2/24")
    write_pki(workdir)
    return srv, cli


def _server(dev: str = "tun", extra: tuple[str, ...] = ()) -> list[str]:
    return [f"dev {dev}", "proto udp", f"local {SERVER_IP}", "port 1194", "ca ca.crt",
            "cert server.crt", "key server.key", "dh none", "server 198.18.8.0 255.255.255.0",
            "server-ipv6 2001:2:0:8::/64", "topology subnet", "keepalive 2 20",
            "remote-cert-tls client", "verb 4", *extra]


def _client(dev: str = "tun", extra: tuple[str, ...] = ()) -> list[str]:
    return ["client", f"dev {dev}", "proto udp", f"remote {SERVER_IP} 1194", "nobind",
            "ca ca.crt", "cert client.crt", "key client.key", "remote-cert-tls server",
            "connect-retry 1", "verb 3", *extra]


def _up(proc: OpenVpnProcess, other: str) -> None:
    assert proc.wait_for("Initialization Sequence Completed", 20), (proc.text()[-3000:], other)


# --- opt-verify ---------------------------------------------------------------------------

@pytest.mark.directive("opt-verify")
def test_trivpn_server_with_opt_verify_admits_a_matching_openvpn_client_refuses_another(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = _setup(lab, tmp_path)
    server = start_trivpn(srv, tmp_path, "server", _server(extra=("opt-verify",)))
    assert server.wait_event("link_open", timeout=10), server.text()
    same = start_openvpn(cli, tmp_path, "same", _client())
    _up(same, server.text()[-3000:])  # the string trivpn expects is what openvpn sends
    stop_process(lab, same.pid)
    other = start_openvpn(cli, tmp_path, "other", _client(extra=("tun-mtu 1400",)))
    assert other.wait_for("AUTH_FAILED", 20), (other.text()[-3000:], server.text()[-3000:])
    refused = server.wait_event("opt_verify_refused", timeout=5)
    assert refused is not None and "tun-mtu 1400" in refused["received"], server.text()
    assert server.count("opt_verify_refused") == 1


@pytest.mark.directive("opt-verify")
def test_openvpn_server_with_opt_verify_refuses_the_same_client(lab: NetnsLab, tmp_path: Path):
    """The claim behind trivpn's opt-verify: 2.6 still applies it (ssl.c,
    key_method_2_read()) and says it is deprecated."""
    srv, cli = _setup(lab, tmp_path)
    server = start_openvpn(srv, tmp_path, "server", _server(extra=("opt-verify",)))
    _up(server, "")
    other = start_openvpn(cli, tmp_path, "other", _client(extra=("tun-mtu 1400",)))
    assert other.wait_for("AUTH_FAILED", 20), (other.text()[-3000:], server.text()[-3000:])
    assert server.wait_for(
        "Option inconsistency warnings triggering disconnect due to --opt-verify", 5)


# --- route-ipv6-gateway -------------------------------------------------------------------

def _route6(ns: Netns) -> str:
    return ns.run(["ip", "-6", "route", "show", ROUTE6]).stdout.strip()


@pytest.mark.directive("route-ipv6-gateway")
@pytest.mark.parametrize("dev", ["tap", "tun"])
def test_client_routes_through_route_ipv6_gateway_as_openvpn_does(
        lab: NetnsLab, tmp_path: Path, dev: str):
    """tap: the kernel route goes via the gateway; tun: to the device alone (route.c,
    add_route_ipv6()), for both clients."""
    srv, cli = _setup(lab, tmp_path)
    server = start_openvpn(srv, tmp_path, "server", _server(dev))
    _up(server, "")
    extra = (f"route-ipv6 {ROUTE6}", f"route-ipv6-gateway {GATEWAY6}")
    theirs = start_openvpn(cli, tmp_path, "openvpn-client", _client(dev, extra))
    _up(theirs, server.text()[-3000:])
    openvpn_route = _route6(cli)
    stop_process(lab, theirs.pid)
    ours: TrivpnProcess = start_trivpn(cli, tmp_path, "trivpn-client", _client(dev, extra))
    assert ours.wait_event("tun_configured", timeout=20), ours.text()[-3000:]
    trivpn_route = _route6(cli)
    for route in (openvpn_route, trivpn_route):
        assert route.startswith(f"{ROUTE6} "), (openvpn_route, trivpn_route)
        assert (f"via {GATEWAY6} dev tap" in route) == (dev == "tap"), (openvpn_route,
                                                                         trivpn_route)


# --- what the code says openvpn prints ------------------------------------------------------

@pytest.mark.parametrize(("role", "args", "message"), [  # refusals and a warning
    ("client", ["--route-ipv6-gateway", SERVER_IP],
     f"route-ipv6-gateway parm '{SERVER_IP}' must be a valid address"),
    ("client", ["--opt-verify"], "--opt-verify requires --mode server"),
    ("server", ["--tcp-queue-limit", "0"], "--tcp-queue-limit parameter must be > 0"),
    ("server", ["--opt-verify"],  # a warning: 2.6 still applies it
     "DEPRECATION: opt-verify is deprecated and will be removed in OpenVPN 2.7"),
    ("server", ["--bcast-buffers", "0"], "--bcast-buffers parameter must be > 0"),
    ("client", ["--vlan-tagging"], "--vlan-tagging requires --mode server"),
    ("server", ["--vlan-tagging"], "--vlan-tagging must be used with --dev tap"),
    ("server", ["--vlan-pvid", "5"], "--vlan-pvid requires --vlan-tagging"),
    ("server", ["--vlan-accept", "tagged"], "--vlan-accept requires --vlan-tagging"),
    ("server", ["--vlan-pvid", "4095"],
     "the parameter of --vlan-pvid parameters must be >= 1 and <= 4094"),
])
@pytest.mark.directive("route-ipv6-gateway", "opt-verify", "tcp-queue-limit", "bcast-buffers",
                       "vlan-tagging", "vlan-pvid", "vlan-accept")
def test_openvpn_and_trivpn_say_the_same_words_for_the_same_config(
        lab: NetnsLab, tmp_path: Path, role: str, args: list[str], message: str):
    write_pki(tmp_path)
    lines = (_client() if role == "client" else _server())
    ns = lab.add("ovpn")
    done = ns.run(["timeout", "2", "openvpn", "--cd", str(tmp_path),
                   *[w for line in lines for w in (f"--{line.split()[0]}", *line.split()[1:])],
                   *args], check=False, timeout=10)
    assert message in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]
    conf = tmp_path / "trivpn.conf"
    conf.write_text("\n".join([*lines, " ".join(args).removeprefix("--")]) + "\n")
    try:
        said = [w.message for w in load_config(conf).warnings]
    except ConfigError as exc:
        said = [str(exc)]
    assert any(message in text for text in said), said


# --- bcast-buffers ------------------------------------------------------------------------

BROADCASTS = 30
SEND_BROADCASTS = f"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
for _ in range({BROADCASTS}):
    s.sendto(b"bcast-buffers", ("198.18.8.255", 9))
    time.sleep(0.02)
"""


def _rx_packets(ns: Netns) -> dict[str, int]:
    names = [line.split(":")[1].strip().split("@")[0]
             for line in ns.run(["ip", "-o", "link", "show"]).stdout.splitlines()]
    return {name: int(ns.run(["cat", f"/sys/class/net/{name}/statistics/rx_packets"]).stdout)
            for name in names if name.startswith("tap")}


def _flood_reach(lab: NetnsLab, srv: Netns, cli: Netns, tmp_path: Path, tag: str) -> int:
    """Three openvpn tap clients connect; how many of them get each broadcast frame the
    server's host sends into its tap device."""
    clients = [start_openvpn(cli, tmp_path, f"{tag}-c{i}", _client("tap")) for i in range(3)]
    for client in clients:
        _up(client, "")
    before = _rx_packets(cli)
    assert len(before) == 3, before
    srv.run([sys.executable, "-c", SEND_BROADCASTS], timeout=20)
    time.sleep(0.5)
    after = _rx_packets(cli)
    for client in clients:
        stop_process(lab, client.pid)
    gains = [after[name] - before[name] for name in before]
    reached = [g for g in gains if g >= BROADCASTS]
    assert all(g < BROADCASTS // 2 for g in gains if g < BROADCASTS), gains  # none partly
    return len(reached)


@pytest.mark.directive("bcast-buffers")
def test_bcast_buffers_limits_a_flood_to_as_many_clients_as_openvpn(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = _setup(lab, tmp_path)
    lines = ["dev tap", "proto udp", f"local {SERVER_IP}", "port 1194", "ca ca.crt",
             "cert server.crt", "key server.key", "dh none",
             "server 198.18.8.0 255.255.255.0", "duplicate-cn", "keepalive 2 20",
             "remote-cert-tls client", "verb 3", "bcast-buffers 2"]
    theirs = start_openvpn(srv, tmp_path, "openvpn-server", lines)
    _up(theirs, "")
    assert _flood_reach(lab, srv, cli, tmp_path, "o") == 2
    stop_process(lab, theirs.pid)
    ours = start_trivpn(srv, tmp_path, "trivpn-server", lines)
    assert ours.wait_event("link_open", timeout=10), ours.text()
    assert _flood_reach(lab, srv, cli, tmp_path, "t") == 2, ours.text()[-3000:]


# --- vlan-tagging, vlan-pvid (client-config-dir) --------------------------------------------
# The kernel here has no 802.1Q devices: frames are read and written on the server's tap with a
# packet socket (the kernel may hand a tag over as auxiliary data: both forms are read).

CAPTURE = """
import socket, struct, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.setsockopt(263, 8, 1)  # SOL_PACKET, PACKET_AUXDATA
s.settimeout(0.2)
seen = set()
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        data, anc, _, addr = s.recvmsg(4096, 256)
    except socket.timeout:
        continue
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    vid = 0
    for level, kind, value in anc:
        if level == 263 and kind == 8:
            status, _, _, _, _, tci = struct.unpack_from("IIIHHH", value)
            if status & 0x10:  # TP_STATUS_VLAN_VALID
                vid = tci & 0xFFF
    if data[12:14] == b"\\x81\\x00":
        vid = int.from_bytes(data[14:16], "big") & 0xFFF
    seen.add(f"{data[6:12].hex(':')} {vid}")
print("\\n".join(sorted(seen)))
"""

INJECT = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
vid = int(sys.argv[2])
tag = b"\\x81\\x00" + vid.to_bytes(2, "big") if vid else b""
frame = b"\\xff" * 6 + bytes.fromhex("020000000099") + tag + b"\\x88\\xb5" + b"vlan" * 12
for _ in range(int(sys.argv[3])):
    s.send(frame)
    time.sleep(0.01)
"""
INJECTED = 20


def _tap_name(ns: Netns) -> str:
    for line in ns.run(["ip", "-o", "link", "show"]).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith("tap"):
            return name
    raise AssertionError(f"no tap device in {ns.name}")


def _mac(ns: Netns, name: str) -> str:
    return ns.run(["cat", f"/sys/class/net/{name}/address"]).stdout.strip()


def _rx(ns: Netns, name: str) -> int:
    return int(ns.run(["cat", f"/sys/class/net/{name}/statistics/rx_packets"]).stdout)


def _vlan_behaviour(lab: NetnsLab, srv: Netns, clients: list[Netns], tmp_path: Path,
                    tag: str) -> dict[str, object]:
    """Clients 'client' (the server's VLAN 1) and 'client2' (vlan-pvid 5 in its ccd file):
    which VLAN their frames carry on the server's tap, whether they reach the server's host
    (untagged on the tap), and which of them get a broadcast the host sends untagged, tagged
    with VID 5, tagged with VID 7."""
    procs, taps = [], []
    for i, (ns, cert) in enumerate(zip(clients, ("client", "client2"), strict=True)):
        proc = start_openvpn(ns, tmp_path, f"{tag}-{cert}", [
            "client", "dev tap", "proto udp", f"remote 198.18.{2 * i}.1 1194", "nobind",
            "ca ca.crt", f"cert {cert}.crt", f"key {cert}.key", "remote-cert-tls server",
            "connect-retry 1", "verb 3"])
        _up(proc, "")
        procs.append(proc)
        taps.append(_tap_name(ns))
    tap = _tap_name(srv)
    capture = srv.spawn([sys.executable, "-c", CAPTURE, tap, "3"], stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    reached = [_reach(ns, "198.18.8.1") or _reach(ns, "198.18.8.1") for ns in clients]
    seen = capture.communicate(timeout=10)[0].decode()
    macs = {_mac(ns, name): cert for ns, name, cert in zip(clients, taps, ("client", "client2"),
                                                             strict=True)}
    vlans = sorted({f"{macs[line.split()[0]]} {line.split()[1]}"
                    for line in (seen or "").splitlines() if line.split()[0] in macs})
    floods = {}
    for vid in (0, 5, 7):
        before = [_rx(ns, name) for ns, name in zip(clients, taps, strict=True)]
        srv.run([sys.executable, "-c", INJECT, tap, str(vid), str(INJECTED)], timeout=20)
        time.sleep(0.5)
        gains = [_rx(ns, name) - b for ns, name, b in zip(clients, taps, before, strict=True)]
        floods[vid] = [g >= INJECTED for g in gains]
    for proc in procs:
        stop_process(lab, proc.pid)
    return {"frames": vlans, "reach_host": reached, "floods": floods}


def _reach(ns: Netns, dst: str) -> bool:
    return ns.run(["ping", "-c", "1", "-W", "1", dst], check=False, timeout=10).returncode == 0


@pytest.mark.directive("vlan-tagging", "vlan-pvid")
def test_vlan_tagging_puts_each_client_in_its_vlan_on_the_tap_device_as_openvpn_does(
        lab: NetnsLab, tmp_path: Path):
    srv, cli1, cli2 = lab.add("srv"), lab.add("cli1"), lab.add("cli2")
    lab.veth(srv, cli1, "198.18.0.1/24", "198.18.0.2/24")
    lab.veth(srv, cli2, "198.18.2.1/24", "198.18.2.2/24")
    pki = write_pki(tmp_path)
    issue_client(pki, "client2")
    (tmp_path / "ccd").mkdir()
    (tmp_path / "ccd" / "client2").write_text("vlan-pvid 5\n")
    lines = ["dev tap", "proto udp", "port 1194", "ca ca.crt", "cert server.crt",
             "key server.key", "dh none", "server 198.18.8.0 255.255.255.0", "keepalive 2 20",
             "remote-cert-tls client", "verb 3", "vlan-tagging", "client-config-dir ccd"]
    expected = {"frames": ["client 0", "client2 5"], "reach_host": [True, False],
                "floods": {0: [True, False], 5: [False, True], 7: [False, False]}}
    theirs = start_openvpn(srv, tmp_path, "openvpn-server", lines)
    _up(theirs, "")
    assert _vlan_behaviour(lab, srv, [cli1, cli2], tmp_path, "o") == expected
    stop_process(lab, theirs.pid)
    ours = start_trivpn(srv, tmp_path, "trivpn-server", lines)
    assert ours.wait_event("link_open", timeout=10), ours.text()
    assert _vlan_behaviour(lab, srv, [cli1, cli2], tmp_path, "t") == expected, \
        ours.text()[-3000:]


# --- tcp-queue-limit ----------------------------------------------------------------------

def _saturate(lab: NetnsLab, srv: Netns, cli: Netns, tmp_path: Path, tag: str) -> None:
    """A TCP client connects and is stopped (SIGSTOP: it reads nothing more); the server's
    host floods it with pings through the tunnel until its socket buffers are full."""
    client = start_openvpn(cli, tmp_path, f"{tag}-client", [
        "client", "dev tun", "proto tcp-client", f"remote {SERVER_IP} 1194", "nobind",
        "ca ca.crt", "cert client.crt", "key client.key", "remote-cert-tls server",
        "connect-retry 1", "verb 3"])
    _up(client, "")
    os.kill(client.pid, signal.SIGSTOP)
    try:
        srv.run(["ping", "-f", "-c", "20000", "-s", "1200", "-w", "4", "198.18.8.2"],
                check=False, timeout=20)
    finally:
        os.kill(client.pid, signal.SIGCONT)
        stop_process(lab, client.pid)


@pytest.mark.directive("tcp-queue-limit")
def test_tcp_queue_limit_drops_for_a_stalled_tcp_client_as_openvpn_does(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = _setup(lab, tmp_path)
    lines = ["dev tun", "proto tcp-server", f"local {SERVER_IP}", "port 1194", "ca ca.crt",
             "cert server.crt", "key server.key", "dh none", "server 198.18.8.0 255.255.255.0",
             "topology subnet", "keepalive 2 30", "remote-cert-tls client", "verb 4",
             "tcp-queue-limit 4"]
    theirs = start_openvpn(srv, tmp_path, "openvpn-server", lines)
    _up(theirs, "")
    _saturate(lab, srv, cli, tmp_path, "o")
    assert "MULTI: packet dropped due to output saturation" in theirs.text()
    stop_process(lab, theirs.pid)
    ours = start_trivpn(srv, tmp_path, "trivpn-server", lines)
    assert ours.wait_event("link_open", timeout=10), ours.text()
    _saturate(lab, srv, cli, tmp_path, "t")
    stop_process(lab, ours.pid)
    drops = [e for e in ours.events() if e["event"] == "packet_dropped"
             and e.get("reason") == "tcp_send_queue_full"]
    assert drops, ours.text()[-3000:]


@pytest.mark.directive("tcp-queue-limit", "bcast-buffers")
def test_openvpn_defaults_tcp_queue_limit_64_and_bcast_buffers_256(
        lab: NetnsLab, tmp_path: Path):
    """What docs/server-admission.md says of OpenVPN's defaults (options.c init_options())."""
    write_pki(tmp_path)
    ns = lab.add("ovpn")
    args = [w for line in _server() for w in (f"--{line.split()[0]}", *line.split()[1:])]
    done = ns.run(["timeout", "2", "openvpn", "--cd", str(tmp_path), *args], check=False,
                  timeout=10)
    out = done.stdout + done.stderr
    assert "tcp_queue_limit = 64" in out and "n_bcast_buf = 256" in out, out[-3000:]
