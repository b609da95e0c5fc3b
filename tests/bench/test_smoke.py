"""One short real run of ``scripts/bench``: both contenders measured, ratios computed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_iperf3, require_netns, require_openvpn

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench"


def test_one_short_udp_round_reports_both_contenders_and_their_ratios(tmp_path: Path):
    require_netns()
    require_openvpn()
    require_iperf3()
    out = tmp_path / "bench.json"
    proc = subprocess.Popen([str(BENCH), "--rounds", "1", "--duration", "2", "--transport",
                             "udp", "--json", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, (stdout[-2000:], stderr[-2000:])
    report = json.loads(out.read_text())
    assert report["contenders"] == ["trivpn", "openvpn"]
    assert report["errors"] == []
    for metric in ("p1_mbps", "p4_mbps", "rtt_us", "p1_pps", "p1_cpu_server"):
        for contender in ("trivpn", "openvpn"):
            entry = report["summary"][metric][contender]
            assert entry is not None and entry["n"] == 1 and entry["median"] > 0, \
                (metric, contender)
        assert report["ratios"][metric] > 0, metric
    assert "trivpn/openvpn" in stdout  # the table was printed
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                               check=False).stdout
    assert f"tvbench-{proc.pid}-" not in leftovers  # scripts/bench execs: same PID


def test_rtt_rounds_report_rtt_and_cpu_per_ping_of_both_contenders(tmp_path: Path):
    require_netns()
    require_openvpn()
    out = tmp_path / "rtt.json"
    proc = subprocess.Popen([str(BENCH), "rtt", "--rounds", "1", "--pings", "5", "--json",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, (stdout[-2000:], stderr[-2000:])
    report = json.loads(out.read_text())
    assert report["benchmark"] == "rtt" and report["errors"] == []
    for metric in ("rtt_us", "rtt_min_us", "cpu_server_us", "cpu_client_us"):
        for contender in ("trivpn", "openvpn"):
            entry = report["summary"][metric][contender]
            assert entry is not None and entry["n"] == 1 and entry["median"] > 0, \
                (metric, contender)


def test_one_short_handshake_round_measures_both_servers(tmp_path: Path):
    require_netns()
    require_openvpn()
    require_iperf3()  # the bench's preflight asks for it
    out = tmp_path / "hs.json"
    proc = subprocess.Popen([str(BENCH), "handshakes", "--rounds", "1", "--count", "40",
                             "--json", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, (stdout[-2000:], stderr[-2000:])
    report = json.loads(out.read_text())
    assert report["errors"] == []
    for metric in ("handshakes_per_s", "server_cpu_ms_per_handshake", "server_busy_percent",
                   "swarm_cpu_ms_per_handshake"):
        for contender in ("trivpn", "openvpn"):
            entry = report["summary"][metric][contender]
            assert entry is not None and entry["median"] > 0, (metric, contender)
    assert report["summary"]["failed"]["trivpn"]["median"] == 0
