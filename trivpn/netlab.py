"""Primitives shared by everything that builds throwaway network-namespace labs: the demo, the
benchmark and the test harness.

Each lab names its namespaces ``<prefix><creator pid>-…`` so that namespaces left behind by a
process that died can be found and deleted later, and only ever assigns addresses from
198.18.0.0/15 (the benchmarking range, never routed on the internet).
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from pathlib import Path

LAB_SPACE = ipaddress.ip_network("198.18.0.0/15")
LAB_SPACE6 = ipaddress.ip_network("2001:2::/48")  # RFC 5180 benchmarking, the IPv6 twin
NETNS_DIR = Path("/run/netns")


def in_lab_space(cidr: str) -> bool:
    """Is ``cidr`` an interface address inside 198.18.0.0/15 or (IPv6) 2001:2::/48?"""
    iface = ipaddress.ip_interface(cidr)
    if iface.version == 6:
        return iface.ip in LAB_SPACE6
    return iface.ip in LAB_SPACE


def pid_alive(pid: int) -> bool:
    """Does process ``pid`` exist and has it not exited (a zombie counts as gone)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def reap_stale_namespaces(prefix: str) -> list[str]:
    """Delete ``<prefix><pid>-*`` namespaces whose creating process no longer exists."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)-")
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    reaped = []
    for name in names:
        match = pattern.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid != os.getpid() and not pid_alive(pid):
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True,
                           timeout=10)
            reaped.append(name)
    return reaped
