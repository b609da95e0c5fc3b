"""management-client-auth past the first connect, side by side: a real openvpn 2.6 server
("theirs") and a ``trivpn run`` server ("ours") with the same config, each with a real openvpn
2.6 client that renegotiates every 2 s (``reneg-sec 2``) and a management client. What OpenVPN
2.6 does (manage.c, management_connection_established(), management_notify_client_needing_auth(),
management_notify_client_close(), man_client_kill()), checked here on the binary:

* ``>CLIENT:ADDRESS,CID,...`` for its addresses and iroutes, then ``>CLIENT:ESTABLISHED,CID``
  and the client's environment once it is connected;
* ``>CLIENT:REAUTH,CID,KID`` with its environment and password at each renegotiation; the
  renegotiated key carries no data until the answer (the client's packets are dropped);
  ``client-deny`` then sends ``AUTH_FAILED,<client reason>``;
* ``client-kill CID`` sends RESTART (the client reconnects: a new CID) and
  ``>CLIENT:DISCONNECT,CID`` follows.

Lab (198.18.0.0/15 only): per side i (0 theirs, 1 ours) srv 198.18.6i.1 -- cli 198.18.6i.2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.serverkit import (
    SERVER_VPN_IP,
    client_lines,
    ping,
    server_lines,
    start_side_server,
)
from tests.interop.test_server_auth import _creds, _Management
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import Netns, NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SIDES = ("theirs", "ours")
# values that differ by nature between the two servers (process, ports, clock, paths)
VARIES = {"config", "daemon_pid", "daemon_start_time", "daemon_log_redirect", "time_unix",
          "time_ascii", "untrusted_port", "trusted_port", "untrusted_ip", "trusted_ip",
          "local_1", "remote_1"}


@dataclass
class Side:
    srv: Netns
    cli: Netns
    server: TrivpnProcess | OpenVpnProcess
    client: OpenVpnProcess
    mgmt: _Management


def _start(lab: NetnsLab, tmp_path: Path, who: str, i: int, reneg: int = 2,
           server_reneg: int | None = None) -> Side:
    srv, cli = lab.add(f"srv{who[0]}"), lab.add(f"cli{who[0]}")
    lab.veth(srv, cli, f"198.18.6{i}.1/24", f"198.18.6{i}.2/24")
    ccd = tmp_path / "ccd"
    ccd.mkdir(exist_ok=True)
    (ccd / "client1").write_text("iroute 198.18.9.0 255.255.255.0\n"
                                 "iroute-ipv6 2001:2:0:9::/64\n")
    lines = server_lines(link_ip=f"198.18.6{i}.1", extra=[
        "management 127.0.0.1 7505", "management-client-auth", "hand-window 5",
        "server-ipv6 2001:2:0:8::/64", "client-config-dir ccd",
        *([f"reneg-sec {server_reneg}"] if server_reneg is not None else [])])
    server = start_side_server(srv, tmp_path, who, lines)
    mgmt = _Management(srv, 7505)
    assert mgmt.line().startswith(">INFO:")
    client = start_openvpn(cli, tmp_path, f"client-{who}", client_lines(
        server_ip=f"198.18.6{i}.1", extra=[
            f"auth-user-pass {_creds(tmp_path, who, 'alice', 's3cret')}", f"reneg-sec {reneg}",
            "auth-retry none"]))
    return Side(srv, cli, server, client, mgmt)


def _notification(mgmt: _Management, kind: str) -> tuple[list[str], dict[str, str]]:
    """The next ``>CLIENT:KIND,...`` line's fields and its environment."""
    while not (line := mgmt.line()).startswith(f">CLIENT:{kind},"):
        pass
    fields = line.split(",")[1:]
    env: dict[str, str] = {}
    while (line := mgmt.line()) != ">CLIENT:ENV,END":
        key, _, value = line.removeprefix(">CLIENT:ENV,").partition("=")
        env[key] = value
    return fields, env


def _connect(side: Side) -> str:
    (cid, kid), _ = _notification(side.mgmt, "CONNECT")
    side.mgmt.send(f"client-auth-nt {cid} {kid}")
    assert side.mgmt.answer_until("SUCCESS:") == "SUCCESS: client-auth command succeeded"
    assert side.client.wait_for("Initialization Sequence Completed", 20), \
        side.server.text()[-3000:]
    return cid


def _same_names(theirs: dict[str, str], ours: dict[str, str]) -> None:
    assert set(ours) == set(theirs), set(ours) ^ set(theirs)
    for key in set(theirs) - VARIES:
        assert ours[key] == theirs[key], key


