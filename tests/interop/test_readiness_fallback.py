"""The data path's fallback wait, run with real traffic (``trivpn/runtime/readiness.py``).

trivpn's UDP data path waits in its own ``epoll_wait`` when trio is idle; that direct wait reads
trio internals (pyproject.toml pins the trio range). Where those internals are not as expected
it waits through trio's scheduler instead. Production machines take the direct path, so this
test runs a trivpn client and server with the fallback forced (``direct_wait=False``): a trio
upgrade that loses the fast path lands on code that CI has run.

Namespaces ``srv`` (198.18.0.1) and ``cli`` (198.18.0.2), UDP, tunnel 198.18.8.0/24.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.openvpn import write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, ping, server_lines, transfer
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns, NetnsLab

pytestmark = pytest.mark.integration

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"
LAUNCHER = Path(__file__).with_name("fallback_run.py")
TWO_MB = 2 * 1024 * 1024


def _start_fallback(ns: Netns, workdir: Path, name: str, lines: list[str]) -> TrivpnProcess:
    conf, log = workdir / f"{name}.conf", workdir / f"{name}.log"
    conf.write_text("\n".join(lines) + "\n")
    proc = ns.spawn([sys.executable, str(LAUNCHER), str(conf), str(log)])
    return TrivpnProcess(log, proc.pid)


@pytest.mark.parametrize(("start", "direct"), [(_start_fallback, False), (start_trivpn, True)],
                         ids=["fallback_forced", "trivpn_run"])
def test_client_and_server_carry_traffic_on_either_wait(
        lab: NetnsLab, tmp_path: Path, start: Callable[..., TrivpnProcess],
        direct: bool) -> None:
    """Forced: the fallback moves real traffic. Plain ``trivpn run`` on the supported trio
    takes the direct wait (it would not if trio's internals changed under readiness.py)."""
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    write_pki(tmp_path)
    server = start(srv, tmp_path, "server", server_lines(link_ip=SERVER_IP, extra=["verb 4"]))
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start(cli, tmp_path, "client", client_lines(server_ip=SERVER_IP, extra=["verb 4"]))
    assert client.wait_event("tun_configured", timeout=20), \
        (client.text()[-3000:], server.text()[-3000:])
    connected = server.wait_event("peer_connected", timeout=5, cn="client1")
    assert connected is not None, server.text()[-3000:]
    assert server.wait_event("data_path_wait", timeout=5, direct=direct), server.text()[-3000:]
    assert client.wait_event("data_path_wait", timeout=5, direct=direct), client.text()[-3000:]
    assert ping(cli, SERVER_VPN_IP), (client.text()[-2000:], server.text()[-2000:])
    assert ping(srv, connected["vpn_ip"]), server.text()[-2000:]
    sent, received = transfer(srv, SERVER_VPN_IP, cli, TWO_MB)
    assert sent == received and received.endswith(f" {TWO_MB}"), server.text()[-3000:]
    assert server.count("data_path_wait") == 1 and client.count("data_path_wait") == 1
