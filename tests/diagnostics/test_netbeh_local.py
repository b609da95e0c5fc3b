"""``netbeh.keepalive`` (config and this host's conntrack, no traffic) and how opt-in checks
are selected by the runner."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.diagnostics.doctorkit import CLIENT, SERVER, context, write_config
from tests.netns import NetnsLab
from trivpn.diagnostics import checks_netbeh
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok
from trivpn.diagnostics.registry import all_checks
from trivpn.diagnostics.runner import select_checks

KEEPALIVE = next(c for c in checks_netbeh.CHECKS if c.id == "netbeh.keepalive")


async def _keepalive(tmp_path: Path, text: str, netns: str | None = None) -> CheckResult:
    return await KEEPALIVE.run(context(write_config(tmp_path, text), netns=netns))


@pytest.mark.parametrize("extra", ["keepalive 10 60\n", "ping 10\nping-restart 60\n", ""])
async def test_usual_or_no_keepalive_in_a_client_config_is_ok(tmp_path: Path,
                                                             extra: str) -> None:
    result = await _keepalive(tmp_path, CLIENT + extra)
    assert result.status == "ok", result


async def test_client_ping_longer_than_common_nat_timeouts_warns(tmp_path: Path) -> None:
    result = await _keepalive(tmp_path, CLIENT + "keepalive 60 300\n")
    assert result.status == "warn"
    assert result.evidence["ping"] == 60
    assert "test.conf line 12" in result.explanation
    assert "keepalive 10 60" in result.fix


async def test_server_default_keepalive_is_ok_and_a_long_one_warns(tmp_path: Path) -> None:
    assert (await _keepalive(tmp_path, SERVER)).status == "ok"
    result = await _keepalive(tmp_path, SERVER.replace("keepalive 10 60", "keepalive 45 180"))
    assert result.status == "warn"
    assert "every client (it is pushed as 'ping')" in result.explanation


async def test_server_without_any_keepalive_warns(tmp_path: Path) -> None:
    result = await _keepalive(tmp_path, SERVER.replace("keepalive 10 60\n", ""))
    assert result.status == "warn"
    assert "Add 'keepalive 10 60' to test.conf" in result.fix
    pushed = SERVER.replace("keepalive 10 60\n", 'push "ping 10"\nping 10\n')
    assert (await _keepalive(tmp_path, pushed)).status == "ok"


async def test_tcp_only_configs_are_not_judged_on_udp_timeouts(tmp_path: Path) -> None:
    result = await _keepalive(tmp_path, SERVER.replace("proto udp", "proto tcp-server")
                              .replace("keepalive 10 60\n", "keepalive 60 300\n"))
    assert result.status == "ok", result


def _nat_host(lab: NetnsLab, udp_timeout: int, *, masquerade: bool) -> str:
    ns = lab.add("nat")
    if masquerade:
        ns.nft("table ip nat {\n chain post {\n  type nat hook postrouting priority 100;\n"
               "  masquerade\n }\n}\n")
    ns.sysctl("net.netfilter.nf_conntrack_udp_timeout", str(udp_timeout))
    ns.sysctl("net.netfilter.nf_conntrack_udp_timeout_stream", str(udp_timeout))
    return ns.name


async def test_this_host_nat_forgetting_flows_before_the_ping_warns(
        netns_lab: NetnsLab, tmp_path: Path) -> None:
    netns = _nat_host(netns_lab, 5, masquerade=True)
    result = await _keepalive(tmp_path, CLIENT + "keepalive 10 60\n", netns)
    assert result.status == "warn", result
    assert result.evidence["conntrack"]["udp_timeout"] == "5"
    assert "masquerade" in result.evidence["stateful_rules"][0]
    assert "keepalive 2 60" in result.fix
    assert "nf_conntrack_udp_timeout_stream" in result.fix


async def test_short_conntrack_timeout_without_nat_or_stateful_filter_is_ok(
        netns_lab: NetnsLab, tmp_path: Path) -> None:
    netns = _nat_host(netns_lab, 5, masquerade=False)
    result = await _keepalive(tmp_path, CLIENT + "keepalive 10 60\n", netns)
    assert result.status == "ok", result


async def test_default_conntrack_timeouts_with_nat_are_ok(netns_lab: NetnsLab,
                                                         tmp_path: Path) -> None:
    netns = netns_lab.add("nat")
    netns_lab.namespaces[-1].nft("table ip nat {\n chain post {\n  type nat hook postrouting "
                                 "priority 100;\n  masquerade\n }\n}\n")
    result = await _keepalive(tmp_path, CLIENT + "keepalive 10 60\n", netns.name)
    assert result.status == "ok", result


def _fixed(cid: str, *, opt_in: bool = False, depends_on: tuple[str, ...] = ()) -> Check:
    async def run(ctx: DoctorContext) -> CheckResult:
        return ok(cid, "done")
    return Check(cid, run, depends_on=depends_on, opt_in=opt_in)


def test_opt_in_check_is_left_out_of_the_default_run() -> None:
    checks = (_fixed("a"), _fixed("slow", opt_in=True))
    assert [c.id for c in select_checks(checks, "client")] == ["a"]


def test_opt_in_check_runs_when_named_with_its_dependencies() -> None:
    checks = (_fixed("a"), _fixed("slow", opt_in=True, depends_on=("a",)))
    assert [c.id for c in select_checks(checks, "client", ["slow"])] == ["a", "slow"]


def test_opt_in_check_is_not_pulled_in_as_a_dependency() -> None:
    checks = (_fixed("slow", opt_in=True), _fixed("b", depends_on=("slow",)))
    assert [c.id for c in select_checks(checks, "client", ["b"])] == ["b"]


def test_nat_timeout_is_registered_as_the_only_opt_in_netbeh_check() -> None:
    netbeh = [c for c in all_checks() if c.id.startswith("netbeh.")]
    assert [c.id for c in netbeh if c.opt_in] == ["netbeh.nat_timeout"]
    assert "netbeh.nat_timeout" not in [c.id for c in select_checks(all_checks(), "client")]
