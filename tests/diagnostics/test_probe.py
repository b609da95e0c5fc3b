"""The network probes' pure parts: reply classification, verdicts from evidence, failure causes,
MTU arithmetic and the ICMP packets — no sockets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.interop.openvpn import STATIC_KEY
from trivpn.config import Options, parse_config
from trivpn.diagnostics import checks_mtu, checks_port
from trivpn.diagnostics.checks_tls import classify_failure, judge_keys, key_variants
from trivpn.diagnostics.checks_tunnel import gateway_of
from trivpn.diagnostics.model import CheckResult
from trivpn.diagnostics.probe import (
    Exchange,
    Target,
    Timeline,
    classify_reply,
    client_reset,
    resolve_targets,
)
from trivpn.diagnostics.probe_icmp import checksum, echo_request, parse_echo_reply
from trivpn.protocol import events as ev
from trivpn.protocol.packets import ControlPacket, Opcode, decode_control, encode_control
from trivpn.protocol.push import PushAccumulator
from trivpn.protocol.statickey import StaticKey, format_static_key
from trivpn.protocol.wrap import ControlWrap, NoWrap, TlsAuth, TlsCrypt

OUR_SID = bytes.fromhex("0102030405060708")
SERVER_SID = bytes.fromhex("a1a2a3a4a5a6a7a8")
OTHER_KEY = StaticKey(bytes((i * 13 + 1) % 256 for i in range(256)))
TARGET = Target("vpn.example", "198.18.0.1", 1194, "udp", 4)


def _options(tmp_path: Path, extra: str = "") -> Options:
    (tmp_path / "ta.key").write_text(format_static_key(STATIC_KEY))
    text = ("client\ndev tun\nproto udp\nremote 198.18.0.1 1194\nca ca.crt\ncert c.crt\n"
            "key c.key\n" + extra)
    return parse_config(text, tmp_path / "client.conf")


def _server_reset(wrap: ControlWrap, acked_sid: bytes = OUR_SID) -> bytes:
    plain = encode_control(ControlPacket(Opcode.CONTROL_HARD_RESET_SERVER_V2, 0, SERVER_SID,
                                         acks=(0,), remote_session_id=acked_sid, message_id=0))
    return wrap.wrap(plain, 1, 1_700_000_000)


@pytest.mark.parametrize(("reply", "ours", "kind"), [
    (_server_reset(TlsCrypt(STATIC_KEY, is_server=True)), TlsCrypt(STATIC_KEY, is_server=False),
     "openvpn_reset"),
    (_server_reset(TlsAuth(STATIC_KEY, 0)), TlsAuth(STATIC_KEY, 1), "openvpn_reset"),
    (_server_reset(NoWrap()), NoWrap(), "openvpn_reset"),
    (_server_reset(TlsCrypt(OTHER_KEY, is_server=True)), TlsCrypt(STATIC_KEY, is_server=False),
     "hmac_mismatch"),
    (_server_reset(TlsAuth(STATIC_KEY, 1)), TlsAuth(STATIC_KEY, 1), "hmac_mismatch"),
    (_server_reset(NoWrap()), TlsAuth(STATIC_KEY, 1), "unwrapped_reset"),
    (_server_reset(NoWrap(), acked_sid=SERVER_SID), NoWrap(), "openvpn_other"),
    (b"HTTP/1.0 400 Bad Request\r\n\r\n", NoWrap(), "not_openvpn"),
    (b"\x00", TlsCrypt(STATIC_KEY, is_server=False), "not_openvpn"),
])
def test_classify_reply_tells_a_proper_reset_from_key_mismatches_and_strangers(
        reply: bytes, ours: ControlWrap, kind: str):
    assert classify_reply(reply, ours, OUR_SID) == kind


def test_client_reset_is_a_hard_reset_v2_the_server_side_unwraps():
    wire = client_reset(TlsCrypt(STATIC_KEY, is_server=False), OUR_SID, 3)

    unwrapped = TlsCrypt(STATIC_KEY, is_server=True).unwrap(wire)
    packet = decode_control(unwrapped.plain)
    assert packet.opcode is Opcode.CONTROL_HARD_RESET_CLIENT_V2
    assert packet.session_id == OUR_SID
    assert packet.message_id == 0 and packet.acks == ()
    assert unwrapped.packet_id == 3


def _exchange(replies: list[str], icmp: str | None = None,
              tcp: str | None = None) -> Exchange:
    return Exchange(TARGET, "none", True, Timeline(start=0.0), attempts=3,
                    replies=[{"from": "198.18.0.1:1194", "bytes": 26, "kind": k, "t": 0.01}
                             for k in replies], icmp=icmp, tcp=tcp)


@pytest.mark.parametrize(("replies", "icmp", "tcp", "state"), [
    (["openvpn_reset"], None, None, "open"),
    (["hmac_mismatch"], None, None, "open"),
    (["not_openvpn"], None, None, "open_not_openvpn"),
    ([], "port_unreachable", None, "closed"),
    ([], None, "refused", "closed"),
    ([], None, None, "filtered"),
    ([], None, "timeout", "filtered"),
    ([], "host_unreachable", None, "filtered"),
    ([], None, "connected", "open_not_openvpn"),
])
def test_exchange_state_words(replies: list[str], icmp: str | None, tcp: str | None,
                              state: str):
    assert _exchange(replies, icmp, tcp).state == state


def _entry(state: str, *, kind: str | None = None, wrap: str = "tls-crypt",
           address: str = "198.18.0.1", icmp: str | None = None) -> dict[str, Any]:
    return {"state": state, "sent_to": f"{address}:1194/udp", "wrap": wrap, "attempts": 3,
            "target": {"host": address, "address": address, "port": 1194, "proto": "udp",
                       "remote_line": 4},
            "reply_from": f"{address}:1194" if kind else None, "reply_kind": kind,
            "bytes_received": [66] if kind else [], "first_reply_s": 0.002 if kind else None,
            "icmp": icmp, "tcp": None, "timeline": [{"step": "gave_up", "t": 3.0}]}


def test_port_filtered_with_tls_crypt_fails_and_points_at_tls_keys(tmp_path: Path):
    result = checks_port.judge(_options(tmp_path, "tls-crypt ta.key\n"),
                               [_entry("filtered")], [])

    assert result.status == "fail"
    assert result.evidence["state"] == "filtered"
    assert "tls.keys" in result.explanation
    assert "client.conf line 4" in result.fix and "udp dport 1194 accept" in result.fix


def test_port_closed_says_nothing_listens(tmp_path: Path):
    result = checks_port.judge(_options(tmp_path), [_entry("closed", icmp="port_unreachable")],
                               [])

    assert result.status == "fail"
    assert "nothing listens" in result.summary
    assert "ss -lnp" in result.fix


def test_port_first_remote_dead_but_second_open_is_a_warning(tmp_path: Path):
    entries = [_entry("filtered"), _entry("open", kind="openvpn_reset", address="198.18.0.7")]

    result = checks_port.judge(_options(tmp_path), entries, [])

    assert result.status == "warn"
    assert result.evidence["state"] == "filtered"
    assert len(result.evidence["targets"]) == 2


def test_port_answer_failing_our_key_is_open_with_a_warning(tmp_path: Path):
    result = checks_port.judge(_options(tmp_path, "tls-crypt ta.key\n"),
                               [_entry("open", kind="hmac_mismatch")], [])

    assert result.status == "warn"
    assert result.evidence["state"] == "open"


def _variant(vid: str, answered: bool = False, *, kind: str | None = None,
             state: str = "filtered") -> dict[str, Any]:
    return {"variant": vid, "wrap": vid, "answered": answered, "state": state,
            "reply_kind": kind or ("openvpn_reset" if answered else None)}


@pytest.mark.parametrize(("config", "variants", "status", "cause"), [
    ("tls-crypt ta.key\n", [_variant("configured", True, state="open")], "ok", None),
    ("tls-crypt ta.key\n", [_variant("configured", kind="hmac_mismatch", state="open")],
     "fail", "hmac_mismatch"),
    ("tls-crypt ta.key\n", [_variant("configured"), _variant("no_wrap", True)],
     "fail", "wrap_mismatch"),
    ("tls-auth ta.key 0\n", [_variant("configured"), _variant("tls_auth_dir1", True)],
     "fail", "key_direction_mismatch"),
    ("tls-crypt ta.key\n", [_variant("configured"), _variant("tls_auth_dir1", True)],
     "fail", "wrap_mismatch"),
    ("tls-auth ta.key 1\n", [_variant("configured"), _variant("tls_crypt", True)],
     "fail", "wrap_mismatch"),
    ("tls-crypt ta.key\n", [_variant("configured"), _variant("no_wrap")],
     "fail", "key_mismatch_or_filtered"),
    ("tls-crypt ta.key\n", [_variant("configured", state="closed"), _variant("no_wrap")],
     "skip", None),
    ("", [_variant("configured")], "warn", "no_answer"),
])
def test_tls_keys_verdict_from_which_variants_were_answered(
        tmp_path: Path, config: str, variants: list[dict[str, Any]], status: str,
        cause: str | None):
    result = judge_keys(_options(tmp_path, config), variants, TARGET.describe())

    assert result.status == status, result.summary
    assert result.evidence.get("cause") == cause


def test_key_direction_mismatch_fix_names_the_wanted_direction(tmp_path: Path):
    result = judge_keys(_options(tmp_path, "tls-auth ta.key 0\n"),
                        [_variant("configured"), _variant("tls_auth_dir1", True)],
                        TARGET.describe())

    assert "key-direction 1" in result.fix
    assert "client.conf line 8" in result.fix


def test_key_variants_try_the_other_directions_no_wrap_and_tls_crypt(tmp_path: Path):
    names = [v[0] for v in key_variants(_options(tmp_path, "tls-auth ta.key 1\n"))]

    assert names == ["configured", "no_wrap", "tls_auth_nodir", "tls_auth_dir0", "tls_crypt"]


def test_without_wrapping_there_is_only_the_configured_variant(tmp_path: Path):
    assert [v[0] for v in key_variants(_options(tmp_path))] == ["configured"]


def _failed(cause: str, phase: str) -> ev.HandshakeFailed:
    return ev.HandshakeFailed(0, cause, "detail", phase)


def _silence(received_after_tls: int, silent_s: float = 4.0, sent: int = 3) -> dict[str, Any]:
    return {"received_after_tls_started": received_after_tls, "server_silent_s": silent_s,
            "sent_after_last_reply": sent}


@pytest.mark.parametrize(("failure", "drops", "last", "silence", "cause"), [
    (None, {}, "reset_sent", None, "no_reset_reply"),
    (_failed("no_reset_reply", "reset_sent"), {"hmac_mismatch": 3}, None, None,
     "hmac_mismatch"),
    (_failed("cert_verify_failed", "tls_started"), {}, None, None, "cert_verify_failed"),
    (_failed("peer_rejected_cert", "key_method_sent"), {}, None, None, "peer_rejected_cert"),
    (None, {}, "key_method_sent", _silence(2), "peer_rejected_cert"),
    (None, {}, "tls_started", _silence(0), "tls_alert"),
    (None, {}, "key_method_sent", _silence(2, silent_s=0.5), "timeout"),
    (None, {}, "push_request_sent", _silence(5), "timeout"),
    (_failed("auth_failed", "push_request_sent"), {}, None, None, "auth_failed"),
])
def test_classify_failure_names_the_real_cause(
        failure: ev.HandshakeFailed | None, drops: dict[str, int], last: str | None,
        silence: dict[str, Any] | None, cause: str):
    assert classify_failure(failure, drops, last, None, silence)[0] == cause


def _mtu(pmtu: int) -> dict[str, Any]:
    return {"path_mtu": pmtu, "route_mtu": 1500, "confirmed": True, "probes": [],
            "timeline": []}


@pytest.mark.parametrize(("extra", "pmtu", "status"), [
    ("", 1500, "ok"),  # tun packets fragment, but mssfix 1492 mtu keeps TCP inside
    ("", 1400, "warn"),
    ("tun-mtu 1300\n", 1400, "ok"),
    ("mssfix 1380 mtu\n", 1400, "ok"),
    ("mssfix 0\n", 1500, "warn"),
])
def test_mtu_verdict_compares_tunnel_packets_and_mssfix_with_the_path(
        tmp_path: Path, extra: str, pmtu: int, status: str):
    result = checks_mtu.judge(_options(tmp_path, extra), TARGET, _mtu(pmtu))

    assert result.status == status, result.summary


def test_mtu_warning_fix_gives_the_numbers(tmp_path: Path):
    result = checks_mtu.judge(_options(tmp_path), TARGET, _mtu(1400))

    assert "mssfix 1400 mtu" in result.fix
    assert "'tun-mtu' to 1348" in result.fix  # 1400 - 20 - 8 - 24 (AES-256-GCM)


def test_padded_probe_has_exactly_the_requested_size():
    wrap = TlsCrypt(STATIC_KEY, is_server=False)
    assert len(checks_mtu.padded_probe(wrap, OUR_SID, 1472)) == 1472


def test_echo_request_is_a_valid_ipv4_icmp_packet():
    packet = echo_request("198.18.8.2", "198.18.8.1", 0x1234, 7, b"x" * 10)

    assert checksum(packet[:20]) == 0
    assert checksum(packet[20:]) == 0
    reply = bytearray(packet)
    reply[12:16], reply[16:20] = packet[16:20], packet[12:16]
    reply[20] = 0
    echo = parse_echo_reply(bytes(reply))
    assert echo is not None
    assert (echo.src, echo.ident, echo.seq) == ("198.18.8.1", 0x1234, 7)
    assert parse_echo_reply(packet) is None  # a request is not a reply


@pytest.mark.parametrize(("push", "expected"), [
    ("PUSH_REPLY,topology subnet,route-gateway 198.18.8.1,ifconfig 198.18.8.2 255.255.255.0",
     ("198.18.8.2", "198.18.8.1")),
    ("PUSH_REPLY,topology net30,ifconfig 198.18.8.6 198.18.8.5", ("198.18.8.6", "198.18.8.5")),
    ("PUSH_REPLY,topology subnet,ifconfig 198.18.8.2 255.255.255.0", None),
    ("PUSH_REPLY,ping 10", None),
])
def test_gateway_to_ping_follows_the_pushed_topology(push: str,
                                                     expected: tuple[str, str] | None):
    pushed = PushAccumulator().feed(push)
    assert pushed is not None
    assert gateway_of(pushed) == expected


async def test_targets_come_from_remote_lines_and_the_dns_result(tmp_path: Path):
    text = ("client\ndev tun\nremote 198.18.0.1 1194\nremote vpn.invalid 443 tcp-client\n"
            "ca ca.crt\ncert c.crt\nkey c.key\n")
    options = parse_config(text, tmp_path / "client.conf")
    dns = CheckResult("dns.remote", "ok", "", {"remotes": [
        {"host": "198.18.0.1", "addresses": ["198.18.0.1"]},
        {"host": "vpn.invalid", "addresses": ["198.18.0.5", "198.18.0.6"]}]})

    targets, unresolved = await resolve_targets(options, dns)

    assert [(t.address, t.port, t.transport, t.line) for t in targets] == [
        ("198.18.0.1", 1194, "udp", 3), ("198.18.0.5", 443, "tcp", 4)]
    assert unresolved == []


async def test_timeline_steps_carry_time_since_start():
    timeline = Timeline()
    timeline.add("reset_sent", attempt=1)

    assert timeline.steps[0]["step"] == "reset_sent"
    assert 0 <= timeline.steps[0]["t"] < 1
