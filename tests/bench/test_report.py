"""Medians, ratios and the table/JSON report of the benchmark."""

from __future__ import annotations

import json

import pytest

from trivpn.bench.report import Metric, build_report, format_table
from trivpn.bench.stats import ratio, summarize

METRICS = (Metric("p1_mbps", "TCP, 1 stream", "Mbit/s"),
           Metric("rtt_us", "idle RTT", "us", 1))
ROUNDS = [
    {"trivpn": {"p1_mbps": 1000.0, "rtt_us": 300.0}, "openvpn": {"p1_mbps": 500.0,
                                                               "rtt_us": 150.0}},
    {"trivpn": {"p1_mbps": 1200.0, "rtt_us": 310.0}, "openvpn": {"p1_mbps": 550.0,
                                                               "rtt_us": 160.0}},
    {"trivpn": {"p1_mbps": 900.0, "rtt_us": 280.0}, "openvpn": {"p1_mbps": 600.0,
                                                              "rtt_us": 170.0}},
]


def test_summary_is_median_min_max_and_count():
    s = summarize([3.0, 1.0, 2.0, 10.0])
    assert s is not None
    assert (s.median, s.low, s.high, s.count) == (2.5, 1.0, 10.0, 4)


def test_summary_of_nothing_is_none_and_so_is_its_ratio():
    assert summarize([]) is None
    assert ratio(None, summarize([1.0])) is None
    assert ratio(summarize([1.0]), summarize([0.0])) is None


def test_ratio_divides_medians():
    assert ratio(summarize([4.0, 6.0, 100.0]), summarize([2.0, 3.0, 1.0])) == 3.0


def test_report_has_per_contender_summaries_and_trivpn_over_openvpn_ratios():
    report = build_report("throughput", {"rounds": 3}, ("trivpn", "openvpn"), METRICS, ROUNDS)
    assert report["summary"]["p1_mbps"]["trivpn"] == {"median": 1000.0, "min": 900.0,
                                                      "max": 1200.0, "n": 3}
    assert report["summary"]["p1_mbps"]["openvpn"]["median"] == 550.0
    assert report["ratios"]["p1_mbps"] == pytest.approx(1000.0 / 550.0)
    assert report["ratios"]["rtt_us"] == pytest.approx(300.0 / 160.0)
    assert json.loads(json.dumps(report)) == report  # plain JSON data


def test_a_contender_missing_from_a_round_is_summarized_over_the_others():
    rounds = [{"trivpn": {"p1_mbps": 10.0}}, {"trivpn": {"p1_mbps": 20.0},
                                              "openvpn": {"p1_mbps": 5.0}}]
    report = build_report("t", {}, ("trivpn", "openvpn"), METRICS[:1], rounds,
                          errors=["round 1 openvpn: boom"])
    assert report["summary"]["p1_mbps"]["openvpn"]["n"] == 1
    assert report["ratios"]["p1_mbps"] == 3.0
    assert report["errors"] == ["round 1 openvpn: boom"]


def test_table_shows_median_with_range_and_the_ratio():
    report = build_report("throughput", {}, ("trivpn", "openvpn"), METRICS, ROUNDS)
    lines = format_table(report, METRICS).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == ["metric", "trivpn", "openvpn", "trivpn/openvpn"]
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row == ["TCP, 1 stream (Mbit/s)", "1,000 (900-1,200)", "550 (500-600)", "1.82x"]
    rtt = [c.strip() for c in lines[3].strip("|").split("|")]
    assert rtt[1:] == ["300.0 (280.0-310.0)", "160.0 (150.0-170.0)", "1.88x"]


def test_table_for_one_contender_and_one_round_has_no_ratio_or_range():
    report = build_report("idle", {}, ("trivpn",), METRICS[:1], [{"trivpn": {"p1_mbps": 5.0}}])
    lines = format_table(report, METRICS[:1]).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["metric", "trivpn"]
    assert [c.strip() for c in lines[2].strip("|").split("|")] == ["TCP, 1 stream (Mbit/s)", "5"]


def test_table_marks_a_contender_without_values():
    report = build_report("t", {}, ("trivpn", "openvpn"), METRICS[:1],
                          [{"trivpn": {"p1_mbps": 5.0}}])
    row = [c.strip() for c in format_table(report, METRICS[:1]).splitlines()[2]
           .strip("|").split("|")]
    assert row[2:] == ["—", "—"]


def test_a_third_contender_gets_its_own_ratio_to_the_second():
    rounds = [{**r, "trivpn@base": {"p1_mbps": r["trivpn"]["p1_mbps"] / 2,
                                    "rtt_us": r["trivpn"]["rtt_us"]}} for r in ROUNDS]
    report = build_report("throughput", {}, ["trivpn", "openvpn", "trivpn@base"], METRICS,
                          rounds)
    assert report["ratios"]["p1_mbps"] == 1000.0 / 550.0
    assert report["ratios_to_second"]["trivpn@base"]["p1_mbps"] == 500.0 / 550.0
    assert report["ratios_to_second"]["trivpn"]["p1_mbps"] == 1000.0 / 550.0
    header = format_table(report, METRICS).splitlines()[0]
    assert "trivpn/openvpn" in header and "trivpn@base/openvpn" in header
