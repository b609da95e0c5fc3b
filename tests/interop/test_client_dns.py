"""DNS end to end: a real ``openvpn`` 2.6 server pushes ``dhcp-option DNS`` and ``DOMAIN``; a
``trivpn run`` client applies them through resolvconf (Debian's openresolv, relocated into the
test directory: tests/runtime/resolvconfkit.py), removes them at exit, and after a
``kill -9`` removes them at its next start (docs/dns.md)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import _unavailable
from tests.interop.clientkit import client_lines, make_setup, server_lines, start_server
from tests.interop.openvpn import start_openvpn
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import Netns, NetnsLab
from tests.runtime import resolvedkit
from tests.runtime.resolvconfkit import Openresolv, openresolv
from trivpn.config import load_config
from trivpn.protocol.dns import foreign_options
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.push import parse_pushed_options
from trivpn.runtime.dns import client_dns_options, plan_client_dns

pytestmark = pytest.mark.integration

PUSHES = ('push "dhcp-option DNS 198.18.8.53"', 'push "dhcp-option DOMAIN example.test"')


def start_client(ns: Netns, workdir: Path, tool: Openresolv, name: str,
                 extra: tuple[str, ...] = ()) -> TrivpnProcess:
    conf = workdir / f"{name}.conf"
    conf.write_text("\n".join(client_lines(extra=extra)) + "\n")
    log = workdir / f"{name}.log"
    env = {**os.environ, "PATH": f"{tool.program.parent}:{os.environ.get('PATH', '')}"}
    proc = ns.spawn([sys.executable, "-m", "trivpn", "run", str(conf), "--log-format", "json",
                     "--log-file", str(log), "--dns-mode", "resolvconf",
                     "--dns-state-dir", str(workdir / "run")], env=env, cwd=workdir)
    return TrivpnProcess(log, proc.pid)


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as stat:  # a zombie waits for the lab to reap it
            if stat.read().split()[2] == "Z":
                return True
        time.sleep(0.05)
    return False


@pytest.mark.directive("dhcp-option")
def test_pushed_dns_is_applied_through_resolvconf_and_removed_at_exit(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path):
    setup = make_setup(lab, tmp_path)
    start_server(setup, server_lines(extra=PUSHES))
    tool = openresolv(tmp_path / "openresolv")
    client = start_client(setup.client_ns, tmp_path, tool, "client")
    applied = client.wait_event("dns_applied", 20)
    assert applied is not None, client.text()[-4000:]
    assert (applied["backend"], applied["servers"], applied["search_domains"]) == (
        "resolvconf", ["198.18.8.53"], ["example.test"])
    text = tool.resolv_conf.read_text()
    assert "nameserver 198.18.8.53\n" in text and "search example.test\n" in text
    assert json.loads((tmp_path / "run" / "dns-tun0.json").read_text())["pid"] == client.pid
    os.kill(client.pid, signal.SIGTERM)
    assert client.wait_event("exiting", 10) is not None, client.text()[-4000:]
    assert client.count("dns_reverted") == 1
    assert "198.18.8.53" not in tool.resolv_conf.read_text()
    assert not (tmp_path / "run" / "dns-tun0.json").exists()


@pytest.mark.directive("dhcp-option")
def test_dns_left_by_a_killed_client_is_removed_at_the_next_start(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path):
    setup = make_setup(lab, tmp_path)
    start_server(setup, server_lines(extra=PUSHES))
    tool = openresolv(tmp_path / "openresolv")
    first = start_client(setup.client_ns, tmp_path, tool, "first")
    assert first.wait_event("dns_applied", 20) is not None, first.text()[-4000:]
    os.kill(first.pid, signal.SIGKILL)
    assert wait_gone(first.pid)
    assert "198.18.8.53" in tool.resolv_conf.read_text()  # nothing undid it
    assert (tmp_path / "run" / "dns-tun0.json").exists()
    # the next start undoes the dead client's record before it connects
    second = start_client(setup.client_ns, tmp_path, tool, "second",
                          extra=("pull-filter ignore dhcp-option",))
    reverted = second.wait_event("dns_stale_reverted", 20)
    assert reverted is not None, second.text()[-4000:]
    assert (reverted["pid"], reverted["backend"]) == (first.pid, "resolvconf")
    assert second.wait_event("tun_configured", 20) is not None, second.text()[-4000:]
    assert "198.18.8.53" not in tool.resolv_conf.read_text()
    assert not (tmp_path / "run" / "dns-tun0.json").exists()


def _script_env(env_file: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)


def _foreign_options(env: dict[str, str]) -> list[str]:
    count = sum(1 for name in env if name.startswith("foreign_option_"))
    return [env[f"foreign_option_{i}"] for i in range(1, count + 1)]


@pytest.mark.directive("dns", "dhcp-option")
def test_the_plan_has_the_servers_and_domains_openvpn_hands_its_scripts(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path):
    """OpenVPN 2.6 on Linux gives config-file and pushed dhcp-option lines to its scripts as
    foreign_option_N, with `dns` servers replacing `dhcp-option DNS` and `dns search-domains`
    replacing `DOMAIN-SEARCH`, and a pushed `dns server N` replacing the config's server N:
    trivpn's plan holds the same servers and domains in the same order."""
    setup = make_setup(lab, tmp_path)
    pushes = ('push "dhcp-option DNS 198.18.8.53"', 'push "dhcp-option DOMAIN example.test"',
              'push "dhcp-option DOMAIN-SEARCH dhcp.test"',
              'push "dns server 0 address 198.18.8.60"',
              'push "dns search-domains pushed.test"')
    start_server(setup, server_lines(extra=pushes))
    own = ("dhcp-option DNS 198.18.8.99", "dhcp-option DOMAIN-SEARCH own.test",
           "dhcp-option DOMAIN own.test",
           "dns server 0 address 198.18.8.70", "dns server 1 address 198.18.8.71:5353",
           "dns server 1 resolve-domains corp.test", "dns server 1 dnssec optional",
           "dns server 1 transport DoT", "dns server 1 sni dns.corp.test",
           "dns server -1 address 2001:2::72")
    script = tmp_path / "up.sh"
    script.write_text(f"#!/bin/sh\nenv > {tmp_path}/up.env\n")
    script.chmod(0o755)
    ovpn = start_openvpn(setup.client_ns, tmp_path, "ovpnclient", client_lines(extra=(
        *own, "script-security 2", f"up {script}")))
    assert ovpn.wait_for("Initialization Sequence Completed", 20), ovpn.text()[-4000:]
    env = _script_env(tmp_path / "up.env")
    foreign = _foreign_options(env)
    assert foreign == [
        "dhcp-option DOMAIN own.test", "dhcp-option DOMAIN example.test",
        "dhcp-option DNS6 2001:2::72", "dhcp-option DNS 198.18.8.60",
        "dhcp-option DNS 198.18.8.71", "dhcp-option DOMAIN-SEARCH pushed.test",
    ], foreign
    # the same config and push, planned by trivpn
    conf = tmp_path / "trivpn.conf"
    conf.write_text("\n".join(client_lines(extra=own)) + "\n")
    pushed = parse_pushed_options([p.split('"')[1] for p in pushes])
    options = load_config(conf)
    plan = plan_client_dns(options, pushed)
    servers = [f.split()[2] for f in foreign if f.split()[1] in ("DNS", "DNS6")]
    domains = [f.split()[2] for f in foreign if f.split()[1] in ("DOMAIN", "DOMAIN-SEARCH")]
    assert [str(a.ip) for a in plan.servers] == servers
    assert list(plan.search_domains) == domains
    # and what trivpn's script helpers would give a script: the same variables
    dns, dhcp = client_dns_options(options, pushed)
    assert foreign_options(dns, dhcp) == foreign
    assert dns.script_env() == {k: v for k, v in env.items() if k.startswith("dns_")}
    assert env["dns_server_1_address_1"] == "2001:2::72"
    assert env["dns_server_3_port_1"] == "5353"
    assert env["dns_server_3_sni"] == "dns.corp.test"


