"""TLS peer-to-peer server (tls-server without 'mode server'): ``trivpn run`` waits for its one
peer, negotiates the data channel as OpenVPN 2.6's P2P NCP does (ssl_ncp.c, p2p_mode_ncp())
and carries traffic through the tunnel of its own ``ifconfig``; the peer is a real openvpn 2.6
``tls-client`` or a trivpn one. Namespaces: trivpn's server in ``srv`` (198.18.0.1), the peer in
``cli`` (198.18.0.2), tunnel 198.18.8.1 <-> 198.18.8.2."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from tests.interop.clientkit import (
    SERVER_IP,
    Setup,
    make_setup,
    ping,
    start_client,
    stop_process,
    transfer,
    wait_up,
)
from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import NetnsLab

pytestmark = pytest.mark.integration

SERVER_TUN, CLIENT_TUN = "198.18.8.1", "198.18.8.2"
SERVER_CIPHERS = "CHACHA20-POLY1305:AES-128-GCM:AES-256-GCM"
CLIENT_CIPHERS = "AES-128-GCM:CHACHA20-POLY1305"
CHOSEN = "CHACHA20-POLY1305"  # the server's first cipher that the client lists
NCP_RESULT = re.compile(r"P2P mode NCP negotiation result: TLS_export=(\d), DATA_v2=(\d), "
                        r"peer-id (\d+), cipher=(\S+)")


@pytest.fixture
def setup(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Setup:
    return make_setup(lab, tmp_path)


def _server_lines(proto: str = "udp", *extra: str) -> list[str]:
    """The p2p server: OpenVPN's loopback/office sample shape, tunnel from its ifconfig."""
    return ["tls-server", "dev tun", f"proto {proto}", f"local {SERVER_IP}", "port 1194",
            f"ifconfig {SERVER_TUN} {CLIENT_TUN}", "ca ca.crt", "cert server.crt",
            "key server.key", "dh none", "remote-cert-tls client",
            f"data-ciphers {SERVER_CIPHERS}", "ping 1", "ping-restart 10", "verb 4", *extra]


def _client_lines(proto: str = "udp", *extra: str, lport: int | None = None) -> list[str]:
    bind = [f"lport {lport}"] if lport else ["nobind"]
    return ["tls-client", "dev tun", f"proto {'tcp-client' if proto == 'tcp-server' else proto}",
            f"remote {SERVER_IP} 1194", *bind, f"ifconfig {CLIENT_TUN} {SERVER_TUN}",
            "ca ca.crt", "cert client.crt", "key client.key", "remote-cert-tls server",
            f"data-ciphers {CLIENT_CIPHERS}", "ping 1", "ping-restart 10",
            "connect-retry 1", "verb 4", *extra]


def _start_server(setup: Setup, lines: list[str], name: str = "p2p-server") -> TrivpnProcess:
    return start_trivpn(setup.server_ns, setup.workdir, name, lines)


def _start_openvpn_client(setup: Setup, lines: list[str],
                          name: str = "ovpn-client") -> OpenVpnProcess:
    return start_openvpn(setup.client_ns, setup.workdir, name, lines)


def _both_ways(setup: Setup) -> None:
    for ns, dst in ((setup.client_ns, SERVER_TUN), (setup.server_ns, CLIENT_TUN)):
        done = ping(ns, dst)
        assert done.returncode == 0, done.stdout


@pytest.mark.directive("tls-server", "ifconfig", "proto")
@pytest.mark.parametrize("proto", ["udp", "tcp-server"])
def test_openvpn_tls_client_reaches_a_trivpn_tls_peer_to_peer_server(
        setup: Setup, proto: str) -> None:
    server = _start_server(setup, _server_lines(proto))
    assert server.wait_event("link_open", 10) is not None, server.text()[-3000:]
    ovpn = _start_openvpn_client(setup, _client_lines(proto))
    wait_up(server)
    assert ovpn.wait_for("Initialization Sequence Completed", 15), ovpn.text()[-3000:]
    _both_ways(setup)
    transfer(setup.client_ns, setup.server_ns, SERVER_TUN, size=2 * 1024 * 1024, timeout=20)
    transfer(setup.server_ns, setup.client_ns, CLIENT_TUN, size=2 * 1024 * 1024, timeout=20)
    # OpenVPN's view (ssl_ncp.c, p2p_mode_ncp()): TLS-EKM keys, P_DATA_V2, the server's choice
    found = NCP_RESULT.search(ovpn.text())
    assert found is not None, ovpn.text()[-3000:]
    assert (found[1], found[2], found[4]) == ("1", "1", CHOSEN)
    assert f"Data Channel: cipher '{CHOSEN}'" in ovpn.text()
    keys = server.wait_event("key_method_complete", 1)
    assert keys is not None and keys["cipher"] == CHOSEN, keys
    assert keys["peer_id"] == int(found[3]), (keys, found[0])  # both derived the same peer-id
    assert keys["key_derivation"] == "tls-ekm"


