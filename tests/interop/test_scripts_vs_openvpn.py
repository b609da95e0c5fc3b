"""Scripts side by side: a real openvpn 2.6 client and a ``trivpn run`` client with the same
config run the same dumping script (its arguments and its whole environment) against one
real openvpn server; what trivpn passes must be what OpenVPN passes."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.interop.clientkit import (
    VPN_SERVER,
    Setup,
    client_lines,
    make_setup,
    ping_ok,
    popen_of,
    server_lines,
    start_client,
    start_server,
    wait_until,
)
from tests.interop.openvpn import start_openvpn
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import NetnsLab
from trivpn.runtime.scriptenv import SCRIPT_SECURITY_WARNING

pytestmark = pytest.mark.integration

# Appends "ARG=..." per argument and the sorted environment to WHO.SCRIPT_TYPE.log
DUMP = """#!/bin/sh
out="{dir}/{who}.$script_type.log"
{{ for a in "$@"; do echo "ARG=$a"; done; env | sort; echo ====; }} >> "$out"
exit 0
"""

SERVER_PUSH = ('push "dhcp-option DNS 198.18.9.9"', 'push "dhcp-option DOMAIN example.test"',
               'push "route 198.18.10.0 255.255.255.0"', "duplicate-cn")
SCRIPTED = ("script-security 2", "route 198.18.11.0 255.255.255.0 vpn_gateway 7",
            "dhcp-option DNS 198.18.7.7", "setenv FOO bar", "setenv-safe SAFE val")
HOOKS = ("up", "route-up", "route-pre-down", "down", "ipchange")
# values that differ by nature (process, file names, shell, timing)
VARIES = {"config", "daemon_pid", "daemon_start_time", "daemon_log_redirect", "PWD", "SHLVL",
          "_", "OLDPWD", "peer_cert"}
POOL = "198.18.8."  # each client gets its own pool address (ifconfig_local, 4th argument)


def _masked(args: list[str]) -> list[str]:
    return [POOL + "N" if a.startswith(POOL) and a != VPN_SERVER else a for a in args]


def _dumper(setup: Setup, who: str) -> Path:
    path = setup.workdir / f"dump-{who}.sh"
    path.write_text(DUMP.format(dir=setup.workdir, who=who))
    path.chmod(0o755)
    return path


def _records(setup: Setup, who: str, script_type: str) -> list[tuple[list[str], dict[str, str]]]:
    path = setup.workdir / f"{who}.{script_type}.log"
    if not path.exists():
        return []
    out = []
    for block in path.read_text().split("====\n"):
        if not block.strip():
            continue
        args, env = [], {}
        for line in block.splitlines():
            if line.startswith("ARG="):
                args.append(line[4:])
            elif "=" in line:
                k, _, v = line.partition("=")
                env[k] = v
        out.append((args, env))
    return out


def _hooks(dump: Path) -> list[str]:
    return [f"{hook} {dump}" for hook in (*HOOKS, "tls-verify")] + [
        f"tls-export-cert {dump.parent}"]


@pytest.fixture
def setup(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Setup:
    return make_setup(lab, tmp_path)


def _stop(setup: Setup, pid: int) -> int:
    proc = popen_of(setup.lab, pid)
    proc.send_signal(signal.SIGTERM)
    return proc.wait(15)


@pytest.mark.directive("up", "down", "route-up", "route-pre-down", "ipchange",
                       "script-security", "setenv-safe", "setenv", "tls-verify",
                       "tls-export-cert")
def test_scripts_get_the_same_arguments_and_environment_as_from_openvpn(setup: Setup) -> None:
    start_server(setup, server_lines(extra=SERVER_PUSH))
    theirs = start_openvpn(setup.client_ns, setup.workdir, "ovpn-client", [
        *client_lines(), *SCRIPTED, *_hooks(_dumper(setup, "theirs"))])
    assert theirs.wait_for("Initialization Sequence Completed", 20), theirs.text()[-3000:]
    assert _stop(setup, theirs.pid) == 0
    ours = start_client(setup, [*client_lines(), *SCRIPTED, *_hooks(_dumper(setup, "ours"))])
    assert ours.wait_event("tun_configured", 20) is not None, ours.text()[-3000:]
    assert wait_until(lambda: bool(_records(setup, "ours", "route-up")), 10)
    ping_ok(setup.client_ns, VPN_SERVER)
    assert _stop(setup, ours.pid) == 0

    for hook in HOOKS:
        their_runs, our_runs = _records(setup, "theirs", hook), _records(setup, "ours", hook)
        assert len(their_runs) == 1, (hook, their_runs)
        assert len(our_runs) == 1, (hook, our_runs, ours.text()[-3000:])
        (their_args, their_env), (our_args, our_env) = their_runs[0], our_runs[0]
        assert _masked(our_args) == _masked(their_args), hook
        assert set(our_env) == set(their_env), (hook, set(our_env) ^ set(their_env))
        for key in set(their_env) - VARIES:
            assert _masked([our_env[key]]) == _masked([their_env[key]]), (hook, key)
    # tls-verify: once per certificate, the CA (depth 1) first, then the server's
    their_runs, our_runs = (_records(setup, "theirs", "tls-verify"),
                            _records(setup, "ours", "tls-verify"))
    assert [args for args, _ in our_runs] == [args for args, _ in their_runs] == [
        ["1", "CN=interop CA"], ["0", "CN=server"]]
    for (_, their_env), (_, our_env) in zip(their_runs, our_runs, strict=True):
        assert set(our_env) == set(their_env), set(our_env) ^ set(their_env)
        for key in set(their_env) - VARIES:
            assert our_env[key] == their_env[key], key
        assert our_env["peer_cert"].startswith(str(setup.workdir / "openvpn_pef_"))
    assert not list(setup.workdir.glob("openvpn_pef_*"))  # removed after each run
    up_env = _records(setup, "ours", "up")[0][1]
    assert up_env["foreign_option_1"] == "dhcp-option DNS 198.18.7.7"
    assert up_env["foreign_option_3"] == "dhcp-option DOMAIN example.test"
    assert up_env["route_network_1"] == "198.18.11.0" and up_env["route_metric_1"] == "7"
    assert up_env["OPENVPN_SAFE"] == "val" and up_env["FOO"] == "bar"
    assert "PATH" not in up_env  # only OpenVPN's own variables, as OpenVPN does
    down_env = _records(setup, "ours", "down")[0][1]
    assert down_env["signal"] == "sigterm" and down_env["script_type"] == "down"


@pytest.mark.directive("up")
def test_a_failing_up_script_stops_the_client_as_it_stops_openvpn(setup: Setup) -> None:
    start_server(setup, server_lines(extra=("duplicate-cn",)))
    fail = setup.workdir / "fail.sh"
    fail.write_text(f"#!/bin/sh\necho $script_type >> {setup.workdir}/$1.ran\n"
                    '[ "$script_type" = down ]\n')  # up fails (status 1), down succeeds
    fail.chmod(0o755)
    lines = [*client_lines(), "script-security 2", f"up {fail}", f"down {fail}"]
    theirs = start_openvpn(setup.client_ns, setup.workdir, "ovpn-client",
                           [*[line for line in lines if line != "dev tun"], "dev tun7"])
    assert popen_of(setup.lab, theirs.pid).wait(20) == 1
    assert "external program exited with error status: 1" in theirs.text()
    ours = start_client(setup, lines)
    assert popen_of(setup.lab, ours.pid).wait(20) == 1
    # after the failed up, OpenVPN's fatal exit runs no down script
    dev = ours.wait_event("tun_configured", 1)["device"]  # type: ignore[index]
    assert (setup.workdir / "tun7.ran").read_text() == "up\n"
    assert (setup.workdir / f"{dev}.ran").read_text() == "up\n"
    failed = ours.wait_event("up_script_failed", 1)
    assert failed is not None
    assert failed["detail"] == "external program exited with error status: 1"


@pytest.mark.directive("script-security")
def test_below_script_security_2_the_up_script_never_runs_and_the_client_stops_like_openvpn(
        setup: Setup) -> None:
    start_server(setup, server_lines(extra=("duplicate-cn",)))
    marker = setup.workdir / "ran"
    script = setup.workdir / "touch.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    lines = [*client_lines(), f"up {script}"]  # default level 1
    theirs = start_openvpn(setup.client_ns, setup.workdir, "ovpn-client", lines)
    assert popen_of(setup.lab, theirs.pid).wait(20) == 1
    assert ("Failed running command (--up/--down): disallowed by script-security setting"
            in theirs.text())
    assert SCRIPT_SECURITY_WARNING in theirs.text()  # the words trivpn logs
    ours = start_client(setup, lines)
    assert popen_of(setup.lab, ours.pid).wait(20) == 1
    refused = ours.wait_event("script_refused", 1)
    assert refused is not None and "--script-security 2" in refused["detail"]
    failed = ours.wait_event("up_script_failed", 1)
    assert failed is not None
    assert failed["detail"] == "disallowed by script-security setting"
    assert not marker.exists()


@pytest.mark.directive("dev", "ifconfig-noexec", "route-noexec")
def test_dev_null_with_noexec_starts_like_openvpns_t_client_and_passes_the_values_to_up(
        setup: Setup) -> None:
    start_server(setup, server_lines(extra=SERVER_PUSH))
    lines = [line for line in client_lines() if line != "dev tun"]
    lines += ["dev null", "ifconfig-noexec", "route-noexec", "script-security 2",
              "setenv TEST_SUITE t_client"]
    theirs = start_openvpn(setup.client_ns, setup.workdir, "ovpn-client",
                           [*lines, f"up {_dumper(setup, 'theirs')}"])
    assert theirs.wait_for("Initialization Sequence Completed", 20), theirs.text()[-3000:]
    before = _link_names(setup)
    ours = start_client(setup, [*lines, f"up {_dumper(setup, 'ours')}"])
    assert ours.wait_event("tun_configured", 20) is not None, ours.text()[-3000:]
    assert wait_until(lambda: bool(_records(setup, "ours", "up")), 10)
    assert _link_names(setup) == before  # no device created
    (their_args, their_env), = _records(setup, "theirs", "up")
    (our_args, our_env), = _records(setup, "ours", "up")
    assert _masked(our_args) == _masked(their_args) and our_args[0] == "null"
    for key in ("dev", "dev_type", "ifconfig_local", "ifconfig_netmask", "route_network_1",
                "TEST_SUITE"):
        assert _masked([our_env[key]]) == _masked([their_env[key]]), key
    assert _stop(setup, ours.pid) == 0
    assert _stop(setup, theirs.pid) == 0


def _link_names(setup: Setup) -> list[str]:
    out = setup.client_ns.run(["ip", "-o", "link"]).stdout
    return sorted(line.split(": ")[1] for line in out.splitlines())


@pytest.mark.directive("ifconfig-noexec", "route-noexec")
def test_ifconfig_noexec_and_route_noexec_leave_the_device_bare_like_openvpn(
        setup: Setup) -> None:
    start_server(setup, server_lines(extra=SERVER_PUSH))
    lines = [*client_lines(), "ifconfig-noexec", "route-noexec"]
    theirs = start_openvpn(setup.client_ns, setup.workdir, "ovpn-client",
                           [*[line for line in lines if line != "dev tun"], "dev tun7"])
    assert theirs.wait_for("Initialization Sequence Completed", 20), theirs.text()[-3000:]
    ours = start_client(setup, lines)
    up = ours.wait_event("tun_configured", 20)
    assert up is not None, ours.text()[-3000:]
    states = {}
    for dev in ("tun7", up["device"]):
        shown = setup.client_ns.run(["ip", "-o", "addr", "show", "dev", dev]).stdout
        assert "198.18.8." not in shown
        link = setup.client_ns.run(["ip", "-o", "link", "show", "dev", dev]).stdout
        states[dev] = ",UP" in link or "<UP" in link
    assert states["tun7"] is states[up["device"]] is False  # left down, as OpenVPN does
    assert "198.18.10.0" not in setup.client_ns.run(["ip", "route"]).stdout
    assert _stop(setup, ours.pid) == 0
    assert _stop(setup, theirs.pid) == 0


UPDATE_RESOLV_CONF = Path("/etc/openvpn/update-resolv-conf")
# A stand-in for /sbin/resolvconf: records its arguments and standard input.
RESOLVCONF_STUB = """#!/bin/sh
{{ echo "resolvconf $*"; cat; }} >> {out}
"""


@pytest.mark.directive("up", "down")
def test_debians_update_resolv_conf_script_works_unchanged(setup: Setup) -> None:
    if not UPDATE_RESOLV_CONF.exists():
        pytest.skip("the openvpn package's update-resolv-conf is not installed")
    start_server(setup, server_lines(extra=SERVER_PUSH))
    # /sbin/resolvconf exists only inside the client's own mount namespace: an overlay on
    # /usr/sbin adds the stub there; the host's resolver configuration is never touched
    upper, work = setup.workdir / "upper", setup.workdir / "work"
    upper.mkdir()
    work.mkdir()
    out = setup.workdir / "resolvconf.out"
    stub = upper / "resolvconf"
    stub.write_text(RESOLVCONF_STUB.format(out=out))
    stub.chmod(0o755)
    conf = setup.workdir / "resolv.conf"
    conf.write_text("\n".join([*client_lines(), "script-security 2",
                               f"up {UPDATE_RESOLV_CONF}", f"down {UPDATE_RESOLV_CONF}"]) + "\n")
    log = setup.workdir / "resolv.log"
    sbin = Path("/sbin").resolve()
    inner = (f"mount -t overlay overlay -o lowerdir={sbin},upperdir={upper},workdir={work} "
             f"{sbin} && exec {sys.executable} -m trivpn run {conf} --log-format json "
             f"--log-file {log}")
    proc = setup.client_ns.spawn(["unshare", "-m", "--propagation", "private",
                                  "sh", "-c", inner])
    ours = TrivpnProcess(log, proc.pid)
    assert ours.wait_event("tun_configured", 20) is not None, ours.text()[-3000:]
    assert wait_until(lambda: out.exists() and "nameserver" in out.read_text(), 10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    device = ours.wait_event("tun_configured", 1)["device"]  # type: ignore[index]
    assert out.read_text() == (f"resolvconf -a {device}.openvpn\nsearch example.test\n"
                               "nameserver 198.18.9.9\n"
                               f"resolvconf -d {device}.openvpn\n")
    assert not Path(f"/run/resolvconf/interface/{device}.openvpn").exists()


@pytest.mark.directive("plugin", "down", "up", "user")
def test_down_root_plugin_line_runs_its_command_as_root_after_user_nobody(
        setup: Setup) -> None:
    if shutil.which("id") is None:
        pytest.skip("no id(1)")
    start_server(setup, server_lines(extra=("duplicate-cn",)))
    # a directory user nobody can reach (pytest's tmp_path is root's only)
    shared = Path(tempfile.mkdtemp(prefix="trivpn-down-root-", dir="/tmp"))
    try:
        _down_root_run(setup, shared)
    finally:
        shutil.rmtree(shared)


def _down_root_run(setup: Setup, shared: Path) -> None:
    shared.chmod(0o777)
    who = shared / "who.sh"
    who.write_text(f'#!/bin/sh\necho "$script_type $(id -u) $1" >> {shared}/who.out\n')
    who.chmod(0o755)
    (shared / "who.out").touch(0o666)
    (shared / "who.out").chmod(0o666)  # both the root and the nobody run append to it
    common = ["script-security 2", "user nobody", "group nogroup", "persist-key",
              "persist-tun", f"up {who}", f"down {who}",
              f'plugin /usr/lib/openvpn/openvpn-plugin-down-root.so "{who}"']
    theirs = start_openvpn(setup.client_ns, setup.workdir, "ovpn-client", [
        *[line for line in client_lines() if line != "dev tun"], "dev tun7", *common])
    assert theirs.wait_for("Initialization Sequence Completed", 20), theirs.text()[-3000:]
    ours = start_client(setup, [*client_lines(), *common])
    assert ours.wait_event("privileges_dropped", 20) is not None, ours.text()[-3000:]
    dev = ours.wait_event("tun_configured", 1)["device"]  # type: ignore[index]
    assert _stop(setup, ours.pid) == 0
    assert _stop(setup, theirs.pid) == 0
    lines = (shared / "who.out").read_text().splitlines()
    nobody = subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True,
                            check=True).stdout.strip()
    # up as root (before user/group); at down the plugin's command as root, alone (no
    # device arguments, the environment of the up call before script_type was set), then
    # down itself as nobody: the same for both
    assert sorted(lines) == sorted([f"up 0 {dev}", " 0 ", f"down {nobody} {dev}",
                                    "up 0 tun7", " 0 ", f"down {nobody} tun7"])


def _contexts(setup: Setup, who: str) -> list[tuple[str, str]]:
    """(script_type, script_context) of every up/down run, in order."""
    runs = []
    for line in (setup.workdir / f"{who}.order").read_text().splitlines():
        kind, context = line.split()
        runs.append((kind, context))
    return runs


ORDER = """#!/bin/sh
echo "$script_type $script_context $signal" >> "{dir}/{who}.signals"
echo "$script_type $script_context" >> "{dir}/{who}.order"
"""


@pytest.mark.directive("up-restart", "persist-tun")
def test_up_restart_runs_down_and_up_on_a_restart_with_persist_tun_as_openvpn_does(
        setup: Setup) -> None:
    server = start_server(setup, server_lines(keepalive="1 3", extra=("duplicate-cn",)))
    scripts = {}
    for who in ("ours", "theirs"):
        path = setup.workdir / f"order-{who}.sh"
        path.write_text(ORDER.format(dir=setup.workdir, who=who))
        path.chmod(0o755)
        scripts[who] = path
    common = [*client_lines(), "script-security 2", "persist-tun", "up-restart"]
    theirs = start_openvpn(setup.client_ns, setup.workdir, "ovpn-client", [
        *common, "ifconfig-noexec", "route-noexec", "dev tun7",
        f"up {scripts['theirs']}", f"down {scripts['theirs']}"])
    ours = start_client(setup, [*common, f"up {scripts['ours']}", f"down {scripts['ours']}"])
    assert ours.wait_event("tun_configured", 20) is not None, ours.text()[-3000:]
    assert theirs.wait_for("Initialization Sequence Completed", 20), theirs.text()[-3000:]
    frozen = popen_of(setup.lab, server.pid)
    frozen.send_signal(signal.SIGSTOP)  # no pings: both clients ping-restart after 3 s
    try:
        assert wait_until(lambda: ours.count("reconnecting") >= 1
                          and "Restart pause" in theirs.text(), 10)
    finally:
        frozen.send_signal(signal.SIGCONT)
    assert wait_until(lambda: ours.count("tun_configured") >= 2, 20), ours.text()[-3000:]
    assert wait_until(lambda: theirs.text().count("Initialization Sequence Completed") >= 2,
                      20)
    assert wait_until(lambda: len(_contexts(setup, "ours")) >= 3, 5)
    assert _stop(setup, ours.pid) == 0
    assert _stop(setup, theirs.pid) == 0
    # the frozen server still holds the old sessions, so the reconnect gets another pool
    # address: OpenVPN then closes and reopens the device ("Pulled options changed on
    # restart"), which is down (init) and up (init) after up (restart)
    expected = [("up", "init"), ("down", "restart"), ("up", "restart"), ("down", "init"),
                ("up", "init"), ("down", "init")]
    assert _contexts(setup, "theirs") == expected
    assert _contexts(setup, "ours") == expected
    signals = [(setup.workdir / f"{who}.signals").read_text() for who in ("ours", "theirs")]
    assert signals[0] == signals[1], signals


PRESENT = """#!/bin/sh
if [ -e "/sys/class/net/$1" ]; then echo present; else echo absent; fi >> "{out}"
"""


@pytest.mark.directive("down-pre", "down", "route-pre-down")
@pytest.mark.parametrize("down_pre", [False, True])
def test_down_runs_after_the_device_is_gone_unless_down_pre_as_openvpn_does(
        setup: Setup, down_pre: bool) -> None:
    start_server(setup, server_lines(extra=("duplicate-cn",)))
    clients = []
    for who in ("ours", "theirs"):
        path = setup.workdir / f"present-{who}.sh"
        path.write_text(PRESENT.format(out=setup.workdir / f"{who}.present"))
        path.chmod(0o755)
        lines = [*client_lines(), "script-security 2", f"down {path}",
                 f"route-pre-down {path}", *(["down-pre"] if down_pre else [])]
        if who == "theirs":
            lines = [line for line in lines if line != "dev tun"] + ["dev tun7"]
            proc = start_openvpn(setup.client_ns, setup.workdir, "ovpn-client", lines)
            assert proc.wait_for("Initialization Sequence Completed", 20), proc.text()[-3000:]
        else:
            proc = start_client(setup, lines)  # type: ignore[assignment]
            assert proc.wait_event("tun_configured", 20) is not None  # type: ignore[attr-defined]
        clients.append(proc)
    for proc in clients:
        assert _stop(setup, proc.pid) == 0
    # route-pre-down first (even without routes), with the device; then down
    expected = "present\n" + ("present\n" if down_pre else "absent\n")
    assert (setup.workdir / "theirs.present").read_text() == expected
    assert (setup.workdir / "ours.present").read_text() == expected


@pytest.mark.directive("tls-verify")
def test_a_tls_verify_refusal_at_depth_0_keeps_the_tunnel_down_like_openvpn(
        setup: Setup) -> None:
    start_server(setup, server_lines(extra=("duplicate-cn",)))
    refuse = setup.workdir / "refuse.sh"
    refuse.write_text('#!/bin/sh\n[ "$1" != 0 ]\n')  # accept the CA, refuse the server
    refuse.chmod(0o755)
    lines = [*client_lines(), "script-security 2", f"tls-verify {refuse}"]
    theirs = start_openvpn(setup.client_ns, setup.workdir, "ovpn-client",
                           [*lines, "ifconfig-noexec", "route-noexec"])
    ours = start_client(setup, lines)
    rejected = ours.wait_event("peer_cert_rejected", 20)
    assert rejected is not None, ours.text()[-3000:]
    assert rejected["check"] == "tls_verify" and rejected["cn"] == "server"
    assert theirs.wait_for("VERIFY SCRIPT ERROR: depth=0, CN=server", 10), theirs.text()[-3000:]
    assert ours.count("tun_configured") == 0
    assert "Initialization Sequence Completed" not in theirs.text()
    assert _stop(setup, ours.pid) == 0
    assert _stop(setup, theirs.pid) == 0


@pytest.mark.directive("cd", "up")
def test_a_relative_script_runs_from_the_cd_directory_like_openvpns(setup: Setup) -> None:
    start_server(setup, server_lines(extra=("duplicate-cn",)))
    sub = setup.workdir / "sub"
    sub.mkdir()
    for name in ("ca.crt", "client.crt", "client.key"):
        shutil.copy(setup.workdir / name, sub / name)
    where = sub / "where.sh"  # no PATH search: the name is relative to the directory
    where.write_text('#!/bin/sh\necho "$(pwd) $1" >> where.out\n')
    where.chmod(0o755)
    lines = ["cd sub", *client_lines(), "script-security 2", "up where.sh"]
    theirs = start_openvpn(setup.client_ns, setup.workdir, "ovpn-client",
                           [*lines, "ifconfig-noexec", "route-noexec"])
    assert theirs.wait_for("Initialization Sequence Completed", 20), theirs.text()[-3000:]
    ours = start_client(setup, lines)
    assert ours.wait_event("tun_configured", 20) is not None, ours.text()[-3000:]
    assert wait_until(lambda: len((sub / "where.out").read_text().splitlines()) == 2, 10)
    assert _stop(setup, ours.pid) == 0
    assert _stop(setup, theirs.pid) == 0
    dirs = [line.split()[0] for line in (sub / "where.out").read_text().splitlines()]
    assert dirs == [str(sub), str(sub)]
