"""Parsing what iperf3, ping, /proc and ip print."""

from __future__ import annotations

import json

import pytest

from trivpn.bench.measure import (
    MeasureError,
    parse_iperf3,
    parse_ping_rtts,
    parse_proc_stat_cpu,
    parse_schedstat_ns,
    parse_ss_segs_out,
    parse_status_rss_kib,
    parse_tcp_out_segs,
)


def _iperf_doc(bps: float, seconds: float = 10.0, retransmits: int = 7) -> str:
    return json.dumps({"start": {}, "end": {
        "sum_sent": {"bits_per_second": bps * 1.01, "seconds": seconds,
                     "retransmits": retransmits},
        "sum_received": {"bits_per_second": bps, "seconds": seconds}}})


def test_iperf3_reports_receiver_throughput_in_mbits_and_sender_retransmits():
    result = parse_iperf3(_iperf_doc(612_500_000.0, 10.02, 41))
    assert result.mbps == pytest.approx(612.5)
    assert result.seconds == pytest.approx(10.02)
    assert result.retransmits == 41


@pytest.mark.parametrize(("text", "reason"), [
    ("iperf3: error - unable to connect", "not JSON"),
    (json.dumps({"error": "unable to connect to server"}), "unable to connect"),
    (json.dumps({"end": {}}), "no end.sum_received"),
    (json.dumps([1, 2]), "not an object"),
])
def test_iperf3_failures_name_the_reason(text: str, reason: str):
    with pytest.raises(MeasureError, match=reason) as info:
        parse_iperf3(text)
    assert info.value.tool == "iperf3"


def test_ping_rtts_are_every_reply_in_microseconds():
    text = """PING 198.18.8.1 (198.18.8.1) 56(84) bytes of data.
64 bytes from 198.18.8.1: icmp_seq=1 ttl=64 time=0.412 ms
64 bytes from 198.18.8.1: icmp_seq=2 ttl=64 time=1.05 ms
64 bytes from 198.18.8.1: icmp_seq=3 ttl=64 time<0.001 ms

--- 198.18.8.1 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 102ms
rtt min/avg/max/mdev = 0.000/0.487/1.050/0.430 ms
"""
    assert parse_ping_rtts(text) == pytest.approx([412.0, 1050.0, 1.0])


def test_ping_without_replies_gives_no_rtts():
    assert parse_ping_rtts("2 packets transmitted, 0 received, 100% packet loss") == []


def test_proc_stat_cpu_counts_user_plus_system_after_an_awkward_command_name():
    fields = ["S", "1", "2", "3", "0", "-1", "4194560", "10", "0", "0", "0",
              "250", "50", "0", "0", "20", "0", "1"]
    text = "4242 (py thon) x) " + " ".join(fields)
    assert parse_proc_stat_cpu(text, 100) == pytest.approx(3.0)


def test_proc_stat_without_fields_is_an_error():
    with pytest.raises(MeasureError):
        parse_proc_stat_cpu("4242 (python) S 1", 100)


def test_status_rss_is_read_in_kib():
    assert parse_status_rss_kib("Name:\tpython\nVmPeak:\t 9 kB\nVmRSS:\t   57344 kB\n") == 57344
    with pytest.raises(MeasureError):
        parse_status_rss_kib("Name:\tkthread\n")


SNMP = """Ip: Forwarding DefaultTTL InReceives
Ip: 2 64 12
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails EstabResets \
CurrEstab InSegs OutSegs RetransSegs InErrs OutRsts InCsumErrors
Tcp: 1 200 120000 -1 3 1 0 0 2 81234 90817 12 0 1 0
Udp: InDatagrams NoPorts
Udp: 5 0
"""


def test_tcp_out_segs_come_from_proc_net_snmp():
    assert parse_tcp_out_segs(SNMP) == 90817
    with pytest.raises(MeasureError):
        parse_tcp_out_segs("Ip: Forwarding\nIp: 2\n")


def test_ss_segs_out_are_summed_over_sockets():
    text = ("ESTAB 0 0 198.18.0.2:40000 198.18.0.1:1194\n\t cubic wscale:7,7 rto:201 "
            "bytes_sent:900 segs_out:1200 segs_in:800 data_segs_out:1100\n"
            "ESTAB 0 0 198.18.0.2:40002 198.18.0.1:1194\n\t segs_out:34 segs_in:2\n")
    assert parse_ss_segs_out(text) == 1234
    assert parse_ss_segs_out("") == 0


def test_schedstat_run_time_is_the_first_field_in_nanoseconds():
    assert parse_schedstat_ns("123456789 2345 67\n") == 123456789


def test_schedstat_without_fields_is_an_error():
    with pytest.raises(MeasureError):
        parse_schedstat_ns("")
