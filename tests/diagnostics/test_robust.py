"""``trivpn doctor`` stays right when things go wrong around it: a config with lines in error
still gets its network checks; closed stays closed under ICMP rate limiting; no check blames a
key when nothing answers on the port. Real openvpn servers in namespaces the tests create."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_netns, require_openvpn
from tests.diagnostics.scenariokit import (
    SERVER_IP,
    Scenario,
    client_lines,
    scenario,
    server_lines,
)
from trivpn.commands.doctor import build_context
from trivpn.diagnostics.model import CheckResult
from trivpn.diagnostics.registry import all_checks
from trivpn.diagnostics.runner import run_checks
from trivpn.runtime.netns import enter_netns

pytestmark = pytest.mark.integration


@pytest.fixture
def sc(tmp_path: Path) -> Iterator[Scenario]:
    require_netns()
    require_openvpn()
    with scenario(tmp_path) as made:
        yield made


async def _doctor(sc: Scenario, config: Path, *only: str) -> dict[str, CheckResult]:
    ctx = build_context(config, 10.0, sc.client.name)
    report = await run_checks(all_checks(), ctx, only=list(only))
    return {r.id: r for r in report.checks}


async def test_a_bad_config_line_is_listed_and_the_port_is_still_probed(sc: Scenario):
    proc = sc.start_openvpn(server_lines("tls-crypt"))
    assert proc.wait_for("Initialization Sequence Completed"), proc.text()
    lines = client_lines("tls-crypt")
    lines.insert(4, "ping-restart soon")  # line 5
    config = sc.client_config(lines)

    results = await _doctor(sc, config, "config.syntax", "port.reachable")

    syntax = results["config.syntax"]
    assert syntax.status == "fail"
    assert syntax.evidence["line"] == 5
    assert [e.startswith(f"{config}:5:") for e in syntax.evidence["errors"]] == [True]
    assert f"Edit {config}:5" in syntax.fix
    port = results["port.reachable"]
    assert port.status == "ok", port.summary
    assert port.evidence["state"] == "open"
    assert port.evidence["reply_kind"] == "openvpn_reset"


def _use_up_icmp_credit(sc: Scenario, port: int = 1194, count: int = 12) -> None:
    """Send ``count`` datagrams to the closed port, as earlier doctor runs would, so that the
    server's per-client ICMP credit (a burst of six) is gone before the doctor starts."""
    with enter_netns(sc.client.name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        for _ in range(count):
            sock.sendto(b"x", (SERVER_IP, port))


async def test_closed_udp_port_stays_closed_under_icmp_rate_limiting(sc: Scenario):
    sc.server.sysctl("net.ipv4.icmp_ratelimit", "3000")  # one ICMP error per 3 s per client
    config = sc.client_config(client_lines("tls-crypt"))
    _use_up_icmp_credit(sc)

    # each run waits out the exhausted credit (about 3 s) and spends the one error it gets, so
    # every run starts as rate-limited as the first: three in a row show it stays closed
    states = [(await _doctor(sc, config, "port.reachable"))["port.reachable"].evidence["state"]
              for _ in range(3)]

    assert states == ["closed"] * 3


async def test_with_nothing_listening_tls_keys_blames_no_key(sc: Scenario):
    sc.server.sysctl("net.ipv4.icmp_ratelimit", "3000")
    config = sc.client_config(client_lines("tls-crypt"))
    _use_up_icmp_credit(sc)

    results = await _doctor(sc, config, "port.reachable", "tls.keys", "nat.reply_source")

    assert results["port.reachable"].evidence["state"] == "closed"
    keys = results["tls.keys"]
    assert keys.status == "skip", keys.summary
    assert "nothing answered on the port" in keys.summary
    assert "differs" not in keys.summary and "mismatch" not in keys.summary
    assert keys.evidence.get("cause") is None
