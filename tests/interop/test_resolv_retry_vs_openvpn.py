"""``resolv-retry``: the real ``openvpn`` 2.6 client and ``trivpn run`` with the same config,
side by side in a namespace where no name resolves, compared lookup by lookup.

The namespace has only loopback and its own resolv.conf naming an unreachable 198.18 server,
so every lookup fails at once (EAI_AGAIN) and no query leaves it. Compared: how many lookups,
of which remote, how far apart (relative to each program's first lookup), and how the program
ends. What was observed with openvpn 2.6.14 (``socket.c`` ``openvpn_getaddrinfo``):

* ``resolv-retry 0``: one lookup, "Exiting due to fatal error", exit status 1.
* ``resolv-retry N``: per connection attempt two lookups at once, then one every 5 s up to
  ``1 + ceil(N / 5)``; then "SIGUSR1[soft,Could not determine IPv4/IPv6 protocol]": the next
  remote after the ``connect-retry`` pause, for ever (never an exit).
* ``infinite`` (the default): two lookups per attempt, restarting for ever; the pause doubles
  from the fifth restart (1, 1, 1, 1, 2, 4 … s with one remote).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.interop.openvpn import write_pki
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import Netns, NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.directive("resolv-retry")]

WINDOW = 6.5
"""Seconds after each program's first lookup that are compared (lookups fall on whole seconds
of the schedule; the next ones after the window are at 7, 10 and 11 s)."""
TOLERANCE = 0.35
_OPENVPN_LOOKUP = re.compile(
    r"^(\d+\.\d+) \S+ RESOLVE: Cannot resolve host address: ([^:\s]+):", re.M)

Lookups = list[tuple[float, str]]


@pytest.fixture
def no_dns(lab: NetnsLab, openvpn_binary: None) -> Iterator[Netns]:
    """A namespace whose resolver points at a name server that cannot be reached."""
    ns = lab.add("dns")
    etc = Path("/etc/netns") / ns.name
    etc.mkdir(parents=True)
    try:
        (etc / "resolv.conf").write_text("nameserver 198.18.200.53\noptions attempts:1 timeout:1\n")
        yield ns
    finally:
        shutil.rmtree(etc, ignore_errors=True)


def _config(workdir: Path, name: str, extra: list[str], remotes: tuple[str, ...]) -> Path:
    conf = workdir / f"{name}.conf"
    conf.write_text("\n".join(["client", "dev tun", "nobind", "verb 3",
                               f"ca {workdir}/ca.crt", f"cert {workdir}/client.crt",
                               f"key {workdir}/client.key",
                               *(f"remote {host} 1194" for host in remotes), *extra]) + "\n")
    return conf


def _openvpn_cmd(conf: Path, log: Path) -> list[str]:
    return ["openvpn", "--config", str(conf), "--log", str(log), "--machine-readable-output"]


def _trivpn_cmd(conf: Path, log: Path) -> list[str]:
    return [sys.executable, "-m", "trivpn", "run", str(conf), "--log-format", "json",
            "--log-file", str(log)]


def _openvpn_lookups(log: Path) -> Lookups:
    text = log.read_text(errors="replace") if log.exists() else ""
    return [(float(t), host) for t, host in _OPENVPN_LOOKUP.findall(text)]


def _trivpn_lookups(log: Path) -> Lookups:
    return [(datetime.fromisoformat(e["timestamp"]).timestamp(), e["host"])
            for e in TrivpnProcess(log, 0).events() if e.get("event") == "resolve_failed"]


def _relative(lookups: Lookups) -> Lookups:
    start = lookups[0][0]
    return [(round(t - start, 2), host) for t, host in lookups if t - start < WINDOW]


def test_resolv_retry_0_exits_with_status_1_after_one_lookup_as_openvpn(
        no_dns: Netns, tmp_path: Path) -> None:
    write_pki(tmp_path)
    conf = _config(tmp_path, "zero", ["resolv-retry 0"], ("nohost-a.invalid",
                                                          "nohost-b.invalid"))
    ovpn = no_dns.run(_openvpn_cmd(conf, tmp_path / "zero.ovpn.log"), check=False, timeout=10)
    triv = no_dns.run(_trivpn_cmd(conf, tmp_path / "zero.trivpn.log"), check=False, timeout=10)
    ovpn_text = (tmp_path / "zero.ovpn.log").read_text()
    assert "Exiting due to fatal error" in ovpn_text
    assert (ovpn.returncode, triv.returncode) == (1, 1)
    assert [h for _, h in _openvpn_lookups(tmp_path / "zero.ovpn.log")] == ["nohost-a.invalid"]
    assert [h for _, h in _trivpn_lookups(tmp_path / "zero.trivpn.log")] == ["nohost-a.invalid"]


CASES = {
    # name: (config lines, remotes)
    "retry6": (["resolv-retry 6"], ("nohost-a.invalid",)),
    "infinite": (["resolv-retry infinite"], ("nohost-a.invalid",)),
    "tworemotes": (["resolv-retry 5"], ("nohost-a.invalid", "nohost-b.invalid")),
}


def test_resolv_retry_lookups_spacing_and_restarts_match_openvpn(
        no_dns: Netns, tmp_path: Path) -> None:
    """All six programs run at once; each is compared over WINDOW s after its first lookup."""
    write_pki(tmp_path)
    logs: dict[tuple[str, str], Path] = {}
    pids: list[int] = []
    for case, (extra, remotes) in CASES.items():
        conf = _config(tmp_path, case, extra, remotes)
        for impl, cmd in (("openvpn", _openvpn_cmd), ("trivpn", _trivpn_cmd)):
            log = logs[case, impl] = tmp_path / f"{case}.{impl}.log"
            pids.append(no_dns.spawn(cmd(conf, log)).pid)
    read = {"openvpn": _openvpn_lookups, "trivpn": _trivpn_lookups}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        firsts = [read[impl](log)[:1] for (_, impl), log in logs.items()]
        if all(firsts) and time.time() > max(f[0][0] for f in firsts) + WINDOW + 0.5:
            break
        time.sleep(0.2)
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    for case in CASES:
        ovpn = _relative(read["openvpn"](logs[case, "openvpn"]))
        triv = _relative(read["trivpn"](logs[case, "trivpn"]))
        print(f"{case}: openvpn {ovpn}\n{case}: trivpn  {triv}")
        assert [h for _, h in triv] == [h for _, h in ovpn], case
        assert all(abs(a - b) <= TOLERANCE for (a, _), (b, _) in zip(triv, ovpn, strict=True)), (
            case, ovpn, triv)
    # what openvpn itself did, so a change of the reference is noticed
    assert [t for t, _ in _relative(_openvpn_lookups(logs["retry6", "openvpn"]))] == (
        pytest.approx([0, 0, 5, 6, 6], abs=TOLERANCE))
    assert [t for t, _ in _relative(_openvpn_lookups(logs["infinite", "openvpn"]))] == (
        pytest.approx([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 6, 6], abs=TOLERANCE))
