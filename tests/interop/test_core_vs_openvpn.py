"""The sans-IO core against a real ``openvpn`` 2.6 process, before any runtime exists.

Two namespaces joined by a veth (198.18.0.1 ↔ 198.18.0.2). openvpn runs in one with a real TUN;
the core runs in the test process with a UDP socket created inside the other namespace. The
proof that both directions of the data channel work: an ICMP echo request encrypted by the core
crosses openvpn into its TUN, the kernel answers, and the core decrypts the echo reply.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from tests.interop.corepeer import CorePeer, udp_socket_in
from tests.interop.openvpn import STATIC_KEY, PkiFiles, start_openvpn, wrap_lines, write_pki
from tests.netns import NetnsLab
from tests.runtime.packets import (
    ECHO_REPLY,
    ECHO_REQUEST,
    ICMP,
    build_icmp_echo,
    build_ipv4,
    parse_icmp_echo,
    parse_ipv4,
)
from trivpn.protocol import events as ev
from trivpn.protocol.keymethod import options_string
from trivpn.protocol.peerinfo import build_peer_info
from trivpn.protocol.session import Session, SessionConfig
from trivpn.protocol.tls import PeerVerification
from trivpn.protocol.wrap import ControlWrap, NoWrap, TlsAuth, TlsCrypt
from trivpn.sessionsetup import CLIENT_IV_PROTO
from trivpn.tlscontext import build_context

pytestmark = pytest.mark.integration

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"




def _wrap(kind: str, *, server: bool) -> ControlWrap:
    if kind == "tls-auth":
        return TlsAuth(STATIC_KEY, 0 if server else 1)
    if kind == "tls-crypt":
        return TlsCrypt(STATIC_KEY, is_server=server)
    return NoWrap()


def _core_config(pki: PkiFiles, *, server: bool, wrap: str,
                 ciphers: tuple[str, ...]) -> SessionConfig:
    cert, key = pki.pem("server" if server else "client")
    ctx = build_context(server_side=server, ca_pem=pki.ca_pem, cert_pem=cert, key_pem=key)
    opts = options_string(is_server=server, tls_auth=wrap == "tls-auth",
                          keydir=(0 if server else 1) if wrap == "tls-auth" else None)
    return SessionConfig(
        is_server=server, tls_context=ctx, options_string=opts,
        verification=PeerVerification(remote_cert_tls="client" if server else "server"),
        wrap=_wrap(wrap, server=server),
        peer_info=None if server else build_peer_info(ciphers=ciphers, iv_proto=CLIENT_IV_PROTO),
        data_ciphers=ciphers, ping_interval=1.0 if server else None)


def _assert_openvpn_content(log: str, cipher: str) -> None:
    """openvpn agreed on the cipher and found nothing inconsistent in our options string."""
    assert f"Outgoing Data Channel: Cipher '{cipher}' initialized" in log
    assert "used inconsistently" not in log
    assert "missing in remote config" not in log


def _echo(src: str, dst: str, seq: int) -> bytes:
    return build_ipv4(src, dst, ICMP, build_icmp_echo(ECHO_REQUEST, 0x7472, seq, b"trivpn" * 8))


def _is_echo_reply(packet: bytes, src: str, seq: int) -> bool:
    ip = parse_ipv4(packet)
    if ip is None or ip.proto != ICMP or ip.src != src:
        return False
    echo = parse_icmp_echo(ip.payload)
    return echo is not None and echo.kind == ECHO_REPLY and echo.seq == seq


@pytest.mark.usefixtures("openvpn_binary")
@pytest.mark.parametrize(("wrap", "cipher"), [
    ("none", "AES-256-GCM"),
    ("tls-auth", "AES-256-GCM"),
    ("tls-crypt", "CHACHA20-POLY1305"),
    ("tls-crypt", "AES-128-GCM"),
])
def test_core_client_completes_a_handshake_with_openvpn_server_and_data_flows_both_ways(
        lab: NetnsLab, tmp_path: Path, wrap: str, cipher: str):
    server_ns, client_ns = lab.add("srv"), lab.add("cli")
    lab.veth(server_ns, client_ns, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    pki = write_pki(tmp_path)
    ovpn = start_openvpn(server_ns, tmp_path, "server", [
        "mode server", "tls-server", "dev tun", "proto udp", f"local {SERVER_IP}", "port 1194",
        "ca ca.crt", "cert server.crt", "key server.key", "dh none", "topology subnet",
        "server 198.18.8.0 255.255.255.0", "keepalive 1 10", f"data-ciphers {cipher}",
        "remote-cert-tls client", "verb 4", *wrap_lines(wrap, "server")])
    assert ovpn.wait_for("Initialization Sequence Completed"), ovpn.text()

    peer = CorePeer(_core_config(pki, server=False, wrap=wrap,
                                 ciphers=("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305")),
                    udp_socket_in(client_ns.name, (CLIENT_IP, 0)), remote=(SERVER_IP, 1194))
    peer.start_client()
    assert peer.run_until(lambda: peer.saw(ev.DataChannelReady), timeout=20), \
        (peer.events, ovpn.text()[-3000:])
    session = peer.session
    assert isinstance(session, Session)
    assert session.cipher == cipher
    pushed = session.pushed
    assert pushed is not None and pushed.ifconfig is not None
    my_ip = str(pushed.ifconfig.local)

    peer.send_tun(_echo(my_ip, "198.18.8.1", 1))
    assert peer.run_until(lambda: any(_is_echo_reply(p, "198.18.8.1", 1) for p in peer.tun),
                          timeout=10), (session.drops, ovpn.text()[-3000:])
    assert not session.drops
    _assert_openvpn_content(ovpn.text(), cipher)


@pytest.mark.usefixtures("openvpn_binary")
@pytest.mark.parametrize(("wrap", "cipher"), [
    ("none", "AES-256-GCM"),
    ("tls-auth", "CHACHA20-POLY1305"),
    ("tls-crypt", "AES-256-GCM"),
])
def test_openvpn_client_completes_a_handshake_with_core_server_and_data_flows_both_ways(
        lab: NetnsLab, tmp_path: Path, wrap: str, cipher: str):
    server_ns, client_ns = lab.add("srv"), lab.add("cli")
    lab.veth(server_ns, client_ns, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    pki = write_pki(tmp_path)
    push = ("route-gateway 198.18.9.1", "topology subnet", "ping 1", "ping-restart 10",
            "ifconfig 198.18.9.2 255.255.255.0")

    def admit(session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.ClientAuthenticated):
            assert event.peer.common_name == "client1"
            session.accept(time.monotonic(), push, peer_id=0)

    peer = CorePeer(_core_config(pki, server=True, wrap=wrap, ciphers=(cipher,)),
                    udp_socket_in(server_ns.name, (SERVER_IP, 1194)), on_event=admit)
    ovpn = start_openvpn(client_ns, tmp_path, "client", [
        "client", "dev tun", "proto udp", f"remote {SERVER_IP} 1194", "nobind",
        "ca ca.crt", "cert client.crt", "key client.key", "remote-cert-tls server",
        "verb 4", "connect-retry 1", *wrap_lines(wrap, "client")])
    assert peer.run_until(lambda: "Initialization Sequence Completed" in ovpn.text(),
                          timeout=20), (peer.events, ovpn.text()[-3000:])
    session = peer.session
    assert isinstance(session, Session)
    assert session.cipher == cipher
    _assert_openvpn_content(ovpn.text(), cipher)

    peer.send_tun(_echo("198.18.9.1", "198.18.9.2", 7))
    assert peer.run_until(lambda: any(_is_echo_reply(p, "198.18.9.2", 7) for p in peer.tun),
                          timeout=10), (session.drops, ovpn.text()[-3000:])
    # openvpn repeats its PUSH_REQUEST when our reply is slow to arrive (a loaded machine);
    # the server counts the repeat as OpenVPN's ALREADY_REPLIED. Every other drop is a bug.
    assert not {k: n for k, n in session.drops.items() if k != "push_request_repeated"}


def test_socket_in_namespace_is_not_reachable_from_the_host(lab: NetnsLab):
    """The harness's sockets live in the test namespace, not the host's (network rule)."""
    ns = lab.add("iso")
    sock = udp_socket_in(ns.name, ("127.0.0.1", 0))
    port = sock.getsockname()[1]
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.sendto(b"x", ("127.0.0.1", port))
    probe.close()
    with pytest.raises(BlockingIOError):
        sock.recv(10)
    sock.close()
