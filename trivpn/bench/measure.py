"""Parse what the benchmark's tools print: iperf3 JSON, ping, /proc and ``ip -s -j link``.

Pure functions over text; each raises :class:`MeasureError` naming the tool and the reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


class MeasureError(Exception):
    """Output of a measuring tool could not be used."""

    def __init__(self, tool: str, reason: str) -> None:
        super().__init__(f"{tool}: {reason}")
        self.tool = tool
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IperfResult:
    """Receiver-side throughput of one iperf3 TCP test (all streams summed)."""

    mbps: float
    seconds: float
    retransmits: int


def parse_iperf3(text: str) -> IperfResult:
    """``iperf3 -J`` output of a TCP client test → received Mbit/s, duration, retransmits."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise MeasureError("iperf3", f"not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise MeasureError("iperf3", "JSON is not an object")
    if doc.get("error"):
        raise MeasureError("iperf3", str(doc["error"]))
    end: Any = doc.get("end")
    try:
        received = end["sum_received"]
        sent = end["sum_sent"]
        return IperfResult(mbps=float(received["bits_per_second"]) / 1e6,
                           seconds=float(received["seconds"]),
                           retransmits=int(sent.get("retransmits", 0)))
    except (KeyError, TypeError, ValueError):
        raise MeasureError("iperf3", "no end.sum_received/sum_sent in the report") from None


_PING_TIME = re.compile(r"\btime[=<]([0-9.]+) ms\b")


def parse_ping_rtts(text: str) -> list[float]:
    """Every reply's round-trip time in microseconds, in order (``ping`` without ``-q``)."""
    return [float(m.group(1)) * 1000.0 for m in _PING_TIME.finditer(text)]


def parse_proc_stat_cpu(text: str, clock_ticks: int) -> float:
    """User + system CPU seconds from the text of ``/proc/PID/stat``.

    The command name (field 2) is in parentheses and may itself contain spaces and ``)``, so
    fields are counted from the last ``)``: utime and stime are fields 14 and 15.
    """
    close = text.rfind(")")
    if close < 0:
        raise MeasureError("/proc/PID/stat", "no ')' after the command name")
    fields = text[close + 1:].split()
    try:
        utime, stime = int(fields[11]), int(fields[12])
    except (IndexError, ValueError):
        raise MeasureError("/proc/PID/stat", "utime/stime missing") from None
    return (utime + stime) / clock_ticks


def parse_schedstat_ns(text: str) -> int:
    """CPU time in nanoseconds from the text of ``/proc/PID[/task/TID]/schedstat`` (its first
    field: time spent on the CPU)."""
    try:
        return int(text.split(maxsplit=1)[0])
    except (IndexError, ValueError):
        raise MeasureError("/proc/PID/schedstat", "no run time field") from None


def parse_status_rss_kib(text: str) -> int:
    """``VmRSS`` in KiB from the text of ``/proc/PID/status``."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            try:
                return int(parts[1])
            except (IndexError, ValueError):
                break
    raise MeasureError("/proc/PID/status", "no VmRSS line")


def parse_tcp_out_segs(snmp: str) -> int:
    """``OutSegs`` of the ``Tcp:`` lines of ``/proc/net/snmp``: segments a namespace's TCP sent,
    counted per segment even when the kernel handed them on as one TSO/GSO super-packet (which
    makes it the fair packet count where device counters see super-packets)."""
    lines = [line.split() for line in snmp.splitlines() if line.startswith("Tcp:")]
    if len(lines) >= 2:
        names, values = lines[0], lines[1]
        try:
            return int(values[names.index("OutSegs")])
        except (ValueError, IndexError):
            pass
    raise MeasureError("/proc/net/snmp", "no Tcp OutSegs counter")


def parse_ss_segs_out(text: str) -> int:
    """Sum of ``segs_out:N`` over the sockets ``ss -tin`` listed (0 for none)."""
    return sum(int(m) for m in re.findall(r"\bsegs_out:(\d+)", text))
