"""Status output in OpenVPN's formats, read back with a reader of OpenVPN's documented format.

The reader below follows OpenVPN's status file layout (status-version 1: titled sections;
2 and 3: records keyed by their first field, column names from the matching HEADER record,
comma- or tab-separated) and knows nothing about trivpn's writer.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from trivpn.runtime.status import (
    ClientRow,
    ClientStatus,
    ServerStatus,
    client_status_lines,
    server_status_lines,
    write_atomically,
)

NOW = 1_700_000_000.0


def read_v23(text: str, sep: str) -> dict[str, list[dict[str, str]]]:
    """Records of a version 2/3 status file by kind, each a column-name → value dict."""
    headers: dict[str, list[str]] = {}
    records: dict[str, list[dict[str, str]]] = {}
    lines = text.splitlines()
    assert lines[-1] == "END"
    for line in lines[:-1]:
        kind, *fields = line.split(sep)
        if kind == "HEADER":
            headers[fields[0]] = fields[1:]
        elif kind in headers:
            assert len(fields) == len(headers[kind]), line
            records.setdefault(kind, []).append(dict(zip(headers[kind], fields, strict=True)))
        else:
            records.setdefault(kind, []).append({"values": sep.join(fields)})
    return records


def read_v1(text: str) -> dict[str, list[list[str]]]:
    """Sections of a version 1 status file: title → rows (the column header row first)."""
    sections: dict[str, list[list[str]]] = {}
    current = None
    for line in text.splitlines():
        if line in ("OpenVPN CLIENT LIST", "ROUTING TABLE", "GLOBAL STATS", "END"):
            current = line
            sections[current] = []
        else:
            assert current is not None
            sections[current].append(line.split(","))
    return sections


def row(cn: str | None, address: str, vaddr: str | None, cid: int) -> ClientRow:
    return ClientRow(common_name=cn, real_address=address, virtual_address=vaddr,
                     bytes_received=1000 + cid, bytes_sent=2000 + cid,
                     connected_since=int(NOW) - 60, client_id=cid, peer_id=cid,
                     cipher="AES-256-GCM", last_ref=int(NOW))


def two_clients() -> ServerStatus:
    a = row("client1", "198.18.0.2:40000", "198.18.8.2", 0)
    b = row("client2", "198.18.0.3:40001", "198.18.8.3", 1)
    handshaking = row(None, "198.18.0.4:40002", None, 2)
    return ServerStatus((a, b, handshaking), (("198.18.8.2", a), ("198.18.8.3", b)))


@pytest.mark.parametrize(("version", "sep"), [(2, ","), (3, "\t")])
def test_client_list_columns_follow_the_header(version: int, sep: str):
    text = "\n".join(server_status_lines(two_clients(), version, NOW)) + "\n"
    records = read_v23(text, sep)
    clients = records["CLIENT_LIST"]
    assert [c["Common Name"] for c in clients] == ["client1", "client2", "UNDEF"]
    first = clients[0]
    assert first["Real Address"] == "198.18.0.2:40000"
    assert first["Virtual Address"] == "198.18.8.2"
    assert (first["Bytes Received"], first["Bytes Sent"]) == ("1000", "2000")
    assert first["Connected Since (time_t)"] == str(int(NOW) - 60)
    assert first["Connected Since"] == time.strftime("%Y-%m-%d %H:%M:%S",
                                                     time.localtime(NOW - 60))
    assert (first["Username"], first["Client ID"], first["Peer ID"]) == ("UNDEF", "0", "0")
    assert first["Data Channel Cipher"] == "AES-256-GCM"
    assert clients[2]["Virtual Address"] == ""


@pytest.mark.parametrize(("version", "sep"), [(2, ","), (3, "\t")])
def test_routing_table_title_time_and_global_stats(version: int, sep: str):
    records = read_v23("\n".join(server_status_lines(two_clients(), version, NOW)), sep)
    routes = records["ROUTING_TABLE"]
    assert [(r["Virtual Address"], r["Common Name"]) for r in routes] == [
        ("198.18.8.2", "client1"), ("198.18.8.3", "client2")]
    assert routes[0]["Last Ref (time_t)"] == str(int(NOW))
    assert records["TITLE"][0]["values"].startswith("trivpn ")
    assert records["TIME"][0]["values"].split(sep)[1] == str(int(NOW))
    stats = [r["values"] for r in records["GLOBAL_STATS"]]
    assert stats == [f"Max bcast/mcast queue length{sep}0", f"dco_enabled{sep}0"]


def test_version_1_has_the_classic_sections():
    sections = read_v1("\n".join(server_status_lines(two_clients(), 1, NOW)))
    client_list = sections["OpenVPN CLIENT LIST"]
    assert client_list[0][0] == "Updated"
    assert client_list[1] == ["Common Name", "Real Address", "Bytes Received", "Bytes Sent",
                              "Connected Since"]
    assert [r[0] for r in client_list[2:]] == ["client1", "client2", "UNDEF"]
    assert client_list[2][2:4] == ["1000", "2000"]
    routing = sections["ROUTING TABLE"]
    assert routing[0] == ["Virtual Address", "Common Name", "Real Address", "Last Ref"]
    assert [r[:2] for r in routing[1:]] == [["198.18.8.2", "client1"],
                                            ["198.18.8.3", "client2"]]
    assert sections["GLOBAL STATS"] == [["Max bcast/mcast queue length", "0"]]
    assert sections["END"] == []


def test_unknown_version_is_reported_like_openvpn():
    assert server_status_lines(two_clients(), 7, NOW) == [
        "ERROR: bad status format version number"]


def test_client_statistics_block():
    lines = client_status_lines(ClientStatus(10, 20, 30, 40, 30), NOW)
    assert lines[0] == "OpenVPN STATISTICS" and lines[-1] == "END"
    values = dict(line.split(",", 1) for line in lines[1:-1])
    assert values["TUN/TAP read bytes"] == "10"
    assert values["TUN/TAP write bytes"] == "20"
    assert values["TCP/UDP read bytes"] == "30"
    assert values["TCP/UDP write bytes"] == "40"
    assert values["Auth read bytes"] == "30"
    assert "Updated" in values


def test_write_atomically_replaces_the_file_and_leaves_no_temporaries(tmp_path: Path):
    path = tmp_path / "status.log"
    path.write_text("old\n")
    write_atomically(path, ["a", "END"])
    assert path.read_text() == "a\nEND\n"
    assert [p.name for p in tmp_path.iterdir()] == ["status.log"]


def test_status_file_opened_before_a_privilege_drop_stays_writable(tmp_path):
    import subprocess
    import sys

    from tests.conftest import require_root

    require_root()  # drops privileges (CI: a failure, never a skip)
    tmp_path.chmod(0o755)
    target = tmp_path / "status.log"
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from trivpn.runtime.status import StatusFile\n"
        f"f = StatusFile(Path({str(target)!r}))\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "f.write(['TITLE,after drop', 'END'])\n"
        "f.write(['END'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert target.read_text() == "END\n"  # rewritten in place, truncated to the new content
