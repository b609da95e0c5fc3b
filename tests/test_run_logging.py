"""``trivpn run``'s logging as the config asks: verb, mute, syslog, daemon's system logger."""

from __future__ import annotations

import io
import json
import re
import syslog
from typing import Any

import pytest

from trivpn.commands.run import configure_for
from trivpn.config import Options, parse_config
from trivpn.logging import get_logger

BASE = ("client\ndev tun\nremote 198.18.0.1 1194\nca ca.crt\ncert c.crt\nkey c.key\n")


def _options(extra: str) -> Options:
    return parse_config(BASE + extra, "/etc/openvpn/c.conf")


def _lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.directive("verb")
@pytest.mark.parametrize(("verb", "logged"), [
    ("verb 0", ["failed"]), ("verb 1", ["starting", "failed"]),
    ("verb 4", ["detail", "starting", "failed"]),
])
def test_verb_decides_which_events_are_logged(verb: str, logged: list[str]) -> None:
    out = io.StringIO()
    configure_for(_options(verb + "\n"), stream=out)
    log = get_logger()
    log.debug("detail")
    log.info("starting")
    log.error("failed")
    assert [line["event"] for line in _lines(out)] == logged


@pytest.mark.directive("mute")
def test_mute_keeps_n_consecutive_lines_of_an_event_and_counts_the_rest() -> None:
    out = io.StringIO()
    configure_for(_options("mute 2\n"), stream=out)
    log = get_logger()
    for _ in range(5):
        log.warning("link_error")
    log.info("reconnecting")
    log.warning("link_error")
    lines = _lines(out)
    assert [line["event"] for line in lines] == ["link_error", "link_error", "reconnecting",
                                                 "link_error"]
    assert lines[2]["muted"] == 3 and "muted" not in lines[3]


class _FakeSyslog:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened: list[tuple[str, int, int]] = []
        self.lines: list[tuple[int, str]] = []
        monkeypatch.setattr(syslog, "openlog",
                            lambda ident, opt, facility: self.opened.append((ident, opt,
                                                                             facility)))
        monkeypatch.setattr(syslog, "syslog", lambda prio, msg: self.lines.append((prio, msg)))


@pytest.mark.directive("syslog", "daemon")
@pytest.mark.parametrize(("extra", "ident"), [
    ("syslog\n", "openvpn"), ("syslog vpn-office\n", "vpn-office"),
    ("daemon\n", "openvpn"), ("daemon vpn-home\n", "vpn-home"),
])
def test_syslog_and_daemon_send_the_log_to_the_system_logger_under_their_name(
        monkeypatch: pytest.MonkeyPatch, extra: str, ident: str) -> None:
    fake = _FakeSyslog(monkeypatch)
    configure_for(_options(extra), stream=None)
    get_logger().warning("link_error", detail="x")
    get_logger().info("reconnecting")
    assert fake.opened == [(ident, syslog.LOG_PID, syslog.LOG_DAEMON)]
    assert [(prio, json.loads(msg)["event"]) for prio, msg in fake.lines] == [
        (syslog.LOG_WARNING, "link_error"), (syslog.LOG_INFO, "reconnecting")]


@pytest.mark.directive("syslog")
def test_a_log_file_wins_over_syslog(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeSyslog(monkeypatch)
    out = io.StringIO()
    configure_for(_options("syslog\n"), stream=out)
    get_logger().info("reconnecting")
    assert fake.lines == [] and [line["event"] for line in _lines(out)] == ["reconnecting"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _console_line(extra: str, stream: io.StringIO | None = None) -> str:
    out = stream if stream is not None else io.StringIO()
    configure_for(_options(extra), stream=out, fmt=None if stream is not None else "console")
    get_logger().info("starting", role="client")
    return out.getvalue().splitlines()[0]


TIMESTAMP = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"


def test_console_lines_start_with_a_timestamp_by_default() -> None:
    assert re.match(TIMESTAMP, _console_line(""))


@pytest.mark.directive("suppress-timestamps")
def test_suppress_timestamps_drops_the_time_prefix_of_console_lines() -> None:
    line = _console_line("suppress-timestamps\n")
    assert not re.search(r"\d\d:\d\d:\d\d", line), line
    assert line.startswith("[info") and "starting" in line and "role=client" in line


@pytest.mark.directive("suppress-timestamps")
def test_suppress_timestamps_keeps_the_timestamp_field_of_json_lines() -> None:
    out = io.StringIO()
    configure_for(_options("suppress-timestamps\n"), stream=out)
    get_logger().info("starting")
    assert "timestamp" in _lines(out)[0]


@pytest.mark.directive("machine-readable-output")
def test_machine_readable_output_writes_json_lines_even_on_a_terminal() -> None:
    line = _console_line("machine-readable-output\n", stream=_Terminal())
    record = json.loads(line)
    assert record["event"] == "starting" and re.match(TIMESTAMP, record["timestamp"])


@pytest.mark.directive("machine-readable-output", "suppress-timestamps")
@pytest.mark.parametrize("order", ["suppress-timestamps\nmachine-readable-output\n",
                                   "machine-readable-output\nsuppress-timestamps\n"])
def test_machine_readable_output_keeps_timestamps_despite_suppress_timestamps(order: str) -> None:
    # as OpenVPN's: checked in tests/interop/test_openvpn_claims.py
    assert re.match(TIMESTAMP, _console_line(order))
    assert "timestamp" in json.loads(_console_line(order, stream=_Terminal()))
