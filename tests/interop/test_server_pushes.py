"""What a trivpn server pushes and applies to itself, seen by real openvpn 2.6 clients and
compared with a real openvpn 2.6 server running the same config: ``push "dhcp-option ..."``
and the 2.6 ``push "dns ..."`` reach the client verbatim (its up script gets the same
foreign_option_N and dns_* variables), ``tcp-nodelay`` pushes ``socket-flags TCP_NODELAY``,
``sndbuf``/``rcvbuf`` size the server's socket, ``txqueuelen`` the server's device."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.serverkit import client_lines, ping, server_lines
from tests.interop.trivpnproc import start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

PUSHES = ['push "dhcp-option DNS 198.18.99.53"', 'push "dhcp-option DOMAIN example.test"',
          'push "dhcp-option DOMAIN-SEARCH search.test"',
          'push "dns server 1 address 198.18.99.54"', 'push "dns search-domains pushed.test"']
SERVER_EXTRA = [*PUSHES, "tcp-nodelay", "sndbuf 100000", "rcvbuf 120000", "txqueuelen 777"]


def _env(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def _client(lab: NetnsLab, srv: Netns, net: int, tmp_path: Path, name: str) -> OpenVpnProcess:
    cli = lab.add("cli")
    lab.veth(srv, cli, f"198.18.{net}.1/24", f"198.18.{net}.2/24")
    script = tmp_path / f"{name}-up.sh"
    script.write_text(f"#!/bin/sh\nenv > {tmp_path}/{name}.env\n")
    script.chmod(0o755)
    return start_openvpn(cli, tmp_path, name, client_lines(
        server_ip=f"198.18.{net}.1", extra=["script-security 2", f"up {script}", "verb 4"]))




def _pushed_reply(client: OpenVpnProcess) -> list[str]:
    match = re.search(r"PUSH: Received control message: 'PUSH_REPLY,([^']*)'", client.text())
    assert match is not None, client.text()[-3000:]
    return match.group(1).split(",")


@pytest.mark.directive("push", "dhcp-option", "dns", "tcp-nodelay", "sndbuf", "rcvbuf",
                       "txqueuelen")
def test_server_pushes_and_socket_settings_match_an_openvpn_server(
        lab: NetnsLab, tmp_path: Path) -> None:
    write_pki(tmp_path)
    ours_ns, theirs_ns = lab.add("srv"), lab.add("srv")
    ours = start_trivpn(ours_ns, tmp_path, "trivpn-server",
                        server_lines(link_ip="0.0.0.0", extra=SERVER_EXTRA))
    theirs = start_openvpn(theirs_ns, tmp_path, "openvpn-server",
                           server_lines(link_ip="0.0.0.0", extra=SERVER_EXTRA))
    assert ours.wait_event("link_open", timeout=10), ours.text()
    assert theirs.wait_for("Initialization Sequence Completed", 15), theirs.text()[-3000:]
    to_ours = _client(lab, ours_ns, 34, tmp_path, "to-trivpn")
    to_theirs = _client(lab, theirs_ns, 35, tmp_path, "to-openvpn")
    for client in (to_ours, to_theirs):
        assert client.wait_for("Initialization Sequence Completed", 20), \
            client.text()[-3000:] + ours.text()[-2000:]

    # the client's up script sees the same DNS settings from both servers
    env_ours, env_theirs = _env(tmp_path / "to-trivpn.env"), _env(tmp_path / "to-openvpn.env")
    dns_vars = sorted(k for k in env_theirs if k.startswith(("foreign_option_", "dns_")))
    assert dns_vars, env_theirs
    assert {k: env_ours.get(k) for k in dns_vars} == {k: env_theirs[k] for k in dns_vars}
    assert "dns_server_1_address_1" in dns_vars
    # the pushed options themselves, in the same order (per-client items aside)
    shared = [o for o in _pushed_reply(to_theirs)
              if o.split()[0] in ("dhcp-option", "dns", "socket-flags", "route-gateway",
                                  "topology", "ping", "ping-restart")]
    assert "socket-flags TCP_NODELAY" in shared
    for client in (to_ours, to_theirs):  # sndbuf/rcvbuf stay the server's own
        assert not [o for o in _pushed_reply(client) if o.startswith(("sndbuf", "rcvbuf"))]
    assert [o for o in _pushed_reply(to_ours) if o.split()[0] in
            ("dhcp-option", "dns", "socket-flags", "route-gateway", "topology", "ping",
             "ping-restart")] == shared

    # sndbuf/rcvbuf on the server's socket, txqueuelen on its device: as openvpn sets them
    for ns in (ours_ns, theirs_ns):
        sockets = ns.run(["ss", "-uamnH", "sport", "= :1194"]).stdout
        assert "rb240000" in sockets and "tb200000" in sockets, sockets  # the kernel doubles
        links = ns.run(["ip", "-o", "link", "show", "type", "tun"]).stdout
        assert "qlen 777" in links, links


@pytest.mark.directive("topology")
def test_topology_p2p_server_pushes_what_openvpn_pushes_and_carries_traffic(
        lab: NetnsLab, tmp_path: Path) -> None:
    write_pki(tmp_path)
    ours_ns, theirs_ns = lab.add("srv"), lab.add("srv")
    ours = start_trivpn(ours_ns, tmp_path, "trivpn-server",
                        server_lines(link_ip="0.0.0.0", topology="p2p"))
    theirs = start_openvpn(theirs_ns, tmp_path, "openvpn-server",
                           server_lines(link_ip="0.0.0.0", topology="p2p"))
    assert ours.wait_event("link_open", timeout=10), ours.text()
    assert theirs.wait_for("Initialization Sequence Completed", 15), theirs.text()[-3000:]
    to_ours = _client(lab, ours_ns, 36, tmp_path, "to-trivpn")
    to_theirs = _client(lab, theirs_ns, 37, tmp_path, "to-openvpn")
    for client in (to_ours, to_theirs):
        assert client.wait_for("Initialization Sequence Completed", 20), \
            client.text()[-3000:] + ours.text()[-2000:]
    kinds = ("ifconfig", "route", "route-gateway", "topology")
    shared = [o for o in _pushed_reply(to_theirs) if o.split()[0] in kinds]
    assert "topology p2p" in shared
    assert [o for o in _pushed_reply(to_ours) if o.split()[0] in kinds] == shared
    local = shared[[o.split()[0] for o in shared].index("ifconfig")].split()[1]
    assert ping(ours_ns, local), to_ours.text()[-2000:]  # the server reaches its client
