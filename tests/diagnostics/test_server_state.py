"""``trivpn doctor server.conf`` on the server host, against a real openvpn 2.6 server in a
namespace with real openvpn 2.6 clients: listening sockets, CRL, pool, duplicate-CN churn,
forwarding/NAT/FORWARD rules, and a healthy server with a LAN behind a client."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from tests.conftest import require_netns, require_openvpn
from tests.diagnostics.serverlab import (
    LAN,
    POOL,
    UPLINK_IF,
    ServerHost,
    client_lines,
    server_host,
    server_lines,
)
from tests.interop.openvpn import start_openvpn
from tests.interop.serverkit import ping
from tests.interop.trivpnproc import start_trivpn
from trivpn.commands import doctor
from trivpn.diagnostics import checks_ccd, checks_server, checks_serverstate
from trivpn.diagnostics.checks_serverstate import CHURN_MIN_CONNECTS
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext
from trivpn.diagnostics.runner import run_checks
from trivpn.diagnostics.serverlog import DUPLICATE_CN_TEXT
from trivpn.pki.crl import build_crl, crl_pem

pytestmark = pytest.mark.integration

SERVER_CHECKS: tuple[Check, ...] = (*checks_server.CHECKS, *checks_ccd.CHECKS,
                                    *checks_serverstate.CHECKS)
POOL_EMPTY = "MULTI: no dynamic or static remote --ifconfig address is available for"


def masquerade(oif: str, source: str = f"{POOL}/24") -> str:
    return ("table ip nat {\n chain postrouting {\n  type nat hook postrouting priority 100;\n"
            f"  ip saddr {source} oifname \"{oif}\" masquerade\n }}\n}}\n")


@pytest.fixture
def host(tmp_path: Path) -> Iterator[ServerHost]:
    require_netns()
    require_openvpn()
    with server_host(tmp_path) as made:
        yield made


async def _run(check_id: str, ctx: DoctorContext) -> CheckResult:
    check = next(c for c in SERVER_CHECKS if c.id == check_id)
    return await check.run(ctx)


def _write_crl(host: ServerHost, next_update: datetime, name: str = "crl.pem") -> Path:
    now = datetime.now(UTC)
    crl = build_crl(host.pki.ca, [], next_update=next_update,
                    last_update=min(now, next_update) - timedelta(days=30), now=now)
    path = host.workdir / name
    path.write_bytes(crl_pem(crl))
    return path


# --- healthy ----------------------------------------------------------------------------------

async def test_healthy_server_with_a_lan_behind_a_client_gives_no_warning(host: ServerHost):
    host.server.enable_forwarding()
    host.server.nft(masquerade(UPLINK_IF))
    host.server.nft("table inet filter {\n chain forward {\n"
                    "  type filter hook forward priority 0; policy drop;\n"
                    "  ct state established,related accept\n"
                    f"  iifname \"tun0\" oifname \"{UPLINK_IF}\" accept\n"
                    "  iifname \"tun0\" oifname \"tun0\" accept\n }\n}\n")
    (host.workdir / "ccd").mkdir()
    (host.workdir / "ccd" / "client1").write_text(f"iroute {LAN} 255.255.255.0\n")
    _write_crl(host, datetime.now(UTC) + timedelta(days=180))
    host.start_server(server_lines(extra=[
        "log server.log", "client-config-dir ccd", f"route {LAN} 255.255.255.0",
        f'push "route {LAN} 255.255.255.0"', 'push "redirect-gateway def1"',
        "crl-verify crl.pem", "ifconfig-pool-persist ipp.txt"]))
    client = host.add_client_ns()
    host.start_client(client)
    host.wait_status("client1")
    ctx = host.context()

    start = trio.current_time()
    report = await run_checks(SERVER_CHECKS, ctx)
    elapsed = trio.current_time() - start

    statuses = {r.id: r.status for r in report.checks}
    assert statuses == {c.id: "ok" for c in SERVER_CHECKS}, \
        {r.id: r.summary for r in report.checks if r.status != "ok"}
    assert elapsed < 15
    by_id = {r.id: r for r in report.checks}
    assert by_id["server.forwarding"].evidence["uplink"] == UPLINK_IF
    assert by_id["server.forwarding"].evidence["tun"] == "tun0"
    assert by_id["server.pool"].evidence["connected"] == 1
    assert by_id["server.sockets"].evidence["state"] == "listening"


async def test_doctor_command_on_a_healthy_server_host_reports_ok(host: ServerHost):
    host.server.enable_forwarding()
    host.server.nft(masquerade(UPLINK_IF))
    (host.workdir / "ccd").mkdir()
    (host.workdir / "ccd" / "client1").write_text(f"iroute {LAN} 255.255.255.0\n")
    _write_crl(host, datetime.now(UTC) + timedelta(days=180))
    host.start_server(server_lines(extra=[
        "log server.log", "client-config-dir ccd", f"route {LAN} 255.255.255.0",
        'push "redirect-gateway def1"', "crl-verify crl.pem", "multihome"]))
    host.start_client(host.add_client_ns())
    host.wait_status("client1")
    env = {**os.environ, doctor.NETNS_ENV: host.server.name}

    done = await trio.run_process(
        [sys.executable, "-m", "trivpn", "doctor", str(host.workdir / "server.conf"), "--json"],
        env=env, capture_stdout=True, check=False)

    data = json.loads(done.stdout)
    assert (done.returncode, data["verdict"], data["role"]) == (0, "ok", "server"), \
        [(c["id"], c["summary"]) for c in data["checks"] if c["status"] != "ok"]
    ids = {c["id"] for c in data["checks"]}
    assert {c.id for c in SERVER_CHECKS} <= ids
    assert data["duration_s"] < 15


# --- listening sockets ------------------------------------------------------------------------

async def test_running_server_is_found_on_its_port(host: ServerHost):
    proc = host.start_server(server_lines())
    result = await _run("server.sockets", host.context())
    assert result.status == "ok"
    assert result.evidence["pids"] == [proc.pid]


async def test_running_tcp_server_is_found_listening(host: ServerHost):
    proc = host.start_server([line.replace("proto udp", "proto tcp-server")
                              for line in server_lines()])
    result = await _run("server.sockets", host.context())
    assert result.status == "ok", result.summary
    assert result.evidence["proto"] == "tcp"
    assert result.evidence["pids"] == [proc.pid]


async def test_other_process_on_the_port_fails_naming_it(host: ServerHost):
    (host.workdir / "server.conf").write_text("\n".join(server_lines()) + "\n")
    with host.server.enter():
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with holder:
        holder.bind(("198.18.2.1", 1194))
        result = await _run("server.sockets", host.context())
    assert result.status == "fail"
    assert result.evidence["state"] == "held_by_other"
    assert result.evidence["on_port"][0]["address"] == "198.18.2.1"
    assert "ss -uanp sport = :1194" in result.fix


async def test_other_program_on_the_port_of_another_address_is_only_a_neighbour(
        host: ServerHost):
    host.add_client_ns()
    proc = host.start_server(server_lines(extra=["local 198.18.3.1"]))
    with host.server.enter():
        neighbour = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with neighbour:
        neighbour.bind(("198.18.2.1", 1194))
        result = await _run("server.sockets", host.context())
    assert result.status == "ok", result.summary
    assert result.evidence["pids"] == [proc.pid]
    assert {s["address"] for s in result.evidence["on_port"]} == {"198.18.2.1", "198.18.3.1"}


async def test_server_running_on_another_port_than_the_config_warns(host: ServerHost):
    running = [line.replace("port 1194", "port 1195") for line in server_lines()]
    host.start_server(running, name="old")
    (host.workdir / "server.conf").write_text("\n".join(server_lines()) + "\n")
    result = await _run("server.sockets", host.context())
    assert result.status == "warn"
    assert result.evidence["state"] == "not_running"
    assert result.evidence["vpn_sockets_elsewhere"][0]["port"] == 1195


# --- CRL --------------------------------------------------------------------------------------

async def test_expired_crl_fails_and_openvpn_refuses_every_client(host: ServerHost):
    _write_crl(host, datetime.now(UTC) - timedelta(days=1))
    server = host.start_server(server_lines(extra=["crl-verify crl.pem"]))
    client = host.start_client(host.add_client_ns())

    assert server.wait_for("VERIFY ERROR: depth=0, error=CRL has expired", 15), \
        server.text()[-3000:]
    result = await _run("server.crl", host.context())
    assert result.status == "fail"
    assert result.evidence["state"] == "expired"
    assert "easyrsa gen-crl" in result.fix and "openssl ca -gencrl" in result.fix
    assert "VERIFY ERROR: depth=0, error=CRL has expired" in result.explanation
    assert "Peer Connection Initiated" not in server.text()
    assert "Initialization Sequence Completed" not in client.text()


async def test_crl_expiring_within_30_days_warns(host: ServerHost):
    _write_crl(host, datetime.now(UTC) + timedelta(days=12))
    (host.workdir / "server.conf").write_text(
        "\n".join(server_lines(extra=["crl-verify crl.pem"])) + "\n")
    result = await _run("server.crl", host.context())
    assert result.status == "warn"
    assert result.evidence["state"] == "expires_soon"
    assert 11 <= result.evidence["days_left"] <= 12


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="trivpn-crl-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_crl_unreadable_after_the_user_drop_fails_and_openvpn_refuses_clients(
        host: ServerHost, shared_dir: Path):
    crl = shared_dir / "crl.pem"
    crl.write_bytes(_write_crl(host, datetime.now(UTC) + timedelta(days=90)).read_bytes())
    crl.chmod(0o644)
    server = host.start_server(server_lines(extra=[f"crl-verify {crl}", "user nobody",
                                                   "group nogroup", "persist-key",
                                                   "persist-tun"]))
    # A new CRL as easy-rsa writes it (mode 0600); a new mtime makes openvpn reload it.
    crl.write_bytes(_write_crl(host, datetime.now(UTC) + timedelta(days=91)).read_bytes())
    crl.chmod(0o600)
    os.utime(crl, (crl.stat().st_atime, crl.stat().st_mtime + 5))

    result = await _run("server.crl", host.context())
    host.start_client(host.add_client_ns())

    assert result.status == "fail"
    assert result.evidence["state"] == "unreadable_after_drop"
    assert result.evidence["blocked_at"] == str(crl)
    assert result.evidence["mode"] == "0o600"
    assert f"chmod 644 {crl}" in result.fix
    assert server.wait_for("VERIFY ERROR: CRL not loaded", 15), server.text()[-3000:]
    assert "CRL: cannot read" in server.text()
    assert "VERIFY ERROR: CRL not loaded" in result.explanation
    assert "Peer Connection Initiated" not in server.text()


# --- pool -------------------------------------------------------------------------------------

TWO_ADDRESSES = ["ifconfig 198.18.8.1 255.255.255.0", "ifconfig-pool 198.18.8.2 198.18.8.3",
                 'push "topology subnet"', 'push "route-gateway 198.18.8.1"']


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_pool_of_two_with_two_clients_is_exhausted(host: ServerHost, version: int):
    server = host.start_server(server_lines(pool=TWO_ADDRESSES, status_version=version,
                                            extra=["log server.log"]))
    for name in ("alice", "bob", "carol"):
        host.issue(name)
    host.start_client(host.add_client_ns(), cert="alice")
    host.start_client(host.add_client_ns(), cert="bob")
    host.wait_status("bob")
    host.wait_status("alice")

    result = await _run("server.pool", host.context())

    assert result.status == "fail", result.summary
    assert result.evidence["state"] == "exhausted"
    assert result.evidence["size"] == 2
    assert result.evidence["connected"] == 2
    assert result.evidence["status_version"] == version
    assert "ifconfig-pool" in result.fix
    if version == 2:  # the third client is refused with the line the explanation quotes
        host.start_client(host.add_client_ns(), cert="carol")
        assert server.wait_for(POOL_EMPTY + " carol/", 15), server.text()[-3000:]
        assert POOL_EMPTY in result.explanation
        again = await _run("server.pool", host.context())
        assert again.evidence["refused_in_log"][0]["client"] == "carol"


async def test_pool_with_room_is_ok(host: ServerHost):
    host.start_server(server_lines(pool=TWO_ADDRESSES))
    host.start_client(host.add_client_ns())
    host.wait_status("client1")
    result = await _run("server.pool", host.context())
    assert result.status == "ok"
    assert result.evidence["connected"] == 1


# --- duplicate-CN churn -----------------------------------------------------------------------

async def test_two_clients_with_one_common_name_are_reported_as_churn(host: ServerHost):
    server = host.start_server(server_lines(extra=["log server.log"]))
    host.start_client(host.add_client_ns())
    assert server.wait_for("Peer Connection Initiated", 10)
    host.start_client(host.add_client_ns())
    assert server.wait_for(DUPLICATE_CN_TEXT.format(cn="client1"), 15), server.text()[-3000:]

    result = await _run("server.churn", host.context())

    assert result.status == "fail", result.summary
    assert result.evidence["state"] == "duplicate_cn"
    (shared,) = result.evidence["duplicate_cn"]
    assert shared["common_name"] == "client1"
    assert shared["hosts"] == ["198.18.3.2", "198.18.4.2"]
    assert "duplicate-cn" in result.fix and "easyrsa build-client-full" in result.fix


async def test_duplicate_cn_allowed_is_not_churn(host: ServerHost):
    server = host.start_server(server_lines(extra=["log server.log", "duplicate-cn"]))
    host.start_client(host.add_client_ns())
    host.start_client(host.add_client_ns())
    host.wait_status("198.18.4.2")
    host.wait_status("198.18.3.2")
    result = await _run("server.churn", host.context())
    assert result.status == "ok", result.summary
    assert "will cause previous active sessions" not in server.text()


# --- forwarding, NAT, FORWARD -----------------------------------------------------------------

REDIRECT = ['push "redirect-gateway def1"']


async def test_no_masquerade_names_the_rule_for_the_uplink(host: ServerHost):
    host.server.enable_forwarding()
    host.start_server(server_lines(extra=REDIRECT))
    result = await _run("server.forwarding", host.context())
    assert result.status == "warn"
    assert result.evidence["state"] == "no_nat"
    assert (f"nft add rule ip nat postrouting ip saddr {POOL}/24 oifname \"{UPLINK_IF}\" "
            "masquerade") in result.fix
    assert f"iptables -t nat -A POSTROUTING -s {POOL}/24 -o {UPLINK_IF} -j MASQUERADE" \
        in result.fix


async def test_masquerade_on_the_wrong_interface_is_named(host: ServerHost):
    host.server.enable_forwarding()
    host.server.nft(masquerade("eth9"))
    host.start_server(server_lines(extra=REDIRECT))
    result = await _run("server.forwarding", host.context())
    assert result.status == "warn"
    assert result.evidence["state"] == "nat_mismatch"
    assert "eth9" in result.summary and UPLINK_IF in result.summary


async def test_masquerade_for_part_of_the_pool_is_named(host: ServerHost):
    host.server.enable_forwarding()
    host.server.nft(masquerade(UPLINK_IF, f"{POOL}/25"))
    host.start_server(server_lines(extra=REDIRECT))
    result = await _run("server.forwarding", host.context())
    assert result.status == "warn"
    assert "covers only part of the pool" in result.summary


async def test_forward_policy_drop_fails_naming_the_chain(host: ServerHost):
    host.server.enable_forwarding()
    host.server.nft(masquerade(UPLINK_IF))
    host.server.nft("table ip filter {\n chain FORWARD {\n"  # what iptables-nft creates
                    "  type filter hook forward priority 0; policy drop;\n }\n}\n")
    host.start_server(server_lines(extra=REDIRECT))
    result = await _run("server.forwarding", host.context())
    assert result.status == "fail"
    assert result.evidence["state"] == "forward_blocked"
    assert result.evidence["forward_rules"][0]["chain"] == "ip filter FORWARD"
    assert (f"nft insert rule ip filter FORWARD iifname \"tun0\" oifname \"{UPLINK_IF}\" "
            f"ip saddr {POOL}/24 accept") in result.fix


async def test_ipv6_forwarding_off_with_server_ipv6_fails(host: ServerHost):
    host.server.enable_forwarding()
    host.server.sysctl("net.ipv6.conf.all.forwarding", "0")
    host.server.nft(masquerade(UPLINK_IF))
    host.start_server(server_lines(extra=[*REDIRECT, "server-ipv6 2001:2:0:8::/64",
                                          'push "route-ipv6 2001:2:0:30::/64"']))
    result = await _run("server.forwarding", host.context())
    assert result.status == "fail"
    assert result.evidence["ipv6_forwarding"] == "0"
    assert "net.ipv6.conf.all.forwarding=1" in result.fix


async def test_client_restarting_every_few_seconds_is_reported(host: ServerHost):
    lines = [line.replace("keepalive 2 10", "keepalive 10 60")
             for line in server_lines(extra=["log server.log"])]
    server = host.start_server(lines)
    ns = host.add_client_ns()
    # The client ignores the pushed timers and restarts after 1 s without a packet.
    client = start_openvpn(ns, host.workdir, "flappy",
                           [*client_lines(3), 'pull-filter ignore "ping"', "ping-restart 1"])
    deadline = trio.current_time() + 20
    while server.text().count("Peer Connection Initiated") < CHURN_MIN_CONNECTS:
        assert trio.current_time() < deadline, server.text()[-3000:]
        await trio.sleep(0.2)

    result = await _run("server.churn", host.context())

    assert result.status == "warn", result.summary
    assert result.evidence["state"] == "restarting"
    (loop,) = result.evidence["restarting"]
    assert loop["common_name"] == "client1"
    assert loop["connects"] >= CHURN_MIN_CONNECTS
    assert loop["median_interval_s"] <= 5
    assert loop["hosts"] == ["198.18.3.2"]
    assert "Inactivity timeout (--ping-restart)" in client.text()
    assert "Inactivity timeout (--ping-restart)" in result.explanation


async def test_pool_held_by_fixed_persist_entries_is_exhausted_for_new_names(host: ServerHost):
    (host.workdir / "ipp.txt").write_text("alice,198.18.8.2,\nbob,198.18.8.3,\n")
    server = host.start_server(server_lines(pool=TWO_ADDRESSES, extra=[
        "log server.log", "ifconfig-pool-persist ipp.txt 0"]))

    result = await _run("server.pool", host.context())
    host.start_client(host.add_client_ns())  # client1: neither alice nor bob

    assert result.status == "fail", result.summary
    assert result.evidence["fixed_persist_entries"] == 2
    assert result.evidence["connected"] == 0
    assert "ifconfig-pool-persist" in result.summary
    assert f"from {host.workdir / 'ipp.txt'}" in result.fix
    assert server.wait_for(POOL_EMPTY + " client1/", 15), server.text()[-3000:]


async def test_trivpn_server_log_shows_the_same_churn(host: ServerHost):
    lines = server_lines(extra=["log server.log"])
    (host.workdir / "server.conf").write_text("\n".join(lines) + "\n")
    server = start_trivpn(host.server, host.workdir, "server", lines)
    assert server.wait_event("link_open", 15), server.text()[-3000:]
    host.start_client(host.add_client_ns())
    assert server.wait_event("peer_connected", 15), server.text()[-3000:]
    host.start_client(host.add_client_ns())
    assert server.wait_event("peer_disconnected", 15, reason="duplicate_cn"), \
        server.text()[-3000:]

    sockets = await _run("server.sockets", host.context())
    churn = await _run("server.churn", host.context())

    assert sockets.status == "ok" and sockets.evidence["pids"] == [server.pid]
    assert churn.status == "fail", churn.summary
    assert churn.evidence["duplicate_cn"][0]["hosts"] == ["198.18.3.2", "198.18.4.2"]


# --- client-config-dir consistency, with traffic ----------------------------------------------

@pytest.mark.parametrize("with_iroute", [True, False])
async def test_route_without_iroute_is_named_and_openvpn_drops_its_traffic(
        host: ServerHost, with_iroute: bool):
    (host.workdir / "ccd").mkdir()
    (host.workdir / "ccd" / "client1").write_text(
        f"iroute {LAN} 255.255.255.0\n" if with_iroute else "")
    host.start_server(server_lines(extra=["client-config-dir ccd", f"route {LAN} 255.255.255.0"]))
    client_ns = host.add_client_ns()
    client_ns.add_address("lo", "198.18.30.1/32")  # a host of the LAN behind client1
    client = host.start_client(client_ns)
    assert client.wait_for("Initialization Sequence Completed", 15), client.text()[-3000:]

    result = await _run("server.ccd", host.context())
    reached = ping(host.server, "198.18.30.1", count=1, timeout=3)

    if with_iroute:
        assert (result.status, reached) == ("ok", True), result.summary
    else:
        assert (result.status, reached) == ("warn", False), result.summary
        assert result.evidence["warnings"] == [
            f"{host.workdir / 'server.conf'}:{_line_of(host, 'route ')}: 'route {LAN} "
            "255.255.255.0' has no 'iroute' in any client file: no client owns that network"]
        assert "iroute NET MASK" in result.fix


def _line_of(host: ServerHost, prefix: str) -> int:
    lines = (host.workdir / "server.conf").read_text().splitlines()
    return next(i for i, line in enumerate(lines, start=1) if line.startswith(prefix))


async def test_forward_rule_missing_for_a_lan_behind_the_server_names_its_interface(
        host: ServerHost):
    lan = host.lab.add("lan")
    host.lab.veth(host.server, lan, "198.18.40.1/24", "198.18.40.2/24", a_ifname="lan0")
    lan.add_route(f"{POOL}/24", via="198.18.40.1")  # the LAN router's route back
    host.server.enable_forwarding()
    host.server.nft("table ip filter {\n chain FORWARD {\n"
                    "  type filter hook forward priority 0; policy drop;\n"
                    "  ct state established,related accept\n"
                    f"  iifname \"tun0\" oifname \"{UPLINK_IF}\" accept\n }}\n}}\n")
    host.start_server(server_lines(extra=['push "route 198.18.40.0 255.255.255.0"']))
    client_ns = host.add_client_ns()
    client = host.start_client(client_ns)
    assert client.wait_for("Initialization Sequence Completed", 15), client.text()[-3000:]
    assert not ping(client_ns, "198.18.40.2", count=1, timeout=2)

    result = await _run("server.forwarding", host.context())

    assert result.status == "fail", result.summary
    assert result.evidence["pushed_route_devices"] == {"198.18.40.0": "lan0"}
    assert result.evidence["forward_rules"][0]["out"] == "lan0"
    fix = result.fix.split("'")[1]
    assert fix.startswith('nft insert rule ip filter FORWARD iifname "tun0" oifname "lan0"')
    for command in fix.split("; "):  # the fix, applied as given, lets the traffic through
        host.server.run(command.split(), timeout=5)
    assert ping(client_ns, "198.18.40.2", count=1, timeout=5)
    assert (await _run("server.forwarding", host.context())).status == "ok"


async def test_missing_crl_fails_and_openvpn_refuses_to_start(host: ServerHost):
    lines = server_lines(extra=["crl-verify nothere.pem"])
    (host.workdir / "server.conf").write_text("\n".join(lines) + "\n")
    result = await _run("server.crl", host.context())
    server = start_openvpn(host.server, host.workdir, "server", lines)

    assert result.status == "fail" and result.evidence["state"] == "unreadable"
    assert server.wait_for("Options error: --crl-verify fails with", 10), server.text()
    assert "Options error: --crl-verify fails with" in result.explanation


async def test_crl_that_does_not_parse_fails_and_openvpn_refuses_every_client(
        host: ServerHost):
    (host.workdir / "crl.pem").write_text("not a CRL\n")
    server = host.start_server(server_lines(extra=["crl-verify crl.pem"]))
    host.start_client(host.add_client_ns())

    result = await _run("server.crl", host.context())

    assert result.status == "fail" and result.evidence["state"] == "unparsable"
    assert server.wait_for("VERIFY ERROR: CRL not loaded", 15), server.text()[-3000:]
    for quoted in ("CRL: cannot read CRL from file", "CRL: loaded 0 CRLs",
                   "VERIFY ERROR: CRL not loaded"):
        assert quoted in server.text() and quoted in result.explanation
