"""Reading a server's log lines (file, journal and syslog timestamps) and status files. The
message texts are OpenVPN 2.6's, as tests/diagnostics/test_server_state.py sees the real
binary write them."""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import trio

from tests.diagnostics.doctorkit import SERVER, by_id, context, write_config
from trivpn.diagnostics.checks_serverstate import (
    CHECKS,
    CHURN_MIN_CONNECTS,
    bound_sockets,
    churn_findings,
    journal_units,
    socket_owners,
)
from trivpn.diagnostics.hostinfo import read_proc_net
from trivpn.diagnostics.serverlog import StatusFormatError, log_events, parse_status

POOL_CHECK = by_id(CHECKS, "server.pool")

CONNECT = ("{addr} [client1] Peer Connection Initiated with [AF_INET]{addr}")
DUP = ("MULTI: new connection by client 'client1' will cause previous active sessions by this "
       "client to be dropped.  Remember to use the --duplicate-cn option if you want multiple "
       "clients using the same certificate or username to concurrently connect.")
POOL = ("carol/198.18.5.2:4000 MULTI: no dynamic or static remote --ifconfig address is "
        "available for carol/198.18.5.2:4000")


@pytest.mark.parametrize("prefix", [
    "2026-12-04 14:35:46 ",                                  # log / log-append file
    "2026-12-04T14:35:46+0000 vpn openvpn[812]: ",           # journalctl -o short-iso
    "Dec 04 14:35:46 vpn openvpn[812]: ",                     # journalctl, syslog
    "",                                                       # --suppress-timestamps
])
def test_connects_duplicates_and_pool_refusals_are_read_in_every_log_format(prefix: str):
    lines = [prefix + CONNECT.format(addr="198.18.3.2:41000"), prefix + DUP, prefix + POOL,
             prefix + "198.18.3.2:41000 VERIFY OK: depth=0, CN=client1"]
    events = log_events(lines, year=2026)
    assert [(e.kind, e.common_name, e.address) for e in events] == [
        ("connect", "client1", "198.18.3.2:41000"),
        ("duplicate_cn", "client1", None),
        ("pool_exhausted", "carol", "198.18.5.2:4000")]
    expected = None if not prefix else datetime(2026, 12, 4, 14, 35, 46)
    assert events[0].time == expected
    assert events[0].host == "198.18.3.2"


def test_reconnects_older_than_the_window_do_not_count():
    start = datetime(2026, 12, 4, 10, 0, 0)
    old = [f"{start + timedelta(seconds=30 * i):%Y-%m-%d %H:%M:%S} "
           + CONNECT.format(addr=f"198.18.3.2:{41000 + i}") for i in range(CHURN_MIN_CONNECTS)]
    late = f"{start + timedelta(hours=3):%Y-%m-%d %H:%M:%S} " + CONNECT.format(
        addr="198.18.3.2:42000")
    assert churn_findings(log_events(old, year=2026), duplicate_cn=False)["restarting"]
    assert not churn_findings(log_events([*old, late], year=2026),
                              duplicate_cn=False)["restarting"]


def test_slow_reconnects_are_not_a_loop():
    start = datetime(2026, 12, 4, 10, 0, 0)
    lines = [f"{start + timedelta(minutes=14 * i):%Y-%m-%d %H:%M:%S} "
             + CONNECT.format(addr="198.18.3.2:41000") for i in range(CHURN_MIN_CONNECTS)]
    assert churn_findings(log_events(lines, year=2026), duplicate_cn=False,
                          window=timedelta(hours=2))["restarting"] == []


def test_duplicate_drops_are_ignored_with_duplicate_cn():
    lines = [CONNECT.format(addr="198.18.3.2:1"), CONNECT.format(addr="198.18.4.2:1"), DUP]
    events = log_events(lines, year=2026)
    assert churn_findings(events, duplicate_cn=False)["duplicate_cn"][0]["hosts"] == [
        "198.18.3.2", "198.18.4.2"]
    assert churn_findings(events, duplicate_cn=True)["duplicate_cn"] == []


