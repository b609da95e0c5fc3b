"""``doctor --watch``'s interpretation of management lines (trivpn/diagnostics/watch.py).

The lines are those OpenVPN 2.6 and trivpn write (the interop tests in
tests/interop/test_doctor_watch.py produce them from real processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trivpn.config import load_config
from trivpn.diagnostics.watch import (
    SILENT_INTERVALS,
    UNAUTH_BYTES_THRESHOLD,
    Interpreter,
    WatchEvent,
    address_from_options,
    render_event,
)
from trivpn.runtime.management_client import parse_address

CLIENT = "client\ndev tun\nremote 198.18.0.1\nca ca.crt\ncert c.crt\nkey c.key\n"


def feed(interp: Interpreter, *lines: str) -> list[WatchEvent]:
    return [event for line in lines for event in interp.feed(line)]


def status(link: int, auth: int) -> list[str]:
    return ["OpenVPN STATISTICS", "Updated,2026-12-04 14:00:00", "TUN/TAP read bytes,100",
            f"TCP/UDP read bytes,{link}", "TCP/UDP write bytes,500", f"Auth read bytes,{auth}",
            "END"]


@pytest.mark.parametrize(("line", "event_id"), [
    (">STATE:1796395197,RECONNECTING,ping-restart,,,,,", "watch.reconnect.ping-restart"),
    (">STATE:1796395197,RECONNECTING,ping_restart,,,,,", "watch.reconnect.ping-restart"),
    (">STATE:1796395197,RECONNECTING,handshake_failed,,,,,", "watch.reconnect.tls-error"),
    (">STATE:1796395197,RECONNECTING,tls-error,,,,,", "watch.reconnect.tls-error"),
    (">STATE:1796395197,EXITING,SIGTERM,,,,,", "watch.exit.SIGTERM"),
])
def test_a_state_line_names_the_reconnect_reason_in_openvpns_words(line: str,
                                                                   event_id: str) -> None:
    [event] = Interpreter().feed(line)
    assert event.id == event_id
    assert event.unix_time == 1796395197


def test_an_unknown_reconnect_reason_is_reported_as_it_is() -> None:
    [event] = Interpreter().feed(">STATE:1,RECONNECTING,bad_push,,,,,")
    assert event.id == "watch.reconnect.bad_push" and "bad push" in event.summary


def test_connected_carries_the_tunnel_address_and_remote() -> None:
    [event] = Interpreter().feed(
        ">STATE:5,CONNECTED,SUCCESS,198.18.8.2,198.18.0.1,1194,198.18.0.2,41194")
    assert event.level == "ok"
    assert event.evidence["tunnel_ip"] == "198.18.8.2"
    assert event.evidence["remote"] == "198.18.0.1:1194"


def test_a_known_log_line_is_explained_like_doctor_log() -> None:
    [event] = Interpreter().feed(
        ">LOG:7,,TLS Error: TLS key negotiation failed to occur within 4 seconds (check your "
        "network connectivity)")
    assert event.id == "watch.log.tls_timeout" and event.level == "fail"
    assert "4 seconds" in event.summary and event.fix


def test_unknown_log_lines_and_the_connected_line_give_nothing() -> None:
    interp = Interpreter()
    assert feed(interp, ">LOG:7,I,net_route_v4_best_gw query: dst 0.0.0.0",
                ">LOG:8,I,Initialization Sequence Completed") == []


def test_a_trivpn_drop_line_is_a_growing_drop_counter() -> None:
    [event] = Interpreter().feed(
        ">LOG:9,W,packet_dropped reason=bad_data_packet count=50 total=120")
    assert event.id == "watch.drops.bad_data_packet"
    assert event.evidence["count"] == 50 and event.evidence["total"] == 120


def test_unauthenticated_bytes_between_two_status_answers_are_reported() -> None:
    interp = Interpreter()
    assert feed(interp, *status(10_000, 9_000)) == []
    assert feed(interp, *status(12_000, 10_500)) == []  # a handshake's worth: nothing
    [event] = feed(interp, *status(12_000 + UNAUTH_BYTES_THRESHOLD + 1_000, 11_000))
    assert event.id == "watch.drops.unauthenticated"
    assert event.evidence["unauthenticated_bytes"] == UNAUTH_BYTES_THRESHOLD + 500


def test_counters_that_restart_with_a_new_connection_are_not_drops() -> None:
    interp = Interpreter()
    feed(interp, *status(900_000, 100_000))
    assert feed(interp, *status(1_000, 900)) == []


def test_sending_while_receiving_nothing_is_reported_once() -> None:
    interp = Interpreter()
    interp.feed(">STATE:1,CONNECTED,SUCCESS,198.18.8.2,198.18.0.1,1194,,")
    events = feed(interp, *[f">BYTECOUNT:500,{600 + 100 * i}"
                            for i in range(SILENT_INTERVALS + 3)])
    assert [e.id for e in events] == ["watch.receiving_nothing"]
    assert feed(interp, ">BYTECOUNT:700,2000") == []


def test_auth_failed_without_a_config_names_both_causes() -> None:
    [event] = Interpreter().feed(">PASSWORD:Verification Failed: 'Auth'")
    assert event.id == "watch.auth_failed" and event.level == "fail"
    assert "username or password" in event.explanation


def test_auth_failed_with_a_reason_quotes_it() -> None:
    [event] = Interpreter().feed(">PASSWORD:Verification Failed: 'Auth' ['account locked']")
    assert event.evidence["reason"] == "account locked"
    assert "account locked" in event.summary


def test_auth_failed_with_the_config_uses_the_doctors_diagnosis(tmp_path: Path) -> None:
    conf = tmp_path / "client.conf"
    conf.write_text(CLIENT + "auth-user-pass creds.txt\n")
    interp = Interpreter(load_config(conf, read_files=False))
    [event] = interp.feed(">PASSWORD:Verification Failed: 'Auth'")
    assert event.id == "watch.auth_failed"
    assert "client.conf" in event.fix


def test_a_hold_is_reported_and_left_alone() -> None:
    [event] = Interpreter().feed(">HOLD:Waiting for hold release:0")
    assert event.id == "watch.hold" and "hold release" in event.fix


def test_the_management_address_comes_from_the_config(tmp_path: Path) -> None:
    conf = tmp_path / "client.conf"
    conf.write_text(CLIENT + "management run/mgmt.sock unix mgmt.pw\n")
    address = address_from_options(load_config(conf, read_files=False))
    assert address is not None and address.unix
    assert address.host == str(tmp_path / "run" / "mgmt.sock")
    assert address.password_file == tmp_path / "mgmt.pw"


@pytest.mark.parametrize(("text", "host", "port"), [
    ("127.0.0.1:7505", "127.0.0.1", 7505), ("[::1]:7505", "::1", 7505),
    ("/run/openvpn/client.sock", "/run/openvpn/client.sock", None),
])
def test_a_management_address_is_host_port_or_a_path(text: str, host: str,
                                                     port: int | None) -> None:
    address = parse_address(text)
    assert (address.host, address.port) == (host, port)


def test_a_bad_management_port_is_refused() -> None:
    with pytest.raises(ValueError, match="port"):
        parse_address("127.0.0.1:99999")


def test_a_human_event_shows_the_log_line_why_and_fix() -> None:
    [event] = Interpreter().feed(">LOG:7,,Inactivity timeout (--ping-restart), restarting")
    text = render_event(event)
    assert "[!]" in text and "log: Inactivity timeout" in text
    assert "why: " in text and "fix: " in text


def test_the_state_when_attaching_is_read_silently_from_the_state_answer() -> None:
    interp = Interpreter()
    interp.expect_state = True
    [event] = interp.feed("1796395197,CONNECTED,SUCCESS,198.18.8.2,198.18.0.1,1194,,")
    assert event.id == "watch.current_state" and event.level == "ok"
    assert interp.up
    assert interp.feed("END") == [] and not interp.expect_state


def test_a_handshake_failure_while_the_tunnel_is_up_is_a_failed_renegotiation() -> None:
    interp = Interpreter()
    feed(interp, ">STATE:1,CONNECTED,SUCCESS,198.18.8.2,198.18.0.1,1194,,")
    [reneg] = interp.feed(">STATE:2,AUTH,,,,,,")
    assert reneg.id == "watch.renegotiating"
    timeout = (">LOG:6,N,TLS Error: TLS key negotiation failed to occur within 4 seconds "
               "(check your network connectivity)")
    events = feed(interp, timeout, timeout)
    assert [e.id for e in events] == ["watch.log.tls_timeout", "watch.renegotiation_failed",
                                      "watch.log.tls_timeout"]
    assert "old key" in events[1].explanation


def test_the_same_failure_before_the_tunnel_was_up_is_not_a_renegotiation() -> None:
    events = Interpreter().feed(">LOG:6,N,TLS Error: TLS key negotiation failed to occur within "
                                "60 seconds (check your network connectivity)")
    assert [e.id for e in events] == ["watch.log.tls_timeout"]
