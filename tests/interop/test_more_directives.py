"""Issue-12 follow-ups ("more"): client directives checked side by side against a real
``openvpn`` 2.6 client (topology: :mod:`tests.interop.sidebyside`)."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.clientkit import (
    CLIENT_IP,
    SERVER_IP,
    VPN_SERVER,
    Setup,
    client_lines,
    make_setup,
    ping_ok,
    received,
    server_lines,
    stop_process,
    wait_until,
)
from tests.interop.openvpn import OpenVpnProcess, start_openvpn
from tests.interop.sidebyside import (
    OPENVPN_SIDE,
    TRIVPN_SIDE,
    SideBySide,
    make_side_by_side,
    route_table,
)
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab
from trivpn.config import ConfigError, parse_config

pytestmark = pytest.mark.integration

# names both clients resolve through their namespace's own hosts file (``ip netns exec``
# bind-mounts /etc/netns/NAME/hosts over /etc/hosts)
HOSTS = "198.18.9.0 vpnnet.trivpn.test\n198.18.8.1 vpngw.trivpn.test\n"
FQDN_PUSHES = ('push "route vpnnet.trivpn.test 255.255.255.0"',
               'push "route 198.18.10.0 255.255.255.0 vpngw.trivpn.test"')
VPN_SUBNET = ("198.18.8.0/24", "", "tun", 0)
CLIENT_LINES = "client\ndev tun\nca ca.crt\ncert c.crt\nkey c.key\n"


@pytest.fixture
def side_by_side(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Iterator[SideBySide]:
    s = make_side_by_side(lab, tmp_path)
    made = []
    for ns, own in ((s.trivpn_ns, TRIVPN_SIDE[1]), (s.openvpn_ns, OPENVPN_SIDE[1])):
        etc = Path("/etc/netns") / ns.name
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(HOSTS + f"{own} me.trivpn.test\n")
        made.append(etc)
    try:
        yield s
    finally:
        for etc in made:
            shutil.rmtree(etc, ignore_errors=True)


@pytest.mark.directive("allow-pull-fqdn")
def test_allow_pull_fqdn_resolves_pushed_route_names_like_openvpn(side_by_side: SideBySide):
    s = side_by_side
    s.start_server("udp", extra=FQDN_PUSHES)
    trivpn = s.start_trivpn("udp", ("allow-pull-fqdn",))
    ovpn = s.start_openvpn("udp", ("allow-pull-fqdn",))
    assert trivpn.wait_event("tun_configured", 20) is not None, trivpn.text()[-4000:]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    ping_ok(s.trivpn_ns, VPN_SERVER)
    expected = {VPN_SUBNET, ("198.18.9.0/24", "198.18.8.1", "tun", 0),
                ("198.18.10.0/24", "198.18.8.1", "tun", 0)}
    assert route_table(s.openvpn_ns, OPENVPN_SIDE[0]) == expected
    assert route_table(s.trivpn_ns, TRIVPN_SIDE[0]) == expected


@pytest.mark.directive("allow-pull-fqdn")
def test_without_allow_pull_fqdn_a_pushed_name_is_refused_like_openvpn(
        side_by_side: SideBySide):
    s = side_by_side
    s.start_server("udp", extra=FQDN_PUSHES[:1])
    trivpn = s.start_trivpn("udp", ())
    ovpn = s.start_openvpn("udp", ())
    assert ovpn.wait_for("route parameter network/IP 'vpnnet.trivpn.test' must be a valid "
                         "address", 20), ovpn.text()[-4000:]
    failed = trivpn.wait_event("handshake_failed", 20)
    assert failed is not None, trivpn.text()[-4000:]
    assert ("'vpnnet.trivpn.test' is not an IPv4 address (a host name needs allow-pull-fqdn)"
            in failed["detail"])
    # openvpn drops just that option and comes up without the route; trivpn refuses the
    # whole push (its policy for malformed pushes, trivpn/protocol/push.py) and retries
    assert ovpn.wait_for("Initialization Sequence Completed", 10), ovpn.text()[-4000:]
    assert route_table(s.openvpn_ns, OPENVPN_SIDE[0]) == {VPN_SUBNET}
    assert trivpn.count("tun_configured") == 0


PROFILES = (f"remote {TRIVPN_SIDE[0]} 1194 tcp", f"remote {TRIVPN_SIDE[0]} 1194 udp")


def _own_remotes(s: SideBySide, extra: tuple[str, ...], *, own: bool = True
                 ) -> tuple[TrivpnProcess, OpenVpnProcess]:
    """Both clients without ``nobind`` (openvpn refuses it with ``local`` or without a
    global ``remote``) and, when ``own``, with only the remotes in ``extra``."""
    drop = ("nobind", f"remote {SERVER_IP} 1194") if own else ("nobind",)
    lines = [line for line in client_lines(extra=extra) if line not in drop]
    trivpn = start_trivpn(s.trivpn_ns, s.workdir, "trivpn", lines)
    ovpn = start_openvpn(s.openvpn_ns, s.workdir, "ovpnclient", [
        line.replace(TRIVPN_SIDE[0], OPENVPN_SIDE[0]).replace("client.", "client2.")
        for line in lines])
    return trivpn, ovpn


@pytest.mark.directive("proto-force")
def test_proto_force_udp_skips_the_tcp_remotes_like_openvpn(side_by_side: SideBySide):
    s = side_by_side
    s.start_server("udp")
    # the first remote is TCP, where nothing listens: without proto-force both clients
    # would try it first and be refused
    trivpn, ovpn = _own_remotes(s, (*PROFILES, "proto-force udp"))
    assert trivpn.wait_event("tun_configured", 20) is not None, trivpn.text()[-4000:]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    assert "TCP connection" not in ovpn.text()
    assert [e["proto"] for e in trivpn.events() if e.get("event") == "link_open"] == ["udp"]
    assert trivpn.count("link_failed") == 0


@pytest.mark.directive("proto-force")
def test_proto_force_tcp_leaves_no_usable_profile_like_openvpn(side_by_side: SideBySide):
    # OpenVPN 2.6 compares 'tcp' with the client profiles' 'tcp-client' (options.c,
    # options_postprocess_mutate_ce()), so even the TCP remote is disabled
    _, ovpn = _own_remotes(side_by_side, (*PROFILES, "proto-force tcp"))
    assert ovpn.wait_for("No usable connection profiles are present", 10), ovpn.text()[-3000:]
    with pytest.raises(ConfigError, match="No usable connection profiles are present"):
        parse_config(CLIENT_LINES + "\n".join(PROFILES) + "\nproto-force tcp\n", "c.conf")
    o = parse_config(CLIENT_LINES + "\n".join(PROFILES) + "\nproto-force tcp-client\n",
                     "c.conf")
    assert [r.proto for r in o.remotes] == ["tcp-client"]


def _client_kill(sock_path: Path, clients: int) -> None:
    """``client-kill CID`` for the first ``clients`` client ids on the server's management
    interface: the server sends each a RESTART message."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(str(sock_path))
    with sock, sock.makefile("rwb") as f:
        assert f.readline().startswith(b">INFO:")
        for cid in range(clients):
            f.write(b"client-kill %d\n" % cid)
            f.flush()
            assert f.readline().startswith(b"SUCCESS"), cid


