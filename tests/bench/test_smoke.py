"""One short real run of each ``scripts/bench`` benchmark: both contenders measured."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_iperf3, require_netns, require_openvpn

pytestmark = pytest.mark.integration

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench"
CONTENDERS = ("trivpn", "openvpn")


def _bench(tmp_path: Path, args: list[str], timeout: float) -> tuple[dict[str, Any], str, int]:
    """Run ``scripts/bench ARGS --json F`` (needs root, netns, openvpn and iperf3, which the
    preflight asks for); returns the report, stdout and the PID it ran under."""
    require_netns()
    require_openvpn()
    require_iperf3()
    out = tmp_path / "report.json"
    proc = subprocess.Popen([str(BENCH), *args, "--json", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, (stdout[-2000:], stderr[-2000:])
    report = json.loads(out.read_text())
    assert report["errors"] == []
    return report, stdout, proc.pid


def _assert_measured(report: dict[str, Any], metrics: tuple[str, ...]) -> None:
    for metric in metrics:
        for contender in CONTENDERS:
            entry = report["summary"][metric][contender]
            assert entry is not None and entry["median"] > 0, (metric, contender)


def test_one_short_udp_round_reports_both_contenders_and_their_ratios(tmp_path: Path):
    metrics = ("p1_mbps", "p4_mbps", "rtt_us", "p1_pps", "p1_cpu_server")
    report, stdout, pid = _bench(tmp_path, ["--rounds", "1", "--duration", "1",
                                            "--transport", "udp"], timeout=150)
    assert report["contenders"] == list(CONTENDERS)
    _assert_measured(report, metrics)
    assert all(report["ratios"][metric] > 0 for metric in metrics)
    assert "trivpn/openvpn" in stdout  # the table was printed
    leftovers = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                               check=False).stdout
    assert f"tvbench-{pid}-" not in leftovers  # scripts/bench execs: same PID


def test_rtt_rounds_report_rtt_and_cpu_per_ping_of_both_contenders(tmp_path: Path):
    report, _, _ = _bench(tmp_path, ["rtt", "--rounds", "1", "--pings", "5"], timeout=120)
    assert report["benchmark"] == "rtt"
    _assert_measured(report, ("rtt_us", "rtt_min_us", "cpu_server_us", "cpu_client_us"))


def test_one_short_handshake_round_measures_both_servers(tmp_path: Path):
    report, _, _ = _bench(tmp_path, ["handshakes", "--rounds", "1", "--count", "40"],
                          timeout=150)
    _assert_measured(report, ("handshakes_per_s", "server_cpu_ms_per_handshake",
                              "server_busy_percent", "swarm_cpu_ms_per_handshake"))
    assert report["summary"]["failed"]["trivpn"]["median"] == 0
