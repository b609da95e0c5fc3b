"""A client reaching the trivpn server over IPv6 link-local: its source address is a 4-tuple
sockaddr whose scope id names the interface (recvfrom leaves ``%zone`` out of the host), which
the cookie, the peer key, the logs and the status file must all cope with: the peer is shown
as ``[fe80::…%veth0]:port``.

Layout: ``srv`` and ``cli`` joined by a veth (198.18.0.1/.2 plus the kernel's fe80:: link-local
addresses, DAD off so they are usable at once). The trivpn server listens on ``::`` (dual stack);
a real openvpn 2.6 client connects to the server's link-local address with ``%ifname``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, ping, server_lines
from tests.interop.trivpnproc import start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]


def link_local(ns: Netns, ifname: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = ns.run(["ip", "-6", "-o", "addr", "show", "dev", ifname, "scope", "link"]).stdout
        if "inet6" in out and "tentative" not in out:
            return out.split("inet6")[1].split()[0].split("/")[0]
        assert time.monotonic() < deadline, out
        time.sleep(0.1)


@pytest.mark.directive("status")
def test_openvpn_client_over_ipv6_link_local_connects_and_is_listed(lab: NetnsLab,
                                                                    tmp_path: Path):
    srv, cli = lab.add("srv"), lab.add("cli")
    for ns in (srv, cli):
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0")
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")
    veth = lab.veth(srv, cli, "198.18.0.1/24", "198.18.0.2/24")
    server_ll = link_local(srv, veth.a_ifname)
    client_ll = link_local(cli, veth.b_ifname)
    write_pki(tmp_path)
    status = tmp_path / "status.log"
    lines = [line for line in server_lines(link_ip="::", extra=[f"status {status} 1",
                                                                "status-version 2"])
             if not line.startswith("proto ")]
    server = start_trivpn(srv, tmp_path, "server", ["proto udp6", *lines])
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", [
        line.replace("remote 198.18.0.1 1194", f"remote {server_ll}%{veth.b_ifname} 1194")
            .replace("proto udp", "proto udp6")
        for line in client_lines(server_ip="198.18.0.1")])
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        (client.text()[-3000:], server.text()[-3000:])
    connected = server.wait_event("peer_connected", timeout=5)
    assert connected is not None, server.text()
    assert connected["peer"].startswith(f"[{client_ll}%{veth.a_ifname}]:")
    assert ping(cli, SERVER_VPN_IP), server.text()[-3000:]
    time.sleep(1.5)
    rows = [line.split(",") for line in status.read_text().splitlines()
            if line.startswith("CLIENT_LIST,")]
    assert [row[2] for row in rows] == [connected["peer"]]
    assert not server.count("packet_error") and not server.count("peer_error")