@pytest.mark.directive("tls-server")
def test_p2p_ncp_result_is_the_one_an_openvpn_tls_server_reaches(setup: Setup) -> None:
    """The same pair of configs with openvpn as the server: the client logs the same NCP
    result (the peer-id differs: it comes from each session's TLS keys)."""
    ovpn_server = start_openvpn(setup.server_ns, setup.workdir, "ovpn-server",
                                _server_lines())
    ovpn = _start_openvpn_client(setup, _client_lines())
    assert ovpn.wait_for("Initialization Sequence Completed", 15), ovpn.text()[-3000:]
    reference = NCP_RESULT.search(ovpn.text())
    assert reference is not None, ovpn.text()[-3000:]
    stop_process(setup.lab, ovpn.pid)
    stop_process(setup.lab, ovpn_server.pid)
    server = _start_server(setup, _server_lines())
    assert server.wait_event("link_open", 10) is not None, server.text()[-3000:]
    ovpn = _start_openvpn_client(setup, _client_lines(), name="ovpn-client2")
    assert ovpn.wait_for("Initialization Sequence Completed", 15), ovpn.text()[-3000:]
    against_trivpn = NCP_RESULT.search(ovpn.text())
    assert against_trivpn is not None
    assert (against_trivpn[1], against_trivpn[2], against_trivpn[4]) == (
        reference[1], reference[2], reference[4])


@pytest.mark.directive("tls-server", "tls-client")
@pytest.mark.parametrize("proto", ["udp", "tcp-server"])
def test_trivpn_tls_client_and_trivpn_tls_server_in_peer_to_peer_mode(
        setup: Setup, proto: str) -> None:
    server = _start_server(setup, _server_lines(proto, "tls-auth static.key 0"))
    assert server.wait_event("link_open", 10) is not None, server.text()[-3000:]
    client = start_client(setup, _client_lines(proto, "tls-auth static.key 1"))
    wait_up(client)
    wait_up(server)
    _both_ways(setup)
    server_keys, client_keys = server.wait_event("key_method_complete", 1), client.wait_event(
        "key_method_complete", 1)
    assert server_keys is not None and client_keys is not None
    assert server_keys["cipher"] == client_keys["cipher"] == CHOSEN
    assert server_keys["peer_id"] == client_keys["peer_id"]


@pytest.mark.directive("tls-server")
@pytest.mark.parametrize(("proto", "lport"), [("udp", None), ("udp", 40000),
                                              ("tcp-server", None)],
                         ids=["udp-new-port", "udp-same-address", "tcp"])
def test_p2p_server_takes_the_peer_back_after_it_restarts(
        setup: Setup, proto: str, lport: int | None) -> None:
    """The openvpn peer is killed (no exit notification) and started again: its new hard
    reset (from a new source port, or from the same address and port) opens a new session,
    the tunnel carries traffic again."""
    server = _start_server(setup, _server_lines(proto))
    assert server.wait_event("link_open", 10) is not None, server.text()[-3000:]
    ovpn = _start_openvpn_client(setup, _client_lines(proto, lport=lport))
    assert ovpn.wait_for("Initialization Sequence Completed", 15), ovpn.text()[-3000:]
    _both_ways(setup)
    stop_process(setup.lab, ovpn.pid, signal.SIGKILL)
    again = _start_openvpn_client(setup, _client_lines(proto, lport=lport),
                                  name="ovpn-client2")
    assert again.wait_for("Initialization Sequence Completed", 20), (
        again.text()[-3000:], server.text()[-3000:])
    _both_ways(setup)
    assert server.count("key_method_complete") >= 2, server.text()[-3000:]