@pytest.mark.directive("management-client-auth")
def test_established_and_reauth_notifications_carry_what_openvpn_sends(
        lab: NetnsLab, tmp_path: Path) -> None:
    write_pki(tmp_path)
    got: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
    for i, who in enumerate(SIDES):
        side = _start(lab, tmp_path, who, i)
        cid = _connect(side)
        addresses = []
        while not (line := side.mgmt.line()).startswith(">CLIENT:ESTABLISHED,"):
            if line.startswith(">CLIENT:ADDRESS,"):
                addresses.append(line)
        assert addresses == [  # the same on both sides
            f">CLIENT:ADDRESS,{cid},198.18.8.2,1", f">CLIENT:ADDRESS,{cid},2001:2:0:8::1000,1",
            f">CLIENT:ADDRESS,{cid},198.18.9.0/255.255.255.0,0",
            f">CLIENT:ADDRESS,{cid},2001:2:0:9::/64,0"], (who, addresses)
        assert line == f">CLIENT:ESTABLISHED,{cid}"
        established = {}
        while (line := side.mgmt.line()) != ">CLIENT:ENV,END":
            key, _, value = line.removeprefix(">CLIENT:ENV,").partition("=")
            established[key] = value
        (reauth_cid, kid), reauth = _notification(side.mgmt, "REAUTH")
        assert reauth_cid == cid
        side.mgmt.send(f"client-auth-nt {cid} {kid}")
        assert side.mgmt.answer_until("SUCCESS:") == "SUCCESS: client-auth command succeeded"
        assert ping(side.cli, SERVER_VPN_IP), side.server.text()[-3000:]
        got[who] = (established, reauth)
    (established, reauth) = got["theirs"]
    assert established["n_clients"] == "1" and established["username"] == "alice"
    assert "password" not in established and reauth["password"] == "s3cret"
    assert established["ifconfig_pool_remote_ip"] == "198.18.8.2"
    _same_names(established, got["ours"][0])
    _same_names(reauth, got["ours"][1])


@pytest.mark.directive("management-client-auth")
@pytest.mark.parametrize("who", SIDES)
def test_a_renegotiated_key_carries_no_data_until_reauth_is_answered(
        lab: NetnsLab, tmp_path: Path, who: str) -> None:
    write_pki(tmp_path)
    # The server renegotiates (reneg-sec 4), the client never does on its own: a client timer
    # could start the next key before the answer lands on a loaded machine, and openvpn then
    # refuses the late answer ("key IDs out of sync")
    side = _start(lab, tmp_path, who, SIDES.index(who), reneg=0, server_reneg=4)
    cid = _connect(side)
    (_, kid), _ = _notification(side.mgmt, "REAUTH")
    # the client moves to the new key within a moment; from then on nothing gets through
    deadline = time.monotonic() + 3
    while ping(side.cli, SERVER_VPN_IP, count=1, timeout=1):
        assert time.monotonic() < deadline, "data still flows on a key held for reauth"
    side.mgmt.send(f"client-auth-nt {cid} {kid}")
    assert side.mgmt.answer_until("SUCCESS:") == "SUCCESS: client-auth command succeeded"
    assert ping(side.cli, SERVER_VPN_IP), side.server.text()[-3000:]


@pytest.mark.directive("management-client-auth")
@pytest.mark.parametrize("who", SIDES)
def test_client_deny_on_reauth_sends_auth_failed_with_the_client_reason(
        lab: NetnsLab, tmp_path: Path, who: str) -> None:
    write_pki(tmp_path)
    side = _start(lab, tmp_path, who, SIDES.index(who), reneg=4)
    cid = _connect(side)
    (_, kid), _ = _notification(side.mgmt, "REAUTH")
    side.mgmt.send(f'client-deny {cid} {kid} "not any more" "session revoked"')
    assert side.mgmt.answer_until("SUCCESS:") == "SUCCESS: client-deny command succeeded"
    assert side.client.wait_for("AUTH_FAILED,session revoked", 15), side.client.text()[-2000:]
    (gone,), env = _notification(side.mgmt, "DISCONNECT")
    assert gone == cid
    assert {"bytes_received", "bytes_sent", "time_duration", "username"} <= set(env)
    assert "password" not in env


@pytest.mark.directive("management-client-auth")
@pytest.mark.parametrize("who", SIDES)
def test_client_kill_restarts_the_client_which_comes_back_under_a_new_cid(
        lab: NetnsLab, tmp_path: Path, who: str) -> None:
    write_pki(tmp_path)
    side = _start(lab, tmp_path, who, SIDES.index(who))
    cid = _connect(side)
    side.mgmt.send(f"client-kill {cid}")
    assert side.mgmt.answer_until("SUCCESS:") == "SUCCESS: client-kill command succeeded"
    assert side.client.wait_for("server-pushed-connection-reset", 10), side.client.text()[-2000:]
    seen: dict[str, list[str]] = {}
    while len(seen) < 2:  # the old client's DISCONNECT and the new CONNECT, in either order
        line = side.mgmt.line()
        if line.startswith((">CLIENT:CONNECT,", ">CLIENT:DISCONNECT,")):
            kind, _, fields = line.removeprefix(">CLIENT:").partition(",")
            seen[kind] = fields.split(",")
    assert seen["DISCONNECT"] == [cid] and seen["CONNECT"][0] != cid
    side.mgmt.send(f"client-auth-nt {seen['CONNECT'][0]} {seen['CONNECT'][1]}")
    assert side.mgmt.answer_until("SUCCESS:") == "SUCCESS: client-auth command succeeded"
    side.mgmt.send("client-kill 99")
    assert side.mgmt.answer_until("ERROR:") == "ERROR: client-kill command failed"