@pytest.mark.directive("persist-local-ip")
@pytest.mark.parametrize("persist", [True, False])
def test_persist_local_ip_keeps_the_local_address_across_a_restart_like_openvpn(
        side_by_side: SideBySide, persist: bool):
    s = side_by_side
    s.start_server("udp", extra=(f"management {s.workdir}/server.sock unix",))
    extra = ("local me.trivpn.test", *(("persist-local-ip",) if persist else ()))
    trivpn, ovpn = _own_remotes(s, extra, own=False)
    assert trivpn.wait_event("tun_configured", 20) is not None, trivpn.text()[-4000:]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    # the name now resolves to another address of each client's own interface
    for ns, side in ((s.trivpn_ns, TRIVPN_SIDE), (s.openvpn_ns, OPENVPN_SIDE)):
        moved = side[1][:-1] + "3"
        ifname = next(a["ifname"] for a in json.loads(ns.run(["ip", "-j", "-4", "addr"]).stdout)
                      if any(i["local"] == side[1] for i in a["addr_info"]))
        ns.add_address(ifname, f"{moved}/24")
        (Path("/etc/netns") / ns.name / "hosts").write_text(HOSTS + f"{moved} me.trivpn.test\n")
    # the server tells both clients to restart (RESTART; an openvpn client: SIGUSR1)
    _client_kill(s.workdir / "server.sock", 2)
    assert wait_until(lambda: trivpn.count("tun_configured") >= 2, 20), trivpn.text()[-4000:]
    assert wait_until(lambda: ovpn.text().count("Initialization Sequence Completed") >= 2, 20)
    expect = "2" if persist else "3"
    bound = [line for line in ovpn.text().splitlines() if "link local (bound)" in line]
    assert len(bound) == 2 and bound[1].endswith(f"{OPENVPN_SIDE[1][:-1]}{expect}:1194"), bound
    opened = [e["local"] for e in trivpn.events() if e.get("event") == "link_open"]
    assert opened == [f"{TRIVPN_SIDE[1]}:1194", f"{TRIVPN_SIDE[1][:-1]}{expect}:1194"], opened


