"""Shared test helpers.

Integration tests need root, network namespaces and the openvpn binary. Outside CI they skip
when those are missing; when ``CI`` is set, a missing requirement is a failure instead, so CI can
never pass by skipping the tests that matter.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

pytest_plugins = ["tests.netns"]

# Every `trivpn run` a test starts leaves the host's DNS alone unless the test asks for a DNS
# backend itself (--dns-mode): a pushed dhcp-option must never reach the resolver of the
# machine running the tests (docs/dns.md).
os.environ.setdefault("TRIVPN_DNS_MODE", "off")


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI requires this test to run, but: {reason}")
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        _unavailable("needs root")


def require_netns() -> None:
    require_root()
    if shutil.which("ip") is None:
        _unavailable("needs iproute2 ('ip')")
    probe = f"trivpn-probe-{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, check=False)
    if made.returncode != 0:
        _unavailable("cannot create network namespaces: " + made.stderr.decode().strip())
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)


def require_openvpn() -> str:
    path = shutil.which("openvpn")
    if path is None:
        _unavailable("needs the openvpn binary (scripts/test installs it as root)")
    assert path is not None
    return path


def require_iperf3() -> str:
    path = shutil.which("iperf3")
    if path is None:
        _unavailable("needs iperf3 (scripts/test installs it as root)")
    assert path is not None
    return path


EASYRSA = "/usr/share/easy-rsa/easyrsa"  # where Debian's easy-rsa package installs it


def require_easyrsa() -> str:
    if not os.access(EASYRSA, os.X_OK):
        _unavailable("needs Debian's easy-rsa package (scripts/test installs it as root)")
    return EASYRSA
