"""Renegotiation rules checked against the real ``openvpn`` 2.6, with the sans-IO core.

1. A peer that refuses to renegotiate: an openvpn client renegotiates (``reneg-sec``) against a
   core server that answers the first handshake and then drops every control packet of a new
   key. openvpn's timeline, read from its log, is compared with the timeline the sans-IO
   session follows in the same situation (tests/protocol/test_renegotiation.py).
2. The client certificate may not change: a core client renegotiates with another
   certificate against an openvpn server, which refuses, as the trivpn server does.
3. Repeated PUSH_REQUESTs get one reply from an openvpn server.
4. ``trivpn run`` acts on the same verdict: a client reconnects, a server drops the client.
"""

from __future__ import annotations

import dataclasses
import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.interop.corepeer import CorePeer, udp_socket_in
from tests.interop.openvpn import PkiFiles, start_openvpn, write_pki
from tests.interop.serverkit import server_lines
from tests.interop.trivpnproc import start_trivpn
from tests.netns import NetnsLab
from tests.protocol.sessionkit import Pair, client_config, events_of, server_config
from trivpn.pki.certs import certificate_pem, issue_cert
from trivpn.pki.keys import private_key_pem
from trivpn.protocol import events as ev
from trivpn.protocol.keymethod import options_string
from trivpn.protocol.packets import Opcode, split_byte0
from trivpn.protocol.peerinfo import build_peer_info
from trivpn.protocol.session import Session, SessionConfig
from trivpn.protocol.tls import PeerVerification
from trivpn.sessionsetup import CLIENT_IV_PROTO
from trivpn.tlscontext import build_context

pytestmark = pytest.mark.integration

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"
PUSH = ("route-gateway 198.18.9.1", "topology subnet", "ping 1", "ping-restart 60",
        "ifconfig 198.18.9.2 255.255.255.0")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) us=(\d+) (.*)$")
_DATA = (Opcode.DATA_V1, Opcode.DATA_V2)


def _log_times(text: str, needle: str) -> list[float]:
    """Unix times of the openvpn log lines containing ``needle``."""
    out = []
    for line in text.splitlines():
        m = _STAMP.match(line)
        if m and needle in m.group(3):
            out.append(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
                       + int(m.group(2)) / 1e6)
    return out


def _core_config(pki: PkiFiles, *, server: bool, cert: tuple[str, str] | None = None,
                 ) -> SessionConfig:
    cert_pem, key_pem = cert or pki.pem("server" if server else "client")
    ctx = build_context(server_side=server, ca_pem=pki.ca_pem, cert_pem=cert_pem,
                        key_pem=key_pem)
    return SessionConfig(
        is_server=server, tls_context=ctx, options_string=options_string(is_server=server),
        verification=PeerVerification(remote_cert_tls="client" if server else "server"),
        peer_info=None if server else build_peer_info(ciphers=("AES-256-GCM",),
                                                      iv_proto=CLIENT_IV_PROTO),
        data_ciphers=("AES-256-GCM",), reneg_seconds=None)


def _refuse_renegotiation(session: Session) -> None:
    receive = session.receive_datagram

    def filtered(data: bytes, now: float) -> None:
        opcode, key_id = split_byte0(data[0])
        if key_id != 0 and opcode not in _DATA:
            return
        receive(data, now)

    session.receive_datagram = filtered  # type: ignore[method-assign]


def _trivpn_timeline(hand: float, tran: float) -> tuple[float, float]:
    """(old key expired, session failed), seconds after the renegotiation started, for a
    trivpn client with reneg-sec 2 whose server refuses to renegotiate."""
    pair = Pair.create(client_config(reneg_seconds=2.0, hand_window=hand,
                                     transition_window=tran),
                       server_config(reneg_seconds=None))
    assert pair.run_until(pair.established, seconds=30)
    assert pair.server is not None
    _refuse_renegotiation(pair.server)
    assert pair.run_until(lambda: pair.client.failed, seconds=60)
    start = next(e.at for e in events_of(pair.client_events, ev.PhaseReached)
                 if e.key_id == 1 and e.phase == ev.PHASE_RESET_SENT)
    expired = events_of(pair.client_events, ev.KeyExpired)[0].at
    return expired - start, pair.now - start


