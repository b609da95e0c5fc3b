"""``scripts/bench``: trivpn against OpenVPN 2.6 in namespaces it creates (198.18.0.0/15).

Modules: :mod:`.measure` (parsing iperf3/ping/procfs output, pure), :mod:`.stats` (medians,
ratios), :mod:`.report` (table and JSON), :mod:`.lab` (namespaces and processes, cleaned up by
PID), :mod:`.contenders` (configs, start/stop), :mod:`.throughput` (interleaved rounds),
:mod:`.swarm` (many sans-IO client sessions in one process), :mod:`.handshakes` and :mod:`.idle`.
"""