def _start_either(setup: Setup, which: str, lines: list[str]) -> TrivpnProcess | None:
    """The p2p server: trivpn's, or openvpn's to check the claim against (None)."""
    if which == "openvpn":
        start_openvpn(setup.server_ns, setup.workdir, "ovpn-server", lines)
        return None
    server = _start_server(setup, lines)
    assert server.wait_event("link_open", 10) is not None, server.text()[-3000:]
    return server


@pytest.mark.directive("tls-server", "remote")
@pytest.mark.parametrize("which", ["trivpn", "openvpn"])
def test_p2p_server_with_remote_ignores_other_addresses(setup: Setup, which: str) -> None:
    """'remote' on a p2p server names the peer: a peer from elsewhere gets no answer
    (OpenVPN socket.h, link_socket_verify_incoming_addr()); openvpn itself checked too."""
    server = _start_either(setup, which, _server_lines("udp", "remote 198.18.0.3"))
    ovpn = _start_openvpn_client(setup, _client_lines())
    assert not ovpn.wait_for("Initialization Sequence Completed", 4)
    if server is not None:
        assert server.wait_event("tls_handshake_started", 0.1) is None, server.text()[-3000:]
        assert server.wait_event("packet_dropped", 1, reason="peer_address_rejected"), \
            server.text()[-3000:]


@pytest.mark.directive("tls-server", "remote", "float")
@pytest.mark.parametrize("which", ["trivpn", "openvpn"])
def test_p2p_server_with_remote_and_float_accepts_a_peer_from_elsewhere(
        setup: Setup, which: str) -> None:
    _start_either(setup, which, _server_lines("udp", "remote 198.18.0.3", "float"))
    ovpn = _start_openvpn_client(setup, _client_lines())
    assert ovpn.wait_for("Initialization Sequence Completed", 15), ovpn.text()[-3000:]
    _both_ways(setup)


def _sample(path: Path, keys: dict[str, str]) -> list[str]:
    """A corpus sample with its key lines (and inline key blocks) replaced by ``keys``."""
    out: list[str] = []
    inline: str | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if inline is not None:
            if line == f"</{inline}>":
                inline = None
            continue
        match = re.fullmatch(r"<(ca|cert|key|tls-auth)>", line)
        if match:
            inline = match[1]
            continue
        word = line.split()[0] if line and not line.startswith("#") else ""
        if word in ("ca", "cert", "key", "tls-auth", "dh", "key-direction"):
            continue
        out.append(raw)
    return out + [f"{k} {v}" for k, v in keys.items()]


CORPUS = Path(__file__).resolve().parents[1] / "config" / "corpus"


@pytest.mark.directive("tls-server", "dev")
@pytest.mark.parametrize("peer", ["openvpn", "trivpn"])
def test_openvpn_loopback_sample_pair_runs_with_trivpn_as_its_server(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path, peer: str) -> None:
    """OpenVPN's loopback-server (the server corpus sample) run by trivpn against its
    loopback-client (the client corpus sample) on one namespace's loopback: only the keys
    are the test's own. Both ends reach the data channel; 'dev null' has no device."""
    write_pki(tmp_path)
    ns = lab.add("loop")
    server_lines = _sample(
        CORPUS / "servers" / "openvpn-sample-loopback-server" / "loopback-server",
        {"ca": "ca.crt", "cert": "server.crt", "key": "server.key", "dh": "none",
         "tls-auth": "static.key 0"})
    client_lines = _sample(
        CORPUS / "clients" / "openvpn-sample-loopback-client" / "loopback-client",
        {"ca": "ca.crt", "cert": "client.crt", "key": "client.key",
         "tls-auth": "static.key 1"})
    server = start_trivpn(ns, tmp_path, "loopback-server", server_lines)
    assert server.wait_event("link_open", 10) is not None, server.text()[-3000:]
    if peer == "openvpn":
        ovpn = start_openvpn(ns, tmp_path, "loopback-client", client_lines)
        assert ovpn.wait_for("Initialization Sequence Completed", 15), ovpn.text()[-3000:]
        found = NCP_RESULT.search(ovpn.text())
        assert found is not None and found[4] == "AES-256-GCM", ovpn.text()[-3000:]
    else:
        client = start_trivpn(ns, tmp_path, "loopback-client", client_lines)
        assert client.wait_event("key_method_complete", 15) is not None, client.text()[-3000:]
    keys = server.wait_event("key_method_complete", 10)
    assert keys is not None and keys["cipher"] == "AES-256-GCM", server.text()[-3000:]
    assert server.wait_event("tun_configured", 5) is not None, server.text()[-3000:]
