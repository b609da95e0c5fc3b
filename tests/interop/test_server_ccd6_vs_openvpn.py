"""IPv6 in client-config-dir files (``ifconfig-ipv6-push``, ``iroute-ipv6``) with real
``openvpn`` 2.6 clients, against the ``trivpn run`` server and, with the same files, the real
``openvpn`` server: every test runs on both, so what trivpn does is checked against OpenVPN.

One lab per server kind (namespaces; 198.18.0.0/15 and 2001:2::/48 only)::

    srv (server 198.18.0.1; tunnel 198.18.8.0/24 and 2001:2:0:8::/64)
     |-- fix   (openvpn client "fix",   198.18.0.2): ifconfig-ipv6-push 2001:2:0:8::77/64
     |-- plain (openvpn client "plain", 198.18.1.2): ifconfig-push 198.18.8.50 only (its
     |                                              IPv6 comes from the pool)
     |-- site  (openvpn client "site",  198.18.2.2): iroute-ipv6 2001:2:0:40::/64
     |           |-- lan (2001:2:0:40::2)
     |-- quiet (openvpn client "quiet", 198.18.3.2): ifconfig-ipv6-push, push-remove of it

The server config has ``route-ipv6 2001:2:0:40::/64`` (the kernel route to the site's LAN),
pushes it to the clients (``site``'s file removes it from its own push) and
``client-to-client``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_netns, require_openvpn
from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.serverkit import client_lines, issue_client, ping, server_lines
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab
from trivpn.netlab import in_lab_space

pytestmark = pytest.mark.integration

NET6, SERVER_VPN6 = "2001:2:0:8::/64", "2001:2:0:8::1"
FIX_VPN6 = "2001:2:0:8::77"
LAN6, SITE_LAN6, LAN_HOST6 = "2001:2:0:40::/64", "2001:2:0:40::1", "2001:2:0:40::2"
PLAIN_IP = "198.18.8.50"
QUIET_VPN6 = "2001:2:0:8::88"
CCD = {
    # no /BITS and no REMOTE: /64 and the server's tunnel address (options.c)
    "fix": f"ifconfig-ipv6-push {FIX_VPN6}\n",
    "plain": f"ifconfig-push {PLAIN_IP} 255.255.255.0\n",
    # no /BITS: /64 (the LAN host is reached only if so)
    "site": 'iroute-ipv6 2001:2:0:40::\npush-remove "route-ipv6 2001:2:0:40"\n',
    "quiet": f'ifconfig-ipv6-push {QUIET_VPN6}/64\npush-remove "ifconfig-ipv6"\n',
}
# what OpenVPN 2.6 logs for a fixed IPv4 client of a server with an IPv6 pool
# (multi.c multi_select_virtual_addr())
OPENVPN_NO_IPV6 = ("MULTI_sva: WARNING: if --ifconfig-push is used for IPv4, automatic IPv6 "
                   "assignment from --ifconfig-ipv6-pool does not work")


@dataclass
class Lab:
    kind: str
    workdir: Path
    ns: dict[str, Netns]
    server: TrivpnProcess | OpenVpnProcess
    clients: dict[str, OpenVpnProcess]

    def push_reply(self, name: str) -> str:
        found = re.search(r"PUSH: Received control message: '(PUSH_REPLY,[^']*)'",
                          self.clients[name].text())
        assert found is not None, self.clients[name].text()[-3000:]
        return found.group(1)

    def server_text(self) -> str:
        return self.server.text()[-3000:]


def _add6(ns: Netns, ifname: str, cidr: str) -> None:
    assert in_lab_space(cidr), cidr
    ns.ip("addr", "add", cidr, "dev", ifname, "nodad")


@pytest.fixture(scope="module", params=["trivpn", "openvpn"])
def ccd6_lab(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_netns()
    require_openvpn()
    kind = str(request.param)
    workdir = tmp_path_factory.mktemp(f"ccd6-{kind}")
    pki = write_pki(workdir)
    (workdir / "ccd").mkdir()
    for name, text in CCD.items():
        issue_client(pki, name)
        (workdir / "ccd" / name).write_text(text)
    with NetnsLab() as lab:
        ns = {n: lab.add(n) for n in ("srv", "fix", "plain", "site", "lan", "quiet")}
        lab.veth(ns["srv"], ns["fix"], "198.18.0.1/24", "198.18.0.2/24")
        for i, name in ((1, "plain"), (2, "site"), (3, "quiet")):
            lab.veth(ns["srv"], ns[name], f"198.18.{i}.1/24", f"198.18.{i}.2/24")
            ns[name].add_route("198.18.0.0/24", via=f"198.18.{i}.1")
        veth = lab.veth(ns["site"], ns["lan"], "198.18.30.1/24", "198.18.30.2/24")
        _add6(ns["site"], veth.a_ifname, f"{SITE_LAN6}/64")
        _add6(ns["lan"], veth.b_ifname, f"{LAN_HOST6}/64")
        ns["lan"].ip("-6", "route", "add", "default", "via", SITE_LAN6)
        ns["site"].sysctl("net.ipv6.conf.all.forwarding", "1")
        lines = server_lines(link_ip="198.18.0.1", extra=[
            f"server-ipv6 {NET6}", "client-config-dir ccd", "client-to-client",
            f"route-ipv6 {LAN6}", f'push "route-ipv6 {LAN6}"'])
        server: TrivpnProcess | OpenVpnProcess
        if kind == "trivpn":
            server = start_trivpn(ns["srv"], workdir, "server", lines)
            assert server.wait_event("link_open", timeout=10), server.text()
        else:
            server = start_openvpn(ns["srv"], workdir, "server", lines)
            assert server.wait_for("Initialization Sequence Completed", 20), server.text()
        clients = {}
        for name in CCD:  # one after the other: which pool entry each gets is then known
            client = clients[name] = start_openvpn(ns[name], workdir, name, client_lines(
                server_ip="198.18.0.1", cert=name, extra=["verb 4", "auth-retry none"]))
            assert client.wait_for("Initialization Sequence Completed", timeout=20), \
                (kind, name, client.text()[-3000:], server.text()[-3000:])
        yield Lab(kind, workdir, ns, server, clients)


@pytest.mark.directive("ifconfig-ipv6-push")
def test_openvpn_client_gets_its_fixed_ipv6_with_the_servers_address_as_remote(ccd6_lab: Lab):
    reply = ccd6_lab.push_reply("fix")
    assert f"ifconfig-ipv6 {FIX_VPN6}/64 {SERVER_VPN6}" in reply, reply
    assert "ifconfig 198.18.8." in reply  # its IPv4 from the pool
    assert ping(ccd6_lab.ns["fix"], SERVER_VPN6), ccd6_lab.server_text()
    assert ping(ccd6_lab.ns["srv"], FIX_VPN6), ccd6_lab.server_text()
    if isinstance(ccd6_lab.server, TrivpnProcess):
        connected = ccd6_lab.server.wait_event("peer_connected", timeout=5, cn="fix")
        assert connected is not None and connected["vpn_ip6"] == FIX_VPN6


@pytest.mark.directive("ifconfig-push", "server-ipv6")
def test_a_fixed_ipv4_client_without_ifconfig_ipv6_push_gets_an_ipv6_of_the_pool(ccd6_lab: Lab):
    # OpenVPN logs a warning that it would not, and then pushes one anyway (multi.c: the
    # pool entry is taken before the client's file is read); trivpn does the same
    reply = ccd6_lab.push_reply("plain")
    assert f"ifconfig {PLAIN_IP} 255.255.255.0" in reply, reply
    # fix took entry 0 (its IPv6 replaced by its own), so plain is given entry 1's IPv6
    assert "ifconfig-ipv6 2001:2:0:8::1001/64 2001:2:0:8::1," in reply, reply
    if isinstance(ccd6_lab.server, OpenVpnProcess):
        # (no ping here: OpenVPN gave the same IPv6 to site, next test)
        assert OPENVPN_NO_IPV6 in ccd6_lab.server.text()
    else:
        assert ping(ccd6_lab.ns["plain"], SERVER_VPN6), ccd6_lab.server_text()
        assert ping(ccd6_lab.ns["srv"], "2001:2:0:8::1001"), ccd6_lab.server_text()


@pytest.mark.directive("ifconfig-push", "server-ipv6")
def test_the_pool_ipv6_of_a_fixed_ipv4_client_is_not_given_to_the_next_client(ccd6_lab: Lab):
    # OpenVPN gives the entry back to the pool at once (multi.c multi_select_virtual_addr()),
    # so the next pool client gets the same IPv6 address (and the server then routes it to
    # that client only); trivpn keeps the entry while plain is connected
    site = ccd6_lab.push_reply("site")
    if isinstance(ccd6_lab.server, OpenVpnProcess):
        assert "ifconfig-ipv6 2001:2:0:8::1001/64" in site, site
    else:
        assert "ifconfig-ipv6 2001:2:0:8::1002/64" in site, site


@pytest.mark.directive("iroute-ipv6", "route-ipv6")
def test_ipv6_lan_behind_a_client_is_reached_from_the_servers_side(ccd6_lab: Lab):
    assert f"route-ipv6 {LAN6}" not in ccd6_lab.push_reply("site")  # its file removed it
    assert ping(ccd6_lab.ns["srv"], LAN_HOST6), (ccd6_lab.server_text(),
                                                 ccd6_lab.clients["site"].text()[-2000:])
    assert ping(ccd6_lab.ns["lan"], SERVER_VPN6)


@pytest.mark.directive("iroute-ipv6", "client-to-client")
def test_ipv6_lan_behind_a_client_is_reached_from_another_client(ccd6_lab: Lab):
    assert f"route-ipv6 {LAN6}" in ccd6_lab.push_reply("fix")
    assert ping(ccd6_lab.ns["fix"], LAN_HOST6), ccd6_lab.server_text()
    assert ping(ccd6_lab.ns["lan"], FIX_VPN6)


@pytest.mark.directive("push-remove", "ifconfig-ipv6-push")
def test_push_remove_ifconfig_ipv6_withholds_even_a_fixed_ipv6(ccd6_lab: Lab):
    reply = ccd6_lab.push_reply("quiet")
    assert "ifconfig-ipv6" not in reply and "ifconfig 198.18.8." in reply, reply
