"""``trivpn demo``: the whole demo as a subprocess (end to end, ``--keep``/``--stop``, SIGTERM),
and its pure parts.

Every run must leave no ``tvpn-demo-<pid>-*`` namespace, no process mentioning its directory
and no directory behind.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_netns
from trivpn.config import parse_config
from trivpn.demo import lab as demo_lab
from trivpn.demo import runner
from trivpn.demo.configs import DemoAddresses, client_config, server_config
from trivpn.demo.lab import LabError, check_demo_address

DEMO = [sys.executable, "-m", "trivpn", "demo"]
RUN_TIMEOUT = 60
_WORKDIR = re.compile(r"throwaway PKI in (\S+)/pki")


def _workdir(output: str) -> Path:
    match = _WORKDIR.search(output)
    assert match is not None, output
    return Path(match.group(1))


def _namespaces(pid: int) -> list[str]:
    return [n for n in demo_lab.demo_namespaces() if n.startswith(f"tvpn-demo-{pid}-")]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


def _assert_nothing_left(pid: int, workdir: Path) -> None:
    assert _namespaces(pid) == []
    assert _processes_mentioning(str(workdir)) == []
    assert not workdir.exists()


@pytest.fixture
def stop_kept_demos() -> Iterator[None]:
    """Whatever happens in the test, remove demos left running with --keep."""
    require_netns()
    yield
    subprocess.run([*DEMO, "--stop"], capture_output=True, timeout=30, check=False)


@pytest.mark.integration
def test_demo_pings_through_the_tunnel_runs_the_doctor_and_removes_everything():
    require_netns()
    proc = subprocess.Popen(DEMO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, output
    for step in ("==> creating namespaces tvpn-demo-", "==> starting server",
                 "==> starting client", "==> ping -c 3 198.18.8.1", "3 received",
                 "tunnel round trip:", "==> trivpn doctor client.conf", "tunnel.traffic",
                 "Verdict:", '"event": "tun_configured"', "==> tearing down"):
        assert step in output, (step, output)
    _assert_nothing_left(proc.pid, _workdir(output))


@pytest.mark.integration
def test_keep_leaves_the_tunnel_up_until_stop_removes_it(stop_kept_demos: None):
    kept = subprocess.run([*DEMO, "--keep"], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, check=False)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    workdir = _workdir(kept.stdout)
    client_ns = re.search(r"ip netns exec (tvpn-demo-\d+-cli) bash", kept.stdout)
    assert client_ns is not None, kept.stdout
    assert "trivpn demo --stop" in kept.stdout
    assert "tearing down" not in kept.stdout

    ping = subprocess.run(["ip", "netns", "exec", client_ns.group(1), "ping", "-c", "1", "-W",
                           "2", "198.18.8.1"], capture_output=True, text=True, timeout=10,
                          check=False)
    assert ping.returncode == 0, ping.stdout

    stopped = subprocess.run([*DEMO, "--stop"], capture_output=True, text=True, timeout=30,
                             check=False)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert f"deleting namespace {client_ns.group(1)}" in stopped.stdout
    demo_pid = int(client_ns.group(1).split("-")[2])
    _assert_nothing_left(demo_pid, workdir)


@pytest.mark.integration
def test_sigterm_during_the_demo_tears_everything_down():
    require_netns()
    proc = subprocess.Popen(DEMO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            seen.append(line)
            if not line or line.startswith("==> starting client"):
                break
        assert seen[-1].startswith("==> starting client"), "".join(seen)
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(seen) + rest
    assert proc.returncode == runner.EXIT_INTERRUPTED, output
    assert "interrupted" in output and "==> tearing down" in output
    _assert_nothing_left(proc.pid, _workdir(output))


@pytest.mark.integration
def test_stop_with_nothing_running_says_so(stop_kept_demos: None):
    done = subprocess.run([*DEMO, "--stop"], capture_output=True, text=True, timeout=30,
                          check=False)
    assert done.returncode == 0
    assert "no demo is running" in done.stdout


def test_without_root_the_demo_explains_that_it_needs_root(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    problem = runner.preflight()
    assert problem is not None and "needs root" in problem


def test_generated_configs_parse_as_a_server_and_a_client_in_the_demo_space(tmp_path: Path):
    addr = DemoAddresses()
    server = parse_config(server_config(addr), tmp_path / "server.conf")
    client = parse_config(client_config(addr), tmp_path / "client.conf")
    space = ipaddress.IPv4Network("198.18.0.0/15")
    assert server.role == "server" and client.role == "client"
    assert server.port == 1194 and server.proto == "udp" and server.dev == "tun"
    assert server.server is not None and server.server.network.subnet_of(space)
    assert server.keepalive is not None
    assert (server.keepalive.interval, server.keepalive.timeout) == (10, 120)
    assert server.tls_crypt is not None and client.tls_crypt is not None
    assert server.persist_key and server.persist_tun and server.dh == "none"
    assert client.remote_cert_tls == "server" and client.nobind
    assert [(r.host, r.port) for r in client.remotes] == [(addr.server_ip, 1194)]
    assert ipaddress.ip_address(addr.server_tunnel_ip) in server.server.network


@pytest.mark.parametrize("cidr", ["198.16.0.1/24", "198.20.0.1/24", "203.0.113.1/24",
                                  "fd00::1/64"])
def test_addresses_outside_198_18_0_0_15_are_refused(cidr: str):
    with pytest.raises(LabError):
        check_demo_address(cidr)


@pytest.mark.parametrize(("text", "rtt"), [
    ("rtt min/avg/max/mdev = 0.727/0.788/0.858/0.053 ms\n", 0.788),
    ("3 packets transmitted, 0 received, 100% packet loss\n", None),
])
def test_ping_rtt_is_the_average_of_the_summary_line(text: str, rtt: float | None):
    assert runner.ping_rtt(text) == rtt


def test_read_events_skips_lines_that_are_not_json_objects(tmp_path: Path):
    log = tmp_path / "client.log"
    log.write_text('{"event": "a"}\nTraceback (most recent call last):\n[1]\n{"event": "b"}\n')
    assert [e["event"] for e in runner.read_events(log)] == ["a", "b"]
    assert runner.read_events(tmp_path / "missing.log") == []