@pytest.mark.usefixtures("openvpn_binary")
@pytest.mark.directive("reneg-sec", "hand-window", "tran-window")
@pytest.mark.parametrize(("hand", "tran"), [(3, 5), (5, 2)])
def test_openvpn_and_trivpn_drop_a_peer_that_refuses_to_renegotiate_on_the_same_timeline(
        lab: NetnsLab, tmp_path: Path, hand: int, tran: int):
    server_ns, client_ns = lab.add("srv"), lab.add("cli")
    lab.veth(server_ns, client_ns, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    pki = write_pki(tmp_path)

    def admit(session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.ClientAuthenticated):
            session.accept(time.monotonic(), PUSH, peer_id=0)
            _refuse_renegotiation(session)

    peer = CorePeer(_core_config(pki, server=True),
                    udp_socket_in(server_ns.name, (SERVER_IP, 1194)), on_event=admit)
    ovpn = start_openvpn(client_ns, tmp_path, "client", [
        "client", "dev tun", "proto udp", f"remote {SERVER_IP} 1194", "nobind",
        "ca ca.crt", "cert client.crt", "key client.key", "remote-cert-tls server",
        "verb 4", "connect-retry 1", "reneg-sec 2", f"hand-window {hand}",
        f"tran-window {tran}"])
    restart = "SIGUSR1[soft,tls-error] received, process restarting"
    assert peer.run_until(lambda: restart in ovpn.text(), timeout=max(hand, tran) + hand + 10), \
        ovpn.text()[-3000:]
    log = ovpn.text()
    # "sec=2/2" on a quiet machine; a loaded one may log the reset a second later ("sec=3/2")
    soft_reset = _log_times(log, "TLS: soft reset sec=")[0]
    failures = _log_times(log, f"TLS key negotiation failed to occur within {hand} seconds")
    (killed,) = _log_times(log, "killed expiring key")
    (restarted,) = _log_times(log, restart)
    # openvpn: the new key fails hand-window after the soft reset, the old key dies
    # tran-window after it, and the first handshake failure after that restarts the session
    assert failures[0] - soft_reset == pytest.approx(hand, abs=1.1)
    assert killed - soft_reset == pytest.approx(tran, abs=1.1)
    assert restarted == pytest.approx(next(t for t in failures if t >= killed - 0.5), abs=0.2)
    ovpn_restart = restarted - soft_reset
    # openvpn runs its timers about once a second, so each hand-window it waits may end up to
    # a second late: the restart after n windows is within n seconds (plus scheduling slack)
    windows = -(-tran // hand)
    slack = 1.1 * windows
    assert ovpn_restart == pytest.approx(windows * hand, abs=slack)
    # trivpn, same settings, same situation
    expired, failed = _trivpn_timeline(hand, tran)
    assert expired == pytest.approx(killed - soft_reset, abs=1.1)
    assert failed == windows * hand  # sans-IO: exact, no timer granularity
    assert failed == pytest.approx(ovpn_restart, abs=slack)


@pytest.mark.usefixtures("openvpn_binary")
def test_openvpn_server_refuses_a_client_whose_certificate_name_changes_on_renegotiation(
        lab: NetnsLab, tmp_path: Path):
    server_ns, client_ns = lab.add("srv"), lab.add("cli")
    lab.veth(server_ns, client_ns, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    pki = write_pki(tmp_path)
    other = issue_cert(pki.ca, "client", "client2")
    ovpn = start_openvpn(server_ns, tmp_path, "server", [
        "mode server", "tls-server", "dev tun", "proto udp", f"local {SERVER_IP}", "port 1194",
        "ca ca.crt", "cert server.crt", "key server.key", "dh none", "topology subnet",
        "server 198.18.8.0 255.255.255.0", "keepalive 1 10", "data-ciphers AES-256-GCM",
        "remote-cert-tls client", "verb 4"])
    assert ovpn.wait_for("Initialization Sequence Completed"), ovpn.text()
    config = _core_config(pki, server=False)
    peer = CorePeer(config, udp_socket_in(client_ns.name, (CLIENT_IP, 0)),
                    remote=(SERVER_IP, 1194))
    peer.start_client()
    assert peer.run_until(lambda: peer.saw(ev.DataChannelReady), timeout=20), ovpn.text()
    session = peer.session
    assert session is not None
    other_config = _core_config(pki, server=False, cert=(
        certificate_pem(other.cert).decode(), private_key_pem(other.key).decode()))
    session.config = dataclasses.replace(session.config,
                                         tls_context=other_config.tls_context)
    session.renegotiate(time.monotonic())
    assert peer.run_until(lambda: peer.saw(ev.AuthFailed), timeout=15), \
        (peer.events[-5:], ovpn.text()[-3000:])
    # the same words the trivpn server reports (test_renegotiation.py)
    assert ("TLS Auth Error: TLS object CN attempted to change from 'client1' to 'client2' "
            "-- tunnel disabled") in ovpn.text()


@pytest.mark.usefixtures("openvpn_binary")
def test_openvpn_server_answers_repeated_push_requests_once(lab: NetnsLab, tmp_path: Path):
    """What the trivpn server's PUSH_REQUEST hold-off copies (push.c: a request within 30 s
    of the reply is ignored): fifty more requests right after the reply get no new reply.
    The trivpn side: tests/protocol/test_session_limits.py."""
    server_ns, client_ns = lab.add("srv"), lab.add("cli")
    lab.veth(server_ns, client_ns, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    pki = write_pki(tmp_path)
    ovpn = start_openvpn(server_ns, tmp_path, "server", [
        "mode server", "tls-server", "dev tun", "proto udp", f"local {SERVER_IP}", "port 1194",
        "ca ca.crt", "cert server.crt", "key server.key", "dh none", "topology subnet",
        "server 198.18.8.0 255.255.255.0", "keepalive 1 10", "data-ciphers AES-256-GCM",
        "remote-cert-tls client", "verb 4"])
    assert ovpn.wait_for("Initialization Sequence Completed"), ovpn.text()
    peer = CorePeer(_core_config(pki, server=False), udp_socket_in(client_ns.name, (CLIENT_IP, 0)),
                    remote=(SERVER_IP, 1194))
    peer.start_client()
    assert peer.run_until(lambda: peer.saw(ev.DataChannelReady), timeout=20), ovpn.text()
    session = peer.session
    assert session is not None
    for _ in range(50):
        session.send_control_message("PUSH_REQUEST", time.monotonic())
        peer.run_until(lambda: False, timeout=0.02)
    received = "PUSH: Received control message: 'PUSH_REQUEST'"
    assert peer.run_until(lambda: ovpn.text().count(received) >= 51, timeout=10), \
        ovpn.text()[-3000:]
    peer.run_until(lambda: False, timeout=1.0)
    assert ovpn.text().count("SENT CONTROL [client1]: 'PUSH_REPLY") == 1



@pytest.mark.directive("reneg-sec", "hand-window", "tran-window")
def test_trivpn_client_whose_server_refuses_to_renegotiate_reconnects_after_tran_window(
        lab: NetnsLab, tmp_path: Path):
    """The runtime acts on the session's verdict: ``trivpn run`` as a client, against a
    server (the core) that never renegotiates, logs key_expired at the end of tran-window and
    reconnects at the next handshake failure, as openvpn does (test above)."""
    server_ns, client_ns = lab.add("srv"), lab.add("cli")
    lab.veth(server_ns, client_ns, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    pki = write_pki(tmp_path)

    def admit(session: Session, event: ev.Event) -> None:
        if isinstance(event, ev.ClientAuthenticated):
            session.accept(time.monotonic(), PUSH, peer_id=0)
            _refuse_renegotiation(session)

    peer = CorePeer(_core_config(pki, server=True),
                    udp_socket_in(server_ns.name, (SERVER_IP, 1194)), on_event=admit)
    client = start_trivpn(client_ns, tmp_path, "client", [
        "client", "dev tun", "proto udp", f"remote {SERVER_IP} 1194", "nobind", "ca ca.crt",
        "cert client.crt", "key client.key", "remote-cert-tls server", "connect-retry 1",
        "verb 3", "reneg-sec 2", "hand-window 3", "tran-window 5"])

    def reconnected() -> bool:
        return any(e.get("event") == "reconnecting" for e in client.events())

    assert peer.run_until(reconnected, timeout=25), client.text()[-3000:]
    names = [e.get("event") for e in client.events()]
    assert "key_expired" in names, names
    assert names.index("key_expired") < names.index("reconnecting")
    reconnect = next(e for e in client.events() if e.get("event") == "reconnecting")
    assert reconnect.get("reason") == "handshake_failed", reconnect


@pytest.mark.directive("reneg-sec", "hand-window", "tran-window")
def test_trivpn_server_drops_a_client_that_refuses_to_renegotiate_after_tran_window(
        lab: NetnsLab, tmp_path: Path):
    server_ns, client_ns = lab.add("srv"), lab.add("cli")
    lab.veth(server_ns, client_ns, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    pki = write_pki(tmp_path)
    server = start_trivpn(server_ns, tmp_path, "server", server_lines(
        link_ip=SERVER_IP, extra=["reneg-sec 2", "hand-window 3", "tran-window 5"]))
    assert server.wait_event("link_open", timeout=10), server.text()
    peer = CorePeer(_core_config(pki, server=False), udp_socket_in(client_ns.name, (CLIENT_IP, 0)),
                    remote=(SERVER_IP, 1194))
    peer.start_client()
    assert peer.session is not None
    _refuse_renegotiation(peer.session)

    def disconnected() -> bool:
        return any(e.get("event") == "peer_disconnected" for e in server.events())

    assert peer.run_until(disconnected, timeout=25), server.text()[-3000:]
    names = [e.get("event") for e in server.events()]
    assert "peer_connected" in names and "key_expired" in names, names
    gone = next(e for e in server.events() if e.get("event") == "peer_disconnected")
    assert gone.get("reason") == "handshake_failed", gone
    expired = next(e for e in server.events() if e.get("event") == "key_expired")
    assert expired.get("cn") == "client1"
