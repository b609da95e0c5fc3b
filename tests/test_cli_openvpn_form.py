"""``python -m trivpn`` with OpenVPN's command line: ``trivpn --config X --verb 4 ...`` (a drop-in
for ``openvpn``), ``trivpn run --config X ...`` and options alone on the command line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.openvpn import write_pki
from trivpn import __version__
from trivpn.commands.run import split_run_args

# a client config without a remote: the command line gives it
BASE = "client\ndev tun\nproto udp\nnobind\nca ca.crt\ncert client.crt\nkey client.key\n"
HARD_RESET_CLIENT_V2 = 7


def _trivpn(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trivpn", *args], capture_output=True,
                          text=True, timeout=60, check=False, cwd=cwd,
                          env=os.environ | {"PYTHONPATH": str(Path(__file__).parent.parent)})


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    write_pki(tmp_path)
    (tmp_path / "base.conf").write_text(BASE)
    return tmp_path


def _first_datagram(args: list[str], cwd: Path) -> tuple[bytes, list[dict[str, object]]]:
    """Start ``python -m trivpn ARGS --remote 127.0.0.1 PORT`` against a UDP socket on
    loopback; the first datagram it sends and its log lines until then."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(20)
    port = sink.getsockname()[1]
    log = cwd / "trivpn.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trivpn", *args, "--remote", "127.0.0.1", str(port),
             "--log-format", "json"], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
            env=os.environ | {"PYTHONPATH": str(Path(__file__).parent.parent)})
        try:
            data, _ = sink.recvfrom(2048)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            sink.close()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return data, lines


def test_trivpn_with_config_and_options_runs_like_openvpn(workdir: Path) -> None:
    data, lines = _first_datagram(["--config", "base.conf", "--verb", "4"], workdir)
    assert data[0] >> 3 == HARD_RESET_CLIENT_V2
    starting = next(line for line in lines if line["event"] == "trivpn_starting")
    assert starting["config"] == str(workdir / "base.conf") and starting["role"] == "client"
    assert any(line["level"] == "debug" for line in lines)  # verb 4 from the command line


def test_trivpn_run_with_options_alone_on_the_command_line(workdir: Path) -> None:
    data, lines = _first_datagram(
        ["run", "--client", "--dev", "tun", "--proto", "udp", "--nobind", "--ca", "ca.crt",
         "--cert", "client.crt", "--key", "client.key"], workdir)
    assert data[0] >> 3 == HARD_RESET_CLIENT_V2
    starting = next(line for line in lines if line["event"] == "trivpn_starting")
    assert starting["config"] == "[command line]"
    assert not any(line["level"] == "debug" for line in lines)  # verb 1, the default


def test_a_bad_argument_exits_2_naming_its_position(workdir: Path) -> None:
    done = _trivpn("--config", "base.conf", "--verb", "4", "5", cwd=workdir)
    assert done.returncode == 2
    assert done.stderr == "trivpn: command line, argument 3: 'verb' takes 1 argument, got 2\n"
    done = _trivpn("run", "base.conf", "--remote", cwd=workdir)
    assert done.returncode == 2
    assert done.stderr.startswith("trivpn: command line, argument 3: 'remote' takes 1 to 3")


def test_an_error_in_the_config_file_names_its_line(workdir: Path) -> None:
    (workdir / "bad.conf").write_text(BASE + "tun-mtu big\n")
    done = _trivpn("--config", "bad.conf", "--remote", "198.18.0.1", cwd=workdir)
    assert done.returncode == 2
    assert done.stderr.startswith(f"trivpn: {workdir / 'bad.conf'}:8: 'tun-mtu' expects")


def test_a_lone_config_file_argument_is_a_config_like_openvpn(workdir: Path) -> None:
    (workdir / "bad.conf").write_text(BASE + "verb\n")
    done = _trivpn("bad.conf", cwd=workdir)
    assert done.returncode == 2 and f"{workdir / 'bad.conf'}:8: 'verb' takes" in done.stderr


def test_version_and_help(workdir: Path) -> None:
    assert _trivpn("--version").stdout.strip() == f"trivpn {__version__}"
    done = _trivpn("--config", "base.conf", "--version", cwd=workdir)
    assert done.returncode == 0 and done.stdout.startswith(f"trivpn {__version__}")
    done = _trivpn("--config", "base.conf", "--help", cwd=workdir)
    assert done.returncode == 0 and "--config FILE' is read in place" in done.stdout


def test_trivpn_flags_mix_with_openvpn_options() -> None:
    split = split_run_args(["server.conf", "--log-format", "json", "--verb", "4",
                            "--drop-revoked", "--status", "s.log", "10"], first_position=2)
    assert split.own == ["--log-format", "json", "--drop-revoked"]
    assert [(d.name, d.args, d.line) for d in split.directives] == [
        ("config", ("server.conf",), 2), ("verb", ("4",), 5), ("status", ("s.log", "10"), 8)]


def test_the_config_may_follow_trivpn_flags() -> None:
    split = split_run_args(["--drop-revoked", "server.conf"], first_position=2)
    assert split.own == ["--drop-revoked"]
    assert [(d.name, d.args) for d in split.directives] == [("config", ("server.conf",))]


def test_under_systemd_it_notifies_ready_with_its_pid_and_does_not_fork_for_daemon(
        workdir: Path, tmp_path: Path) -> None:
    # Debian's units are Type=notify, and openvpn@.service passes --daemon
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(20)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(20)
    proc = subprocess.Popen(
        [sys.executable, "-m", "trivpn", "--daemon", "ovpn-x", "--config", "base.conf",
         "--remote", "127.0.0.1", str(sink.getsockname()[1]), "--log-file",
         str(tmp_path / "log")], cwd=workdir, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ | {"PYTHONPATH": str(Path(__file__).parent.parent),
                          "NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
    try:
        message = notify.recv(4096).decode()
        assert sink.recvfrom(2048)[0][0] >> 3 == HARD_RESET_CLIENT_V2
        assert proc.poll() is None  # still the same process: no fork
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        notify.close()
        sink.close()
    assert message.split("\n") == ["READY=1", "STATUS=Pre-connection initialization successful",
                                   f"MAINPID={proc.pid}"]


def test_genkey_points_to_the_pki_command(workdir: Path) -> None:
    done = _trivpn("--genkey", "secret", "ta.key", cwd=workdir)
    assert done.returncode == 2 and "trivpn pki genkey" in done.stderr
    assert not (workdir / "ta.key").exists()