@pytest.mark.directive("http-proxy-override")
def test_http_proxy_override_sends_every_tcp_profile_through_the_proxy_like_openvpn(
        side_by_side: SideBySide):
    s = side_by_side
    s.start_server("tcp")
    heads = s.workdir / "proxy.log"
    s.lab.processes.append(s.server_ns.spawn(
        [sys.executable, str(Path(__file__).with_name("connectproxy.py")), "8080", str(heads)]))
    # the UDP profile comes first and nothing listens there: it must not be used
    extra = (f"remote {TRIVPN_SIDE[0]} 1194 udp", f"remote {TRIVPN_SIDE[0]} 1194 tcp",
             f"http-proxy-override {TRIVPN_SIDE[0]} 8080")
    trivpn, ovpn = _own_remotes(s, extra)
    assert trivpn.wait_event("tun_configured", 20) is not None, trivpn.text()[-4000:]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    ping_ok(s.trivpn_ns, VPN_SERVER)
    requests = [json.loads(line) for line in heads.read_text().splitlines()]
    assert len(requests) == 2, requests
    theirs = next(r for r in requests if OPENVPN_SIDE[0] in r)
    ours = next(r for r in requests if TRIVPN_SIDE[0] in r)
    assert "User-Agent: OpenVPN-Autoproxy/1.0\r\n" in theirs
    assert ours == theirs.replace(OPENVPN_SIDE[0], TRIVPN_SIDE[0])
    assert "UDPv4 link remote" not in ovpn.text()
    assert [e["proto"] for e in trivpn.events() if e.get("event") == "link_open"] == ["tcp"]


@pytest.mark.directive("http-proxy-override")
def test_http_proxy_override_without_a_tcp_profile_is_ignored_with_openvpns_note(
        side_by_side: SideBySide):
    s = side_by_side
    s.start_server("udp")
    trivpn, ovpn = _own_remotes(s, (f"remote {TRIVPN_SIDE[0]} 1194 udp",
                                    f"http-proxy-override {TRIVPN_SIDE[0]} 8080"))
    note = ("Note: option http-proxy-override ignored because no TCP-based connection "
            "profiles are defined")
    assert ovpn.wait_for(note, 10), ovpn.text()[-3000:]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    assert trivpn.wait_event("tun_configured", 20) is not None, trivpn.text()[-4000:]
    o = parse_config(CLIENT_LINES + f"remote {TRIVPN_SIDE[0]} 1194 udp\n"
                     f"http-proxy-override {TRIVPN_SIDE[0]} 8080\n", "c.conf")
    assert [r.http_proxy for r in o.remotes] == [None]
    assert any(note in w.message for w in o.warnings)


@pytest.mark.directive("allow-recursive-routing")
@pytest.mark.parametrize("allow", [False, True])
def test_packets_to_the_server_itself_are_dropped_unless_allow_recursive_routing_like_openvpn(
        side_by_side: SideBySide, allow: bool):
    s = side_by_side
    s.start_server("udp")
    extra = ("verb 4", *(("allow-recursive-routing",) if allow else ()))
    trivpn, ovpn = _own_remotes(s, extra, own=False)
    assert trivpn.wait_event("tun_configured", 20) is not None, trivpn.text()[-4000:]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    # pinging the server's link address out of the tunnel device: the packet enters the
    # tunnel addressed to the very host the tunnel runs to
    ours, theirs = (ns.run(["ping", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1", "-I", "tun0",
                            dst], check=False)
                    for ns, dst in ((s.trivpn_ns, TRIVPN_SIDE[0]),
                                    (s.openvpn_ns, OPENVPN_SIDE[0])))
    assert received(ours.stdout) == received(theirs.stdout) == (2 if allow else 0)
    detected = f"Recursive routing detected, drop tun packet to [AF_INET]{OPENVPN_SIDE[0]}:1194"
    assert (detected in ovpn.text()) is not allow
    if not allow:
        dropped = trivpn.wait_event("packet_dropped", 15, reason="recursive_routing")
        assert dropped is not None and dropped["count"] >= 2, trivpn.text()[-3000:]
    else:
        assert trivpn.wait_event("packet_dropped", 0.5, reason="recursive_routing") is None


