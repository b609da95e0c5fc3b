"""The idle-scale benchmark: N clients held by one trivpn server, at rest with keepalive.

The clients are sans-IO sessions in one swarm process (:mod:`trivpn.bench.swarm`) in the client
namespace, 32 connecting at a time; the server's ``connect-freq-initial`` is set far above that
rate (its default, 100 per 10 s, only counts resets whose clients never complete the handshake,
but a retransmitted reset counts too).
Then the server's RSS (``/proc/PID/status``) and CPU seconds are taken, and again after
``rest`` seconds: memory per client is (RSS with clients - RSS before) / N, CPU at rest is the
share of one core over the rest period. Everything answers keepalive (``keepalive K 6K``).
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trivpn.bench.contenders import (
    CLIENT_LINK_IP,
    SERVER_LINK_IP,
    TunnelSpec,
    client_config,
    server_config,
    start,
    wait_listening,
    write_pki,
)
from trivpn.bench.handshakes import (
    CONNECT_FREQ_INITIAL,
    POOL,
    absolute_files,
    read_json_line,
    swarm_command,
)
from trivpn.bench.lab import Lab, LabError
from trivpn.bench.measure import MeasureError
from trivpn.bench.report import Metric, build_report
from trivpn.bench.rounds import Progress

METRICS: tuple[Metric, ...] = (
    Metric("connected", "clients connected", ""),
    Metric("connect_s", "time to connect them all", "s", 1),
    Metric("rss_before_mib", "server RSS before", "MiB", 1),
    Metric("rss_after_mib", "server RSS with clients", "MiB", 1),
    Metric("kib_per_client", "memory per client", "KiB", 1),
    Metric("cpu_percent", "server CPU at rest", "% of a core", 2),
)
CONNECT_CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class IdleOptions:
    clients: int = 1000
    rest: float = 30.0
    keepalive: int = 10


def run_idle(opts: IdleOptions, progress: Progress) -> dict[str, Any]:
    errors: list[str] = []
    values: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="trivpn-bench-") as tmp, Lab() as lab:
        workdir = Path(tmp)
        write_pki(workdir)
        server_ns, client_ns = lab.add("srv"), lab.add("cli")
        lab.veth(server_ns, client_ns, f"{SERVER_LINK_IP}/24", f"{CLIENT_LINK_IP}/24")
        spec = TunnelSpec(network=POOL[0], netmask=POOL[1],
                          keepalive=(opts.keepalive, opts.keepalive * 6),
                          server_extra=("duplicate-cn", f"max-clients {opts.clients + 16}",
                                        CONNECT_FREQ_INITIAL))
        server = start(lab, server_ns, "trivpn", "server", workdir=workdir,
                       lines=server_config(spec))
        try:
            wait_listening(lab, server_ns, server, "udp")
            time.sleep(1.0)
            rss0 = server.rss_kib()
            conf = workdir / "swarm.conf"
            conf.write_text("\n".join(absolute_files(client_config(spec), workdir)) + "\n")
            connect_budget = 60.0 + opts.clients * 0.1  # 10 per second would be very slow
            progress(f"connecting {opts.clients} clients (up to {connect_budget:.0f} s)")
            swarm = lab.spawn(client_ns, swarm_command(
                conf, "idle", count=opts.clients, concurrency=CONNECT_CONCURRENCY,
                timeout=connect_budget), stdout=subprocess.PIPE)
            ready = read_json_line(swarm, "ready", connect_budget + 30)
            connected = int(ready["connected"])
            progress(f"  {connected} connected in {ready['elapsed']:.1f} s; "
                     f"resting {opts.rest:g} s")
            time.sleep(2.0)
            cpu0, t0 = server.cpu_seconds(), time.monotonic()
            time.sleep(opts.rest)
            cpu1, t1 = server.cpu_seconds(), time.monotonic()
            rss1 = server.rss_kib()
            lab.stop(swarm)
            values = {
                "connected": float(connected),
                "connect_s": float(ready["elapsed"]),
                "rss_before_mib": rss0 / 1024.0,
                "rss_after_mib": rss1 / 1024.0,
                "kib_per_client": (rss1 - rss0) / connected if connected else 0.0,
                "cpu_percent": (cpu1 - cpu0) / (t1 - t0) * 100.0,
            }
            if connected < opts.clients:
                errors.append(f"only {connected} of {opts.clients} clients connected "
                              f"({ready['failed']} failed)")
        except (LabError, MeasureError, subprocess.TimeoutExpired, OSError) as exc:
            errors.append(str(exc))
        finally:
            lab.stop(server.proc)
    config = {"clients": opts.clients, "rest_s": opts.rest, "keepalive": opts.keepalive}
    rounds = [{"trivpn": values}] if values else []
    return build_report("idle", config, ("trivpn",), METRICS, rounds, errors=errors)
