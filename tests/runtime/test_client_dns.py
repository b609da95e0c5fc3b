"""A client applies DNS from its config and the push, reverts it at exit and undoes a killed
client's changes at the next start (trivpn/runtime/dns.py over the in-memory backend; the
resolved and resolvconf backends have their own tests, docs/dns.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from tests.protocol.sessionkit import SUBNET_PUSH
from tests.runtime.memorykit import Lab, SessionPeer
from trivpn.logging import get_logger
from trivpn.protocol.dns import DnsPlan
from trivpn.protocol.push import parse_pushed_options
from trivpn.runtime.dns import DnsManager, MemoryDnsBackend, plan_client_dns

DNS_PUSH = (*SUBNET_PUSH, "dhcp-option DNS 198.18.8.53", "dhcp-option DOMAIN example.test")


def lab_with_dns(tmp_path: Path, extra: str = "", push: tuple[str, ...] = DNS_PUSH,
                 backend: MemoryDnsBackend | None = None) -> tuple[Lab, MemoryDnsBackend]:
    backend = backend or MemoryDnsBackend()
    lab = Lab.create(tmp_path, "dev tun0\n" + extra, peer=SessionPeer(push=push))
    lab.client.dns = DnsManager(backend, get_logger(), state_dir=tmp_path / "run")
    return lab, backend


def servers(plan: DnsPlan) -> list[str]:
    return [str(a) for a in plan.servers]


@pytest.mark.directive("dhcp-option")
async def test_pushed_dhcp_option_dns_is_applied_to_the_tunnel_and_reverted_at_exit(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab, backend = lab_with_dns(tmp_path)
    state = tmp_path / "run" / "dns-tun0.json"
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        plan = backend.applied["tun0"]
        assert servers(plan) == ["198.18.8.53"]
        assert plan.search_domains == ("example.test",)
        assert plan.default_route is False
        recorded = json.loads(state.read_text())
        assert recorded["pid"] == os.getpid() and recorded["backend"] == "memory"
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    assert backend.applied == {}
    assert backend.history == [("apply", "tun0"), ("revert", "tun0")]
    assert not state.exists()
    assert lab.log.names().index("dns_reverted") < lab.log.names().index("tun_closed")


@pytest.mark.directive("dns", "redirect-gateway")
async def test_config_dns_and_redirect_gateway_send_every_name_to_the_tunnel(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab, backend = lab_with_dns(
        tmp_path, "dns server 0 address 198.18.8.99\ndns search-domains corp.test\n",
        push=(*DNS_PUSH, "redirect-gateway def1"))
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        plan = backend.applied["tun0"]
        assert servers(plan) == ["198.18.8.99"]  # dns beats dhcp-option DNS
        assert plan.search_domains == ("example.test", "corp.test")
        assert plan.routing_domains == (".",) and plan.default_route is True
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()


@pytest.mark.directive("dns")
async def test_a_pushed_dns_server_replaces_the_config_server_of_its_priority(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab, backend = lab_with_dns(
        tmp_path, "dns server 0 address 198.18.8.99\ndns server 5 address 198.18.8.98\n",
        push=(*SUBNET_PUSH, "dns server 0 address 198.18.8.1"))
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        assert servers(backend.applied["tun0"]) == ["198.18.8.1", "198.18.8.98"]
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()


@pytest.mark.directive("route-nopull")
async def test_route_nopull_keeps_pushed_dns_away(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab, backend = lab_with_dns(tmp_path, "route-nopull\n")
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        assert backend.history == []
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()


async def test_a_failing_backend_is_logged_and_the_tunnel_stays_up(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab, _ = lab_with_dns(tmp_path, backend=MemoryDnsBackend(fail="resolver refused"))
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        await lab.roundtrip(1)
        assert not (tmp_path / "run" / "dns-tun0.json").exists()
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    [failed] = [e for e in lab.log.events() if e["event"] == "dns_not_applied"]
    assert "resolver refused" in str(failed["reason"]) and failed["servers"] == ["198.18.8.53"]
    assert lab.log.count("dns_reverted") == 0


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_a_killed_clients_dns_is_reverted_at_the_next_start(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    run = tmp_path / "run"
    run.mkdir()
    stale = run / "dns-tun9.json"
    stale.write_text(json.dumps({"pid": _dead_pid(), "backend": "memory", "device": "tun9",
                                 "record": {"device": "tun9"}}))
    live = run / "dns-tun8.json"  # another running trivpn's (this process is alive)
    live.write_text(json.dumps({"pid": os.getppid(), "backend": "memory", "device": "tun8",
                                "record": {"device": "tun8"}}))
    backend = MemoryDnsBackend(applied={"tun9": DnsPlan(), "tun8": DnsPlan()})
    lab, _ = lab_with_dns(tmp_path, backend=backend)
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        assert backend.history[0] == ("revert", "tun9")
        assert not stale.exists() and live.exists()
        assert set(backend.applied) == {"tun8", "tun0"}
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    assert lab.log.count("dns_stale_reverted") == 1


def test_the_client_plan_overlays_the_push_on_the_config(tmp_path: Path):
    from tests.runtime.memorykit import write_client_conf
    options = write_client_conf(tmp_path, "dhcp-option DOMAIN-SEARCH local.test\n"
                                          "redirect-gateway def1\n")
    pushed = parse_pushed_options(["dhcp-option DNS 198.18.8.53",
                                   "dhcp-option DOMAIN example.test"])
    plan = plan_client_dns(options, pushed)
    assert servers(plan) == ["198.18.8.53"]
    assert plan.search_domains == ("example.test", "local.test")
    assert plan.routing_domains == (".",)
    assert plan_client_dns(options, None).servers == ()


def test_a_record_whose_pid_now_belongs_to_another_process_is_stale(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "dns-tun5.json").write_text(json.dumps({
        "pid": os.getppid(), "started": "1", "backend": "memory", "device": "tun5",
        "record": {"device": "tun5"}}))  # a live PID, but not started when the record was
    backend = MemoryDnsBackend()
    DnsManager(backend, get_logger(), state_dir=run).recover()
    assert backend.history == [("revert", "tun5")]
    assert not (run / "dns-tun5.json").exists()


async def test_dns_mode_off_leaves_dns_alone_and_says_so(
        tmp_path: Path, autojump_clock: trio.testing.MockClock):
    lab = Lab.create(tmp_path, "dev tun0\n", peer=SessionPeer(push=DNS_PUSH))
    lab.client.dns = DnsManager.for_mode("off", get_logger(), state_dir=tmp_path / "run")
    async with trio.open_nursery() as nursery:
        await lab.start(nursery)
        await lab.wait_for(lab.tunnel_up, 30)
        assert await lab.stop() == 0
        nursery.cancel_scope.cancel()
    [skipped] = [e for e in lab.log.events() if e["event"] == "dns_not_applied"]
    assert skipped["level"] == "info" and skipped["reason"] == "--dns-mode off"
    assert skipped["servers"] == ["198.18.8.53"]
    assert not (tmp_path / "run").exists()