# --- single-session: a TLS peer-to-peer server (tests/interop/test_p2p_server.py's shape) ---

P2P_SERVER = ["tls-server", "dev tun", "proto udp", f"local {SERVER_IP}", "port 1194",
              "ifconfig 198.18.8.1 198.18.8.2", "ca ca.crt", "cert server.crt",
              "key server.key", "dh none", "remote-cert-tls client", "ping 1",
              "ping-restart 30", "verb 4", "single-session"]
P2P_CLIENT = ["tls-client", "dev tun", "proto udp", f"remote {SERVER_IP} 1194", "nobind",
              "ifconfig 198.18.8.2 198.18.8.1", "ca ca.crt", "cert client.crt",
              "key client.key", "remote-cert-tls server", "ping 1", "connect-retry 1",
              "verb 3"]


@pytest.fixture
def setup(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Setup:
    return make_setup(lab, tmp_path)


@pytest.mark.directive("single-session")
def test_single_session_refuses_a_restarted_peer_like_openvpn(setup: Setup):
    # openvpn as the p2p server first: the reference
    ovpn_server = start_openvpn(setup.server_ns, setup.workdir, "ovpn-server", P2P_SERVER)
    first = start_openvpn(setup.client_ns, setup.workdir, "peer1", P2P_CLIENT)
    assert first.wait_for("Initialization Sequence Completed", 15), first.text()[-3000:]
    stop_process(setup.lab, first.pid)
    second = start_openvpn(setup.client_ns, setup.workdir, "peer2", P2P_CLIENT)
    assert ovpn_server.wait_for("Cannot accept new session request from [AF_INET]"
                                f"{CLIENT_IP}", 10), ovpn_server.text()[-3000:]
    stop_process(setup.lab, second.pid)
    stop_process(setup.lab, ovpn_server.pid)
    assert "Initialization Sequence Completed" not in second.text()
    # the same with trivpn as the server
    server = start_trivpn(setup.server_ns, setup.workdir, "p2p-server", P2P_SERVER)
    assert server.wait_event("link_open", 10) is not None, server.text()[-3000:]
    first = start_openvpn(setup.client_ns, setup.workdir, "peer3", P2P_CLIENT)
    assert first.wait_for("Initialization Sequence Completed", 15), first.text()[-3000:]
    stop_process(setup.lab, first.pid)
    second = start_openvpn(setup.client_ns, setup.workdir, "peer4", P2P_CLIENT)
    refused = server.wait_event("new_session_refused", 10)
    assert refused is not None, server.text()[-3000:]
    assert refused["peer"].startswith(CLIENT_IP), refused
    time.sleep(2)
    assert "Initialization Sequence Completed" not in second.text()
    assert server.count("peer_new_session") == 0


def _replay_files(s: SideBySide) -> tuple[Path, Path]:
    # the name carries the server's address, which differs per side (see _own_remotes)
    return (s.workdir / f"replay-{TRIVPN_SIDE[0]}.dat",
            s.workdir / f"replay-{OPENVPN_SIDE[0]}.dat")


@pytest.mark.directive("replay-persist")
def test_replay_persist_writes_the_servers_control_packet_id_like_openvpn(
        side_by_side: SideBySide):
    s = side_by_side
    s.start_server("udp", extra=("tls-crypt static.key",))
    started = time.time()
    trivpn, ovpn = _own_remotes(s, ("tls-crypt static.key",
                                    f"replay-persist replay-{TRIVPN_SIDE[0]}.dat"), own=False)
    assert trivpn.wait_event("tun_configured", 20) is not None, trivpn.text()[-4000:]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    for proc in (trivpn, ovpn):
        stop_process(s.lab, proc.pid)
    images = [f.read_bytes() for f in _replay_files(s)]
    assert [len(i) for i in images] == [16, 16]  # struct packet_id_persist_file_image
    for image in images:
        stamp, packet_id = struct.unpack("=qI", image[:12])
        assert started - 5 <= stamp <= time.time() and packet_id >= 1, (stamp, packet_id)


@pytest.mark.directive("replay-persist")
def test_replay_persist_refuses_control_packets_older_than_the_file_like_openvpn(
        side_by_side: SideBySide):
    s = side_by_side
    s.start_server("udp", extra=("tls-crypt static.key",))
    # a state from "tomorrow": every packet of today's server session looks like a replay
    for f in _replay_files(s):
        f.write_bytes(struct.pack("=qI4x", int(time.time()) + 86400, 1))
    trivpn, ovpn = _own_remotes(s, ("tls-crypt static.key",
                                    f"replay-persist replay-{TRIVPN_SIDE[0]}.dat"), own=False)
    assert ovpn.wait_for("tls-crypt unwrap error: packet replay", 10), ovpn.text()[-4000:]
    dropped = trivpn.wait_event("packet_dropped", 15, reason="replay")
    assert dropped is not None, trivpn.text()[-4000:]
    assert trivpn.count("tls_handshake_complete") == 0
    assert "Initialization Sequence Completed" not in ovpn.text()


# a UDP sender into the tunnel: COUNT datagrams of 1000 bytes at RATE a second (bounded)
BLASTER = """
import socket, sys, time
dst, rate, count = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
start = time.monotonic()
for i in range(count):
    time.sleep(max(0.0, start + i / rate - time.monotonic()))
    try:
        s.sendto(b"x" * 1000, (dst, 9))
    except OSError:
        pass
"""
SHAPER = 40_000


def _tx_bytes(ns: Netns, side_ip: str) -> int:
    ifname = next(a["ifname"] for a in json.loads(ns.run(["ip", "-j", "-4", "addr"]).stdout)
                  if any(i["local"] == side_ip for i in a["addr_info"]))
    return int(ns.run(["cat", f"/sys/class/net/{ifname}/statistics/tx_bytes"]).stdout)


@pytest.mark.directive("shaper")
@pytest.mark.parametrize("pushed", [False, True])
def test_shaper_holds_the_link_to_n_bytes_a_second_like_openvpn(side_by_side: SideBySide,
                                                               pushed: bool):
    s = side_by_side
    s.start_server("udp", extra=(f'push "shaper {SHAPER}"',) if pushed else ())
    trivpn, ovpn = _own_remotes(s, () if pushed else (f"shaper {SHAPER}",), own=False)
    assert trivpn.wait_event("tun_configured", 20) is not None, trivpn.text()[-4000:]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    if pushed:
        assert "OPTIONS IMPORT: traffic shaper enabled" in ovpn.text()
    sides = ((s.trivpn_ns, TRIVPN_SIDE[1]), (s.openvpn_ns, OPENVPN_SIDE[1]))
    for ns, _ in sides:  # four times what the shaper lets through, for 5 s
        s.lab.processes.append(ns.spawn([sys.executable, "-c", BLASTER, VPN_SERVER,
                                         str(4 * SHAPER / 1000), str(4 * SHAPER * 5 // 1000)]))
    time.sleep(1.0)  # the device queue fills, the shaper sets the pace
    before = [_tx_bytes(ns, ip) for ns, ip in sides]
    began = time.monotonic()
    time.sleep(3.0)
    after = [_tx_bytes(ns, ip) for ns, ip in sides]
    elapsed = time.monotonic() - began
    ours, theirs = ((a - b) / elapsed for a, b in zip(after, before, strict=True))
    # on the veth: each ~1080-byte datagram also carries a 14-byte Ethernet header
    print(f"shaper {SHAPER}: trivpn {ours:.0f} B/s, openvpn {theirs:.0f} B/s on the veth")
    assert 0.85 * SHAPER <= theirs <= 1.1 * SHAPER, theirs
    assert 0.85 * SHAPER <= ours <= 1.1 * SHAPER, (ours, theirs)


def _openvpn_refusal(s: SideBySide, name: str, lines: list[str]) -> str:
    """What openvpn prints when it refuses ``lines`` (it exits at once: an option error)."""
    conf = s.workdir / f"{name}.conf"
    conf.write_text("\n".join(lines) + "\n")
    done = s.server_ns.run(["openvpn", "--cd", str(s.workdir), "--config", conf.name],
                           check=False, timeout=10)
    assert done.returncode != 0
    return done.stdout + done.stderr


@pytest.mark.directive("shaper")
def test_shaper_out_of_range_or_in_a_server_is_refused_with_openvpns_words(
        side_by_side: SideBySide):
    s = side_by_side
    client = [*client_lines(), "shaper 99"]
    bad = "Bad shaper value, must be between 100 and 100000000"
    assert bad in _openvpn_refusal(s, "bad-shaper", client)
    with pytest.raises(ConfigError, match=bad):
        parse_config("\n".join(client) + "\n", "c.conf")
    server = [*server_lines(), "shaper 1000"]
    usage = "--shaper cannot be used with --mode server"
    assert usage in _openvpn_refusal(s, "shaped-server", server)
    with pytest.raises(ConfigError, match=usage):
        parse_config("\n".join(server) + "\n", "s.conf")


DUMP_ENV = """#!/bin/sh
env | sort > "{out}-$remote_1.$script_type"
exit 0
"""


def _x509_vars(dump: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs if k.startswith("X509_")}


@pytest.mark.directive("x509-track")
def test_x509_track_sets_only_the_tracked_script_variables_like_openvpn(
        side_by_side: SideBySide):
    s = side_by_side
    s.start_server("udp")
    dumper = s.workdir / "dump.sh"  # one file per client: named after its remote
    dumper.write_text(DUMP_ENV.format(out=s.workdir / "env"))
    dumper.chmod(0o755)
    extra = ("script-security 2", f"up {dumper}",
             "x509-track CN", "x509-track +SHA256", "x509-track +O")
    trivpn, ovpn = _own_remotes(s, extra, own=False)
    assert trivpn.wait_event("tun_configured", 20) is not None, trivpn.text()[-4000:]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    ours_file, theirs_file = (s.workdir / f"env-{ip}.up" for ip in (TRIVPN_SIDE[0],
                                                                    OPENVPN_SIDE[0]))
    assert wait_until(lambda: ours_file.exists() and theirs_file.exists(), 10)
    theirs = _x509_vars(theirs_file)
    assert theirs.get("X509_0_CN") == "server" and "X509_1_CN" not in theirs, theirs
    assert set(theirs) == {"X509_0_CN", "X509_0_SHA256", "X509_1_SHA256"}, theirs
    assert _x509_vars(ours_file) == theirs
    # an unknown name: openvpn's words
    bad = "x509_track: no such attribute 'bogusAttr'"
    assert bad in _openvpn_refusal(s, "bad-track", [*client_lines(), "x509-track bogusAttr"])
    with pytest.raises(ConfigError, match=bad):
        parse_config(CLIENT_LINES + "remote 198.18.0.1\nx509-track bogusAttr\n", "c.conf")


@pytest.mark.directive("client-nat")
@pytest.mark.parametrize("pushed", [False, True])
def test_client_nat_dnat_reaches_the_server_under_an_alias_like_openvpn(
        side_by_side: SideBySide, pushed: bool):
    s = side_by_side
    # 198.18.30.0/24 is the server's VPN subnet seen under another name: packets to
    # 198.18.30.1 go to 198.18.8.1, and its answers come back from 198.18.30.1
    lines = ("route 198.18.30.0 255.255.255.0",
             "client-nat dnat 198.18.30.0 255.255.255.0 198.18.8.0")
    s.start_server("udp", extra=tuple(f'push "{line}"' for line in lines) if pushed else ())
    trivpn, ovpn = _own_remotes(s, () if pushed else lines, own=False)
    assert trivpn.wait_event("tun_configured", 20) is not None, trivpn.text()[-4000:]
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    for ns in (s.trivpn_ns, s.openvpn_ns):
        done = ns.run(["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2", "198.18.30.1"],
                      check=False)
        assert received(done.stdout) == 2, done.stdout
        assert "from 198.18.30.1" in done.stdout, done.stdout
    # TCP too (its checksum covers the addresses): the server namespace listens on 5000
    s.lab.processes.append(s.server_ns.spawn(
        [sys.executable, "-c", "import socket\nl = socket.create_server(('0.0.0.0', 5000))\n"
         "while True:\n    c, _ = l.accept()\n    c.sendall(c.recv(100))\n    c.close()"]))
    time.sleep(0.5)
    echo = ("import socket\nc = socket.create_connection(('198.18.30.1', 5000), timeout=5)\n"
            "c.sendall(b'through the alias')\nprint(c.recv(100).decode())")
    for ns in (s.trivpn_ns, s.openvpn_ns):
        assert ns.run([sys.executable, "-c", echo]).stdout.strip() == "through the alias"
