"""``stale-routes-check N [T]`` on a ``trivpn run`` TAP server with a real openvpn 2.6 tap
client: the MAC learned from the client is forgotten after N idle seconds and learned again
from its next frame; and OpenVPN refuses the directive outside server mode, as trivpn does."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.openvpn import openvpn_output, start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, ping, server_lines
from tests.interop.trivpnproc import start_trivpn
from tests.netns import NetnsLab
from trivpn.config import ConfigError, load_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary"),
              pytest.mark.directive("stale-routes-check")]


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_mac_idle_for_the_ageing_time_is_forgotten_and_learned_again(
        lab: NetnsLab, tmp_path: Path) -> None:
    srv, cli = lab.add("srv"), lab.add("cli")
    for key in ("all", "default"):  # no IPv6 chatter on the client's tap: it stays idle
        cli.sysctl(f"net.ipv6.conf.{key}.disable_ipv6", "1")
    lab.veth(srv, cli, "198.18.43.1/24", "198.18.43.2/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(
        link_ip="0.0.0.0", dev="tap", extra=["stale-routes-check 2 1"]))
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", client_lines(server_ip="198.18.43.1",
                                                                 dev="tap"))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        client.text()[-2000:] + server.text()[-2000:]
    assert ping(cli, SERVER_VPN_IP)
    # traffic for longer than the ageing time keeps the route
    before = server.count("stale_route_removed")
    cli.run(["ping", "-c", "14", "-i", "0.25", "-W", "1", SERVER_VPN_IP], timeout=10)
    time.sleep(0.3)
    assert server.count("stale_route_removed") == before, server.text()[-3000:]
    # idle: it goes, and comes back with the next frame
    idle_from = time.monotonic()
    assert _wait(lambda: server.count("stale_route_removed") > before, 8), \
        server.text()[-3000:]
    assert time.monotonic() - idle_from >= 1.5  # not long before the ageing time (2 s)
    removed = [e for e in server.events() if e.get("event") == "stale_route_removed"][-1]
    assert removed["cn"] == "client1"
    assert ping(cli, SERVER_VPN_IP)  # the next frame teaches the MAC again


def test_stale_routes_check_outside_server_mode_is_refused_as_openvpn_refuses_it(
        lab: NetnsLab, tmp_path: Path) -> None:
    write_pki(tmp_path)
    lines = [*client_lines(server_ip="198.18.44.1"), "stale-routes-check 10"]
    (tmp_path / "c.conf").write_text("\n".join(lines) + "\n")
    out = openvpn_output(lab, tmp_path, ["--config", "c.conf"])
    theirs = "--stale-routes-check requires --mode server"
    assert f"Options error: {theirs}" in out, out[-2000:]
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "c.conf")
    assert theirs in str(info.value)
