"""client-config-dir on the ``trivpn run`` server with real ``openvpn`` 2.6 clients.

One lab for the module (namespaces, in 198.18.0.0/15 only)::

    hq (198.18.20.2) -- srv (trivpn server, 198.18.0.1; tunnel 198.18.8.0/24)
                         |-- site (openvpn client "site", 198.18.0.2) -- lan (198.18.30.2)
                         |-- road (openvpn client "road", 198.18.1.2)
                         |-- lean (openvpn client "lean", 198.18.2.2; refused ones too)

The server runs with ``client-config-dir``, ``ccd-exclusive``, ``client-to-client``, ``route
198.18.30.0 255.255.255.0`` and pushes routes to hq's and the site's LAN. ``site``'s file has
``iroute 198.18.30.0 255.255.255.0`` (site-to-site) and ``push-remove`` of its own LAN's route;
``road``'s a fixed ``ifconfig-push`` and an extra ``push``; ``lean``'s ``push-reset``;
``mallory``'s ``disable``; ``nobody`` has no file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_netns, require_openvpn
from tests.interop.openvpn import OpenVpnProcess, start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, issue_client, ping, server_lines
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = pytest.mark.integration

LAN_HOST, HQ_HOST = "198.18.30.2", "198.18.20.2"
ROAD_IP = "198.18.8.77"
CCD = {
    "site": 'iroute 198.18.30.0 255.255.255.0\npush-remove "route 198.18.30"\n',
    "road": f'ifconfig-push {ROAD_IP} 255.255.255.0\npush "route 198.18.50.0 255.255.255.0"\n',
    "lean": 'push-reset\npush "topology subnet"\npush "route-gateway 198.18.8.1"\n',
    "mallory": "disable\n",
}


@dataclass
class Lab:
    workdir: Path
    ns: dict[str, Netns]
    server: TrivpnProcess
    clients: dict[str, OpenVpnProcess]

    def push_reply(self, name: str) -> str:
        found = re.search(r"PUSH: Received control message: '(PUSH_REPLY,[^']*)'",
                          self.clients[name].text())
        assert found is not None, self.clients[name].text()[-3000:]
        return found.group(1)

    def routes(self, name: str) -> str:
        return self.ns[name].run(["ip", "-4", "route", "show"]).stdout


def _client(ns: Netns, workdir: Path, name: str) -> OpenVpnProcess:
    return start_openvpn(ns, workdir, name, client_lines(
        server_ip="198.18.0.1", cert=name, extra=["verb 4", "auth-retry none"]))


@pytest.fixture(scope="module")
def ccd_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    require_netns()
    require_openvpn()
    workdir = tmp_path_factory.mktemp("ccd")
    pki = write_pki(workdir)
    for name in ("site", "road", "lean", "mallory", "nobody"):
        issue_client(pki, name)
    (workdir / "ccd").mkdir()
    for name, text in CCD.items():
        (workdir / "ccd" / name).write_text(text)
    with NetnsLab() as lab:
        ns = {n: lab.add(n) for n in ("srv", "hq", "site", "lan", "road", "lean")}
        lab.veth(ns["srv"], ns["site"], "198.18.0.1/24", "198.18.0.2/24")
        for i, name in ((1, "road"), (2, "lean")):
            lab.veth(ns["srv"], ns[name], f"198.18.{i}.1/24", f"198.18.{i}.2/24")
            ns[name].add_route("198.18.0.0/24", via=f"198.18.{i}.1")
        lab.veth(ns["srv"], ns["hq"], "198.18.20.1/24", f"{HQ_HOST}/24")
        ns["hq"].add_route("default", via="198.18.20.1")
        lab.veth(ns["site"], ns["lan"], "198.18.30.1/24", f"{LAN_HOST}/24")
        ns["lan"].add_route("default", via="198.18.30.1")
        ns["srv"].enable_forwarding()
        ns["site"].enable_forwarding()
        server = start_trivpn(ns["srv"], workdir, "server", server_lines(
            link_ip="198.18.0.1", extra=[
                "client-config-dir ccd", "ccd-exclusive", "client-to-client",
                "route 198.18.30.0 255.255.255.0",
                'push "route 198.18.30.0 255.255.255.0"',
                'push "route 198.18.20.0 255.255.255.0"']))
        assert server.wait_event("link_open", timeout=10), server.text()
        clients = {name: _client(ns[name], workdir, name)
                   for name in ("site", "road", "lean")}
        for name, client in clients.items():
            assert client.wait_for("Initialization Sequence Completed", timeout=20), \
                (name, client.text()[-3000:], server.text()[-3000:])
        yield Lab(workdir, ns, server, clients)


@pytest.mark.directive("client-config-dir", "ifconfig-push", "push")
def test_openvpn_client_gets_its_fixed_address_and_its_ccd_push(ccd_lab: Lab):
    connected = ccd_lab.server.wait_event("peer_connected", timeout=5, cn="road")
    assert connected is not None and connected["vpn_ip"] == ROAD_IP
    assert f"ifconfig {ROAD_IP} 255.255.255.0" in ccd_lab.push_reply("road")
    assert "198.18.50.0/24" in ccd_lab.routes("road")
    assert ping(ccd_lab.ns["road"], SERVER_VPN_IP)
    assert ping(ccd_lab.ns["srv"], ROAD_IP)


@pytest.mark.directive("iroute", "route")
def test_lan_behind_a_client_is_reached_from_the_servers_side(ccd_lab: Lab):
    assert "198.18.30.0/24" in ccd_lab.routes("srv")  # the server config's route
    assert ping(ccd_lab.ns["hq"], LAN_HOST), (ccd_lab.server.text()[-3000:],
                                              ccd_lab.clients["site"].text()[-2000:])
    assert ping(ccd_lab.ns["lan"], HQ_HOST)


@pytest.mark.directive("iroute", "client-to-client")
def test_lan_behind_a_client_is_reached_from_another_client(ccd_lab: Lab):
    assert "198.18.30.0/24" in ccd_lab.routes("road")
    assert ping(ccd_lab.ns["road"], LAN_HOST), ccd_lab.server.text()[-3000:]
    assert ping(ccd_lab.ns["lan"], ROAD_IP)


@pytest.mark.directive("push-remove")
def test_push_remove_drops_the_sites_own_lan_route_from_its_push(ccd_lab: Lab):
    reply = ccd_lab.push_reply("site")
    assert "route 198.18.30.0" not in reply
    assert "route 198.18.20.0 255.255.255.0" in reply and "ping 2" in reply
    assert "route 198.18.30.0 255.255.255.0" in ccd_lab.push_reply("road")


@pytest.mark.directive("push-reset")
def test_push_reset_drops_the_inherited_push_list(ccd_lab: Lab):
    reply = ccd_lab.push_reply("lean")
    assert "topology subnet" in reply and "route-gateway 198.18.8.1" in reply
    for gone in ("route 198.18.20.0", "route 198.18.30.0", "ping 2", "ping-restart"):
        assert gone not in reply, reply
    assert "ifconfig 198.18.8." in reply  # the address is not part of the push list


@pytest.mark.directive("disable")
def test_disable_refuses_an_openvpn_client(ccd_lab: Lab):
    client = _client(ccd_lab.ns["lean"], ccd_lab.workdir, "mallory")
    assert client.wait_for("AUTH_FAILED", timeout=20), client.text()[-3000:]
    refused = ccd_lab.server.wait_event("ccd_refused", timeout=5, cn="mallory")
    assert refused is not None and "disable" in refused["reason"]


@pytest.mark.directive("ccd-exclusive")
def test_ccd_exclusive_refuses_an_openvpn_client_without_a_file(ccd_lab: Lab):
    client = _client(ccd_lab.ns["lean"], ccd_lab.workdir, "nobody")
    assert client.wait_for("AUTH_FAILED", timeout=20), client.text()[-3000:]
    refused = ccd_lab.server.wait_event("ccd_refused", timeout=5, cn="nobody")
    assert refused is not None and "does not exist" in refused["reason"]


@pytest.mark.directive("ifconfig-pool", "ifconfig")
def test_explicit_pool_without_server_directive_serves_an_openvpn_client(
        lab: NetnsLab, tmp_path: Path, openvpn_binary: None):
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, "198.18.0.1/24", "198.18.0.2/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", [
        "mode server", "tls-server", "dev tun", "proto udp", "local 198.18.0.1", "port 1194",
        "ca ca.crt", "cert server.crt", "key server.key", "dh none", "topology subnet",
        "ifconfig 198.18.8.1 255.255.255.0", "ifconfig-pool 198.18.8.100 198.18.8.110",
        'push "topology subnet"', 'push "route-gateway 198.18.8.1"', "keepalive 2 20",
        "remote-cert-tls client", "verb 3"])
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", client_lines(server_ip="198.18.0.1"))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        (client.text()[-3000:], server.text()[-3000:])
    connected = server.wait_event("peer_connected", timeout=5, cn="client1")
    assert connected is not None and connected["vpn_ip"] == "198.18.8.100", server.text()
    assert ping(cli, SERVER_VPN_IP) and ping(srv, "198.18.8.100")
