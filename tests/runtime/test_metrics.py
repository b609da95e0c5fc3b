"""Prometheus exposition (format 0.0.4) and the counters derived from log events."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
import trio

from trivpn.config import load_config
from trivpn.logging import get_logger
from trivpn.pki.certs import certificate_pem, create_ca, issue_cert
from trivpn.pki.crl import build_crl, crl_pem
from trivpn.pki.keys import private_key_pem
from trivpn.runtime.metrics import (
    MetricsServer,
    MetricsSnapshot,
    PeerTraffic,
    parse_listen,
    render_metrics,
)
from trivpn.runtime.operator import certificate_expiry, crl_check_next_update
from trivpn.runtime.stats import EventTap
from trivpn.sessionsetup import crl_check

SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (\S+)$')

FAMILIES = {
    "trivpn_link_bytes_total": "counter", "trivpn_link_packets_total": "counter",
    "trivpn_peer_link_bytes_total": "counter", "trivpn_peer_link_packets_total": "counter",
    "trivpn_connected_clients": "gauge", "trivpn_handshakes_total": "counter",
    "trivpn_handshake_failures_total": "counter", "trivpn_packets_dropped_total": "counter",
    "trivpn_reconnects_total": "counter", "trivpn_key_renegotiations_total": "counter",
    "process_start_time_seconds": "gauge",
}


def snapshot() -> MetricsSnapshot:
    return MetricsSnapshot(
        role="server", start_time=1_700_000_000.5, bytes_in=100, bytes_out=200,
        packets_in=3, packets_out=4, connected=1, handshakes=2, renegotiations=1,
        reconnects=0, handshake_failures={"tls_error": 1}, drops={"replay": 5},
        peers=(PeerTraffic('cl"ient\\1', 0, 60, 70, 1, 2),))


def parse(text: str) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
    """(HELP by family, TYPE by family, value by 'name{labels}') of an exposition text."""
    helps, types, samples = {}, {}, {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, text_ = line[7:].split(" ", 1)
            helps[name] = text_
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            types[name] = kind
        else:
            match = SAMPLE.match(line)
            assert match, line
            samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return helps, types, samples


def test_every_family_has_help_and_type():
    helps, types, _ = parse(render_metrics(snapshot()))
    for name, kind in FAMILIES.items():
        assert types[name] == kind
        assert helps[name]


def test_samples_carry_direction_cn_cause_and_reason_labels():
    _, _, samples = parse(render_metrics(snapshot()))
    assert samples['trivpn_link_bytes_total{direction="in"}'] == 100
    assert samples['trivpn_link_packets_total{direction="out"}'] == 4
    assert samples['trivpn_peer_link_bytes_total{cn="cl\\"ient\\\\1",peer_id="0",'
                   'direction="out"}'] == 70
    assert samples['trivpn_handshake_failures_total{cause="tls_error"}'] == 1
    assert samples['trivpn_packets_dropped_total{reason="replay"}'] == 5
    assert samples["trivpn_connected_clients"] == 1
    assert samples["process_start_time_seconds"] == 1_700_000_000.5


def test_client_exposes_tunnel_up_instead_of_connected_clients():
    s = snapshot()
    client = MetricsSnapshot(**{**{f: getattr(s, f) for f in s.__slots__}, "role": "client"})
    _, types, samples = parse(render_metrics(client))
    assert types["trivpn_tunnel_up"] == "gauge" and samples["trivpn_tunnel_up"] == 1
    assert "trivpn_connected_clients" not in types


@pytest.mark.parametrize(("text", "expected"), [("127.0.0.1:9100", ("127.0.0.1", 9100)),
                                                ("[::1]:9100", ("::1", 9100))])
def test_parse_listen(text: str, expected: tuple[str, int]):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9100", "127.0.0.1:", "127.0.0.1:70000", ":9100"])
def test_parse_listen_rejects(text: str):
    with pytest.raises(ValueError):
        parse_listen(text)


async def http_get(port: int, path: str) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


async def test_http_server_serves_metrics_and_404s_elsewhere(nursery: trio.Nursery):
    server = MetricsServer("127.0.0.1", 0, snapshot, get_logger())
    port = await nursery.start(server.serve)
    response = await http_get(port, "/metrics")
    head, body = response.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8" in head
    assert body.decode() == render_metrics(snapshot())
    assert (await http_get(port, "/")).startswith(b"HTTP/1.1 404")


def feed(tap: EventTap, event: str, level: str = "info", **fields: object) -> None:
    tap(None, level, {"event": event, "level": level, **fields})


def test_event_tap_counts_handshakes_renegotiations_failures_and_reconnects():
    tap = EventTap()
    feed(tap, "key_method_complete", cn="client1")
    feed(tap, "peer_connected", cn="client1")
    feed(tap, "key_method_complete", cn="client1")
    feed(tap, "renegotiated", cn="client1")
    feed(tap, "handshake_failed", "warning", cause="tls_error")
    feed(tap, "peer_connected", cn="client1")  # the same CN again: a reconnect
    c = tap.counts
    assert (c.handshakes, c.renegotiations, c.reconnects, c.connects) == (2, 1, 1, 2)
    assert c.handshake_failures == {"tls_error": 1}


def test_event_tap_hides_events_below_the_output_level_but_still_counts_them():
    import structlog

    tap = EventTap(output_level=logging.ERROR)
    with pytest.raises(structlog.DropEvent):
        feed(tap, "renegotiated")
    assert tap.counts.renegotiations == 1


def test_event_tap_follows_the_client_state():
    tap = EventTap()
    feed(tap, "link_open", proto="udp", local="198.18.0.2:5000", peer="198.18.0.1:1194")
    assert tap.state.name == "WAIT"
    feed(tap, "tls_handshake_started", key_id=0)
    assert tap.state.name == "AUTH"
    feed(tap, "push_reply_received")
    feed(tap, "tun_configured", ifindex=3, addresses=["198.18.8.2/24"])
    assert tap.state.line().split(",")[1:] == [
        "CONNECTED", "SUCCESS", "198.18.8.2", "198.18.0.1", "1194", "198.18.0.2", "5000"]


def test_event_tap_keeps_connected_through_a_renegotiation():
    tap = EventTap()
    feed(tap, "link_open", proto="udp", local="198.18.0.2:5000", peer="198.18.0.1:1194")
    feed(tap, "tun_configured", ifindex=3, addresses=["198.18.8.2/24"])
    feed(tap, "tls_handshake_started", key_id=1)
    feed(tap, "tls_handshake_complete", key_id=1, peer="server")
    feed(tap, "key_method_complete", key_id=1)
    assert tap.state.name == "CONNECTED"


async def test_a_failing_snapshot_is_a_500_and_the_endpoint_keeps_serving(
        nursery: trio.Nursery):
    calls = []

    def flaky() -> MetricsSnapshot:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a bug in a view")
        return snapshot()

    server = MetricsServer("127.0.0.1", 0, flaky, get_logger())
    port = await nursery.start(server.serve)
    assert (await http_get(port, "/metrics")).startswith(b"HTTP/1.1 500")
    assert (await http_get(port, "/metrics")).startswith(b"HTTP/1.1 200 OK")
    assert server.errors.totals["metrics_request_failed"] == 1


# --- certificate and CRL expiry ----------------------------------------------------------------

def test_expiry_gauges_are_unix_times_per_certificate_and_for_the_crl():
    s = snapshot()
    fields = {f: getattr(s, f) for f in s.__slots__}
    text = render_metrics(MetricsSnapshot(**{**fields, "cert_expiry": {"cert": 1.8e9,
                                                                         "ca": 2.0e9},
                                             "crl_next_update": 1.75e9}))
    helps, types, samples = parse(text)
    assert helps["trivpn_crl_next_update_timestamp_seconds"]
    assert types["trivpn_certificate_expiry_timestamp_seconds"] == "gauge"
    assert types["trivpn_crl_next_update_timestamp_seconds"] == "gauge"
    assert samples['trivpn_certificate_expiry_timestamp_seconds{certificate="cert"}'] == 1.8e9
    assert samples['trivpn_certificate_expiry_timestamp_seconds{certificate="ca"}'] == 2.0e9
    assert samples["trivpn_crl_next_update_timestamp_seconds"] == 1.75e9
    # without crl-verify there is no CRL gauge
    assert "trivpn_crl_next_update_timestamp_seconds" not in render_metrics(s)


def test_expiry_is_read_from_the_cert_and_the_earliest_ca_and_the_current_crl(tmp_path):
    now = datetime.now(UTC).replace(microsecond=0)
    ca = create_ca("first", days=3000)
    other = create_ca("second", days=1000)
    leaf = issue_cert(ca, "server", "server", days=400)
    (tmp_path / "ca.crt").write_bytes(certificate_pem(ca.cert) + certificate_pem(other.cert))
    (tmp_path / "server.crt").write_bytes(certificate_pem(leaf.cert))
    (tmp_path / "server.key").write_bytes(private_key_pem(leaf.key))
    crl_path = tmp_path / "crl.pem"
    crl_path.write_bytes(crl_pem(build_crl(ca, [], now + timedelta(days=9), now=now)))
    conf = tmp_path / "server.conf"
    conf.write_text("mode server\ntls-server\ndev tun\nca ca.crt\ncert server.crt\n"
                    "key server.key\ndh none\ncrl-verify crl.pem\n"
                    "server 198.18.8.0 255.255.255.0\n")
    options = load_config(conf)
    assert certificate_expiry(options) == {"cert": leaf.cert.not_valid_after_utc.timestamp(),
                                           "ca": other.cert.not_valid_after_utc.timestamp()}
    check = crl_check(options, (tmp_path / "ca.crt").read_text())
    assert crl_check_next_update(check) == (now + timedelta(days=9)).timestamp()
    crl_path.write_bytes(crl_pem(build_crl(ca, [5], now + timedelta(days=99), now=now)))
    assert crl_check_next_update(check) == (now + timedelta(days=99)).timestamp()
