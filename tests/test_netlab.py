"""Primitives shared by the demo, the benchmark and the test harness."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import require_netns
from trivpn.netlab import in_lab_space, pid_alive, reap_stale_namespaces


@pytest.mark.parametrize(("cidr", "ok"), [
    ("198.18.0.1/24", True), ("198.19.255.254/30", True), ("198.20.0.1/24", False),
    ("198.17.255.1/24", False), ("203.0.113.1/24", False), ("fd00::1/64", False),
    ("2001:2:0:ff::1/64", True), ("2001:2:0:7::1000/64", True), ("2001:3::1/64", False),
    ("2001:2:ff::1/64", False),  # third group 0xff: outside the /48
    ("2001:db8::1/64", False),
])
def test_only_198_18_0_0_15_and_2001_2_0_0_48_are_lab_space(cidr, ok):
    assert in_lab_space(cidr) is ok


def test_a_running_process_is_alive_and_an_exited_one_is_not():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert pid_alive(proc.pid)
    finally:
        proc.kill()
    proc.wait(timeout=10)
    assert not pid_alive(proc.pid)


def test_zombie_children_count_as_gone():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    for _ in range(200):
        with open(f"/proc/{proc.pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        subprocess.run(["sleep", "0.02"], check=True)
    assert not pid_alive(proc.pid)
    proc.wait(timeout=10)


def test_namespaces_of_dead_creators_are_reaped_and_live_ones_kept():
    require_netns()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=10)
    stale, mine = f"tvlabtest-{dead.pid}-x", f"tvlabtest-{os.getpid()}-y"
    for name in (stale, mine):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert reap_stale_namespaces("tvlabtest-") == [stale]
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout
        assert stale not in listed and mine in listed
    finally:
        for name in (stale, mine):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