@pytest.mark.directive("dhcp-option", "redirect-gateway")
def test_pushed_dns_reaches_a_real_systemd_resolved_and_is_reverted_at_exit(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path):
    """The client's namespace runs Debian's systemd-resolved (tests/runtime/resolvedkit.py);
    `trivpn run --dns-mode resolved` sets the tunnel link's servers and domains, with `~.`
    and the default route under a pushed redirect-gateway, and RevertLink at exit."""
    require_resolved()
    setup = make_setup(lab, tmp_path)
    start_server(setup, server_lines(extra=(*PUSHES, 'push "redirect-gateway def1"')))
    conf = tmp_path / "client.conf"
    conf.write_text("\n".join(client_lines()) + "\n")
    # resolved runs as systemd-resolve: its bus lives in a directory it can reach
    work = Path(tempfile.mkdtemp(prefix="trivpn-resolved-"))
    work.chmod(0o755)
    log = tmp_path / "trivpn.log"
    kit = setup.client_ns.spawn(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-m",
         "tests.runtime.resolvedkit", "serve", str(work),
         sys.executable, "-m", "trivpn", "run", str(conf), "--log-format", "json",
         "--log-file", str(log), "--dns-mode", "resolved", "--dns-state-dir", str(work / "run")],
        cwd=resolvedkit.ROOT, env={**os.environ, "PYTHONPATH": str(resolvedkit.ROOT)})
    client = TrivpnProcess(log, kit.pid)
    try:
        applied = client.wait_event("dns_applied", 30)
        assert applied is not None, client.text()[-4000:] + _resolved_log(work)
        assert applied["backend"] == "resolved"
        up = client.wait_event("tun_configured", 5)
        assert up is not None
        bus = f"unix:path={work / 'bus'}"
        state = resolvedkit.link_state(up["ifindex"], bus)
        assert state is not None
        assert state["DNSEx"] == [[2, "198.18.8.53", 0, ""]]
        assert state["Domains"] == [["example.test", False], [".", True]]
        assert state["DefaultRoute"] is True
        os.kill(kit.pid, signal.SIGTERM)  # the kit passes it to trivpn
        assert client.wait_event("exiting", 10) is not None, client.text()[-4000:]
        assert client.count("dns_reverted") == 1
        calls = [line for line in (work / "resolved.log").read_text().splitlines()
                 if "type=method_call" in line and "interface=org.freedesktop.resolve1" in line]
        assert [line.split("member=")[1].split()[0] for line in calls] == [
            "SetLinkDNS", "SetLinkDomains", "SetLinkDefaultRoute", "RevertLink"]
        assert resolvedkit.link_state(up["ifindex"], bus) is None  # the device is gone too
    finally:
        (work / "done").touch()
        kit.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def _resolved_log(work: Path) -> str:
    path = work / "resolved.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def require_resolved() -> None:
    if not resolvedkit.RESOLVED.is_file():
        _unavailable(f"needs Debian's systemd-resolved unpacked at {resolvedkit.RESOLVED} "
                     "(scripts/test)")
    if shutil.which("unshare") is None or shutil.which("dbus-daemon") is None:
        _unavailable("needs unshare and dbus-daemon")


@pytest.mark.directive("dns")
def test_a_pushed_negative_priority_is_refused_like_openvpn(
        lab: NetnsLab, openvpn_binary: None, tmp_path: Path):
    """Priorities below 0 are for the client's own config (dns.c,
    dns_server_priority_parse()): openvpn refuses the pushed line, trivpn the push."""
    setup = make_setup(lab, tmp_path)
    start_server(setup, server_lines(extra=('push "dns server -1 address 198.18.8.60"',)))
    ovpn = start_openvpn(setup.client_ns, tmp_path, "ovpnclient", client_lines())
    assert ovpn.wait_for("--dns server: invalid priority value '-1'", 20), ovpn.text()[-4000:]
    with pytest.raises(ProtocolError, match="invalid priority value '-1'"):
        parse_pushed_options(["dns server -1 address 198.18.8.60"])