def test_a_client_status_file_is_not_a_server_status():
    with pytest.raises(StatusFormatError, match="client's status file"):
        parse_status("OpenVPN STATISTICS\nUpdated,2026-12-04 14:35:46\nEND\n")
    with pytest.raises(StatusFormatError):
        parse_status("hello\n")


@pytest.mark.parametrize(("family", "address", "shown"), [
    (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
    (socket.AF_INET6, "::1", "::1"),
    (socket.AF_INET6, "::ffff:127.0.0.1", "127.0.0.1"),
])
def test_bound_sockets_are_read_from_proc_net_with_their_owner(family: int, address: str,
                                                               shown: str):
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((address, 0))
        port = sock.getsockname()[1]
        found = [s for s in bound_sockets({n: read_proc_net(n) for n in ("udp", "udp6")},
                                          "udp") if s.port == port]
        assert [(s.address, s.port) for s in found] == [(shown, port)]
        owners = socket_owners({found[0].inode})
    assert [o["pid"] for o in owners[found[0].inode]] == [os.getpid()]


def _status_v1(updated: str) -> str:
    return ("OpenVPN CLIENT LIST\n"
            f"Updated,{updated}\n"
            "Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since\n"
            f"alice,198.18.3.2:41000,100,200,{updated}\n"
            f"bob,198.18.4.2:41000,100,200,{updated}\n"
            "ROUTING TABLE\nVirtual Address,Common Name,Real Address,Last Ref\n"
            f"198.18.8.2,alice,198.18.3.2:41000,{updated}\n"
            f"198.18.8.3,bob,198.18.4.2:41000,{updated}\n"
            "GLOBAL STATS\nMax bcast/mcast queue length,0\nEND\n")


@pytest.mark.parametrize(("age", "status"), [(timedelta(0), "fail"), (timedelta(hours=2), "ok")])
def test_a_status_file_the_server_stopped_writing_does_not_count(tmp_path: Path,
                                                                 age: timedelta, status: str):
    updated = f"{datetime.now() - age:%Y-%m-%d %H:%M:%S}"
    (tmp_path / "status.txt").write_text(_status_v1(updated))
    config = write_config(tmp_path, SERVER.replace("server 198.19.0.0 255.255.255.0\n", "")
                          + "mode server\ntls-server\nifconfig 198.18.8.1 255.255.255.0\n"
                          "ifconfig-pool 198.18.8.2 198.18.8.3\nstatus status.txt 10\n")
    result = trio.run(POOL_CHECK.run, context(config))
    assert result.status == status, result.summary
    assert parse_status(_status_v1(updated)).clients[1].virtual_address == "198.18.8.3"
    if status == "ok":
        assert result.evidence["status_stale_s"] >= 7200 - 5
        assert "is the server running?" in result.summary


@pytest.mark.parametrize(("path", "units"), [
    ("/etc/openvpn/server/office.conf", ["openvpn-server@office"]),
    ("/etc/openvpn/office.conf", ["openvpn@office"]),
    ("/etc/trivpn/office.conf", ["trivpn@office"]),
    ("/srv/vpn/office.conf", ["openvpn-server@office", "openvpn@office", "trivpn@office"]),
])
def test_a_server_without_a_log_file_is_looked_up_in_its_units_journal(path: str,
                                                                      units: list[str]):
    assert journal_units(Path(path)) == units


def test_trivpn_journal_lines_are_json_after_the_syslog_tag():
    line = ('2026-12-04T14:35:46+0000 vpn trivpn[812]: {"event": "peer_connected", '
            '"peer": "198.18.3.2:41000", "cn": "client1", "level": "info", '
            '"timestamp": "2026-12-04T14:35:46.5Z"}')
    (event,) = log_events([line], year=2026)
    assert (event.kind, event.common_name, event.host) == ("connect", "client1", "198.18.3.2")
    assert event.time == datetime(2026, 12, 4, 14, 35, 46, 500000)
