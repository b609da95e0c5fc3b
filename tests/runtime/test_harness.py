"""The shared namespace harness (tests/netns.py) cleans up after itself."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import require_netns
from tests.netns import NetnsLab, NetnsPair


def test_pair_endpoints_reach_each_other(netns_pair: NetnsPair) -> None:
    out = netns_pair.a.run(["ip", "-o", "-4", "addr", "show", "dev", netns_pair.veth.a_ifname])
    assert "198.18.0.1/24" in out.stdout
    route = netns_pair.a.run(["ip", "route", "get", netns_pair.veth.b_ip]).stdout
    assert f"dev {netns_pair.veth.a_ifname}" in route


def test_namespaces_and_processes_are_gone_after_teardown() -> None:
    require_netns()
    with NetnsLab() as lab:
        ns = lab.add("x")
        proc = ns.spawn(["sleep", "30"])
        name = ns.name
        assert os.path.exists(f"/run/netns/{name}")
    assert proc.returncode is not None
    assert not os.path.exists(f"/run/netns/{name}")


def test_teardown_happens_when_the_body_fails() -> None:
    require_netns()
    names: list[str] = []
    with pytest.raises(RuntimeError, match="test body failed"), NetnsLab() as lab:
        names.append(lab.add("y").name)
        raise RuntimeError("test body failed")
    assert not os.path.exists(f"/run/netns/{names[0]}")


def test_process_ignoring_sigterm_is_killed() -> None:
    require_netns()
    with NetnsLab() as lab:
        proc = lab.add("z").spawn(["sh", "-c", "trap '' TERM; sleep 30"])
        # give sh time to install the trap, so SIGTERM really is ignored
        lab.namespaces[0].run(["sleep", "0.2"])
        lab.kill_processes(grace=0.3)
    assert proc.returncode == -9


@pytest.mark.parametrize("cidr", ["198.16.0.1/24", "198.20.0.1/24", "203.0.113.1/24"])
def test_addresses_outside_test_space_are_refused(cidr: str) -> None:
    require_netns()
    with NetnsLab() as lab:
        a, b = lab.add("a"), lab.add("b")
        with pytest.raises(ValueError, match="outside the test address space"):
            lab.veth(a, b, cidr, "198.18.0.2/24")


def test_run_reports_failure_with_output(netns_pair: NetnsPair) -> None:
    with pytest.raises(AssertionError, match="exited 3"):
        netns_pair.a.run(["sh", "-c", "echo oops >&2; exit 3"])
    assert netns_pair.a.run(["sh", "-c", "exit 3"], check=False).returncode == 3


def test_run_is_bounded_in_time(netns_pair: NetnsPair) -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        netns_pair.a.run(["sleep", "5"], timeout=0.2)
