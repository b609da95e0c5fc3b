"""The resolvconf backend with Debian's real openresolv, relocated into the test directory
(tests/runtime/resolvconfkit.py): ``resolvconf -a tun0.openvpn`` with the plan's fragment on
stdin, ``-d`` to undo, as Debian's update-resolv-conf does (docs/dns.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runtime.resolvconfkit import openresolv
from trivpn.logging import get_logger
from trivpn.protocol.dns import DnsOptions, plan_dns
from trivpn.runtime.dns import DnsManager, ResolvconfBackend
from trivpn.runtime.errors import RuntimeSetupError

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
PLAN = plan_dns(DnsOptions(), [("DNS", "198.18.8.53"), ("DNS6", "2001:2::53"),
                               ("DOMAIN", "example.test")], None)


@pytest.fixture
def host_resolver_untouched():
    before = HOST_RESOLV_CONF.read_bytes() if HOST_RESOLV_CONF.exists() else None
    yield
    after = HOST_RESOLV_CONF.read_bytes() if HOST_RESOLV_CONF.exists() else None
    assert after == before


@pytest.mark.usefixtures("host_resolver_untouched")
def test_the_plan_goes_into_resolv_conf_and_out_again(tmp_path: Path):
    tool = openresolv(tmp_path)
    backend = ResolvconfBackend(str(tool.program))
    assert backend.available()
    record = backend.apply("tun0", 9, PLAN)
    assert record == {"record": "tun0.openvpn"}
    text = tool.resolv_conf.read_text()
    assert "nameserver 198.18.8.53\n" in text and "nameserver 2001:2::53\n" in text
    assert "search example.test\n" in text
    backend.revert(record)
    text = tool.resolv_conf.read_text()
    assert "198.18.8.53" not in text and "example.test" not in text


@pytest.mark.usefixtures("host_resolver_untouched")
def test_a_failing_resolvconf_is_a_clear_error(tmp_path: Path):
    failing = tmp_path / "resolvconf"
    failing.write_text("#!/bin/sh\necho 'resolvconf: no such thing' >&2\nexit 3\n")
    failing.chmod(0o755)
    with pytest.raises(RuntimeSetupError, match=r"exit 3.*no such thing"):
        ResolvconfBackend(str(failing)).apply("tun0", 9, PLAN)
    assert not ResolvconfBackend(str(tmp_path / "missing")).available()


@pytest.mark.usefixtures("host_resolver_untouched")
def test_a_killed_clients_record_is_deleted_at_the_next_start(tmp_path: Path):
    tool = openresolv(tmp_path)
    backend = ResolvconfBackend(str(tool.program))
    state = tmp_path / "state"
    first = DnsManager(backend, get_logger(), state_dir=state)
    first.apply("tun3", 9, PLAN)
    assert "198.18.8.53" in tool.resolv_conf.read_text()
    recorded = json.loads((state / "dns-tun3.json").read_text())
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    recorded["pid"] = int(dead)  # as if the process that applied it had been killed
    (state / "dns-tun3.json").write_text(json.dumps(recorded))
    DnsManager(None, get_logger(), state_dir=state,
               revert_backends={"resolvconf": backend}).recover()
    assert "198.18.8.53" not in tool.resolv_conf.read_text()
    assert not (state / "dns-tun3.json").exists()
