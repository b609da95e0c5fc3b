"""Runtime events: typed values on one bus, logged under the names and fields of
docs/events.md, and observed by the operator tools (management state, metrics counters)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import trio
import trio.testing

from tests.runtime.memorykit import CLIENT_TUN_IP, SERVER, Lab
from trivpn.logging import configure_logging, get_logger
from trivpn.runtime import events as rt
from trivpn.runtime.operator import ClientView, OperatorTools


def logged(event: rt.RuntimeEvent) -> dict[str, Any]:
    """The JSON log line the bus writes for ``event``."""
    stream = io.StringIO()
    configure_logging(fmt="json", stream=stream)
    rt.EventBus(get_logger()).publish(event)
    line = json.loads(stream.getvalue())
    del line["timestamp"]
    return dict(line)


def keys(event: rt.RuntimeEvent) -> list[str]:
    """The field names of ``event``'s log line, in order."""
    return [k for k in logged(event) if k not in ("event", "level")]


def test_client_events_log_the_documented_fields_in_order():
    assert keys(rt.LinkOpened("udp", "198.18.0.2:5000", "198.18.0.1:1194")) == [
        "proto", "local", "peer"]
    assert logged(rt.TlsEstablished(0, "server", "TLSv1.3")) == {
        "event": "tls_handshake_complete", "key_id": 0, "tls": "TLSv1.3", "peer": "server",
        "level": "info"}
    assert logged(rt.KeysReady(0, "AES-256-GCM", 3, key_derivation="tls-ekm")) == {
        "event": "key_method_complete", "key_id": 0, "cipher": "AES-256-GCM", "peer_id": 3,
        "key_derivation": "tls-ekm", "level": "info"}
    assert logged(rt.HandshakeFailed(1, "timeout", "reset_sent", "no answer")) == {
        "event": "handshake_failed", "key_id": 1, "cause": "timeout", "phase": "reset_sent",
        "detail": "no answer", "level": "warning"}
    assert keys(rt.TunConfigured(("198.18.8.2/24",), {"device": "tun0"}, ifindex=4)) == [
        "ifindex", "reused", "reconfigured", "device"]
    assert logged(rt.SignalReceived("SIGTERM", "exit")) == {
        "event": "signal_received", "signal": "SIGTERM", "action": "exit", "level": "info"}


def test_server_events_name_the_peer_and_its_common_name():
    assert keys(rt.LinkOpened("udp", "0.0.0.0:1194")) == ["proto", "local"]
    assert keys(rt.HandshakeStarted(0, "198.18.0.2:5000")) == ["peer", "key_id"]
    assert keys(rt.Renegotiated(2, "AES-256-GCM", 0, "198.18.0.2:5000", "c1")) == [
        "peer", "cn", "key_id"]
    assert logged(rt.PeerConnected("198.18.0.2:5000", "c1", "198.18.8.2", "AES-256-GCM", 0,
                                   "udp")) == {
        "event": "peer_connected", "peer": "198.18.0.2:5000", "cn": "c1",
        "vpn_ip": "198.18.8.2", "cipher": "AES-256-GCM", "peer_id": 0, "proto": "udp",
        "level": "info"}
    assert logged(rt.SignalReceived("SIGINT")) == {
        "event": "signal_received", "signal": "SIGINT", "level": "info"}


def test_an_observer_sees_events_in_order_and_can_unsubscribe():
    bus = rt.EventBus()
    seen: list[str] = []
    stop = bus.subscribe(lambda event: seen.append(event.name))
    bus.publish(rt.HandshakeStarted(0))
    stop()
    bus.publish(rt.HandshakeStarted(1))
    assert seen == ["tls_handshake_started"]


async def test_a_client_in_memory_drives_the_management_state_and_metrics(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab = Lab.create(tmp_path, "persist-tun\n")
    tools = OperatorTools()
    tools.attach(lab.client.events)
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        await lab.wait_for(lambda: tools.state.state.name == "CONNECTED", 5)
        first = tools.state.states[-1]
        metrics = ClientView(lab.client, tools.state).metrics(0.0)
        lab.peer.silent = True
        await lab.wait_for(lambda: tools.state.state.name == "RECONNECTING", 120)
        lab.peer.silent = False
        await lab.wait_for(lambda: tools.state.counts.handshakes == 2, 60)
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    names = [s.name for s in tools.state.states]
    assert names[:6] == ["CONNECTING", "WAIT", "AUTH", "GET_CONFIG", "ASSIGN_IP", "CONNECTED"]
    assert first.line().split(",")[1:] == [
        "CONNECTED", "SUCCESS", CLIENT_TUN_IP, SERVER[0], str(SERVER[1]),
        *first.line().split(",")[6:]]
    assert (metrics.connected, metrics.handshakes) == (1, 1)
    assert tools.state.counts.reconnects == 1
    # the bus logged each event on the connection's logger: its context stays on the line
    link = next(e for e in lab.log.events() if e["event"] == "link_open")
    assert link["remote"] == f"{SERVER[0]}:{SERVER[1]}" and link["peer"] == link["remote"]


def test_ping_restart_is_a_warning_on_a_client_and_info_on_a_server():
    assert logged(rt.PingRestart(60.0)) == {
        "event": "ping_restart", "silent_for": 60.0, "level": "warning"}
    assert logged(rt.PingRestart(60.0, "198.18.0.2:5000", "c1")) == {
        "event": "ping_restart", "peer": "198.18.0.2:5000", "cn": "c1", "silent_for": 60.0,
        "level": "info"}


def test_peer_disconnected_adds_what_its_reason_brings():
    assert keys(rt.PeerDisconnected("duplicate_cn", "198.18.0.2:5000", "c1", "198.18.8.2", 0,
                                    True, {"replaced_by": "198.18.0.3:5000"})) == [
        "reason", "peer", "cn", "vpn_ip", "peer_id", "was_connected", "replaced_by"]


def test_dropped_packets_are_published_as_one_aggregate_per_reason_and_interval():
    from trivpn.logging import DropAggregator

    drops = DropAggregator(interval=10.0)
    for _ in range(1000):
        drops.add("replay")
    drops.add("bad_hmac", 3)
    bus = rt.EventBus()
    seen: list[rt.RuntimeEvent] = []
    bus.subscribe(seen.append)
    rt.publish_drops(bus, drops, 0.0)
    rt.publish_drops(bus, drops, 1.0)  # nothing new: nothing published
    drops.add("replay")
    rt.publish_drops(bus, drops, 20.0)
    assert seen == [rt.PacketsDropped("bad_hmac", 3, 3), rt.PacketsDropped("replay", 1000, 1000),
                    rt.PacketsDropped("replay", 1, 1001)]
    assert logged(seen[0]) == {"event": "packet_dropped", "reason": "bad_hmac", "count": 3,
                               "total": 3, "level": "warning"}


def test_certificate_and_key_events_keep_their_log_lines():
    assert logged(rt.CertificateRejected("crl_verify", 4660, "c1", "revoked")) == {
        "event": "peer_cert_rejected", "check": "crl_verify", "serial": "4660", "cn": "c1",
        "detail": "revoked", "level": "warning"}
    assert keys(rt.CertificateRejected("crl_verify", 1, "c1", "", "198.18.0.2:5000")) == [
        "peer", "check", "serial", "cn", "detail"]
    assert logged(rt.KeyExpired(2)) == {"event": "key_expired", "key_id": 2,
                                        "level": "warning"}
    assert keys(rt.KeyExpired(2, "198.18.0.2:5000", "c1")) == ["peer", "cn", "key_id"]
