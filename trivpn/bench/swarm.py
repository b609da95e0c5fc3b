"""Many sans-IO client :class:`~trivpn.protocol.session.Session` objects in one process.

Runs inside the client namespace (``python -m trivpn.bench swarm CONFIG ...``), one UDP socket
per client so the server sees distinct peers. Reports JSON lines on stdout:

* ``--mode handshakes`` (:mod:`trivpn.bench.handshake_swarm`, no trio: the load generator has to
  be cheaper than the servers): ``count`` full handshakes (reset, TLS, key method 2, push
  reply), at most ``concurrency`` in flight; each finished client says EXIT and closes. With
  ``--start-at T`` the first client starts at Unix time T (so that several swarm processes start
  together). With ``--ports LO-HI`` the clients take their local ports from that range in turn
  rather than from the kernel, which may hand a just-closed port to the next client: a server
  that still holds the previous session of that address (OpenVPN keeps it for seconds after
  EXIT) would stall the new one. Final line: ``{"event": "done", "completed", "failed",
  "elapsed", "rate", "started", "ended", "cpu"}`` (``started``/``ended`` Unix times, ``cpu``
  the process's CPU seconds between them).
* ``--mode idle`` (one trio loop): ``count`` clients connect (``concurrency`` in flight,
  starts paced by ``start_rate`` after ``start_burst``) and then stay, answering keepalive,
  until SIGTERM.
  Prints ``{"event": "ready", "connected", "failed", "elapsed"}`` once all are up.

Every phase is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import socket
import sys
import time
from dataclasses import dataclass

import trio

from trivpn.bench.handshake_swarm import HandshakePlan, HandshakeSwarm
from trivpn.config import load_config
from trivpn.protocol import events as ev
from trivpn.protocol.session import Session, SessionConfig
from trivpn.sessionsetup import session_config

RECV_SIZE = 65536


@dataclass
class Tally:
    completed: int = 0
    failed: int = 0
    connected: int = 0


def _emit(doc: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


async def run_client(config: SessionConfig, server: tuple[str, int], *, stay: bool,
                     tally: Tally, ready: trio.Event | None = None) -> bool:
    """One client session over its own UDP socket. Returns True once the push reply and a data
    key are there; with ``stay`` it then keeps answering (keepalive) until cancelled."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        await sock.connect(server)
        now = trio.current_time()
        session = Session(config, now)
        session.start(now)
        pushed = keyed = done = False
        while True:
            for data in session.take_datagrams():
                await sock.send(data)
            session.take_tun_packets()
            for event in session.take_events():
                if isinstance(event, ev.PushReceived):
                    pushed = True
                elif isinstance(event, ev.DataChannelReady):
                    keyed = True
                elif isinstance(event, (ev.HandshakeFailed, ev.AuthFailed,
                                        ev.KeepaliveTimeout)) and session.failed:
                    tally.failed += 1
                    return False
            if pushed and keyed and not done:
                done = True
                tally.completed += 1
                if ready is not None:
                    ready.set()
                if not stay:
                    session.exit_notify(trio.current_time())
                    for data in session.take_datagrams():
                        await sock.send(data)
                    return True
                tally.connected += 1
            deadline = session.next_timer()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                data = await sock.recv(RECV_SIZE)
                session.receive_datagram(data, trio.current_time())
                continue
            session.handle_timer(trio.current_time())
    except OSError:
        tally.failed += 1
        return False
    finally:
        sock.close()


@dataclass(frozen=True, slots=True)
class IdlePlan:
    count: int
    concurrency: int
    start_rate: float | None
    start_burst: int
    timeout: float


async def _idle(config: SessionConfig, server: tuple[str, int], plan: IdlePlan) -> None:
    count, start_rate, start_burst = plan.count, plan.start_rate, plan.start_burst
    tally = Tally()
    limiter = trio.CapacityLimiter(plan.concurrency)
    start = trio.current_time()

    async def one(nursery: trio.Nursery) -> None:
        ready = trio.Event()

        async def hold() -> None:
            await run_client(config, server, stay=True, tally=tally, ready=ready)
            ready.set()

        async with limiter:
            nursery.start_soon(hold)
            await ready.wait()

    async with trio.open_nursery() as nursery:
        with trio.move_on_after(plan.timeout):
            async with trio.open_nursery() as starters:
                for n in range(count):
                    if start_rate is not None and n >= start_burst:
                        await trio.sleep_until(start + (n - start_burst) / start_rate)
                    starters.start_soon(one, nursery)
        _emit({"event": "ready", "connected": tally.connected, "failed": tally.failed,
               "elapsed": trio.current_time() - start})
        await trio.sleep_forever()


def swarm_main(args: argparse.Namespace) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, args.count + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    options = load_config(args.config)
    remote = options.remotes[0]
    server = (remote.host, remote.port)

    if args.mode == "handshakes":
        config = session_config(options, unix_time_offset=time.time() - time.monotonic())
        tally = HandshakeSwarm(config, server, HandshakePlan(
            args.count, args.concurrency, args.timeout, args.start_at, args.ports)).run()
        elapsed = tally.ended - tally.started
        _emit({"event": "done", "completed": tally.completed, "failed": tally.failed,
               "elapsed": elapsed,
               "rate": tally.completed / elapsed if elapsed > 0 else 0.0,
               "started": tally.started, "ended": tally.ended, "cpu": tally.cpu})
        return 0

    async def main() -> None:
        config = session_config(options, unix_time_offset=time.time() - trio.current_time())
        with trio.open_signal_receiver(2, 15) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_idle, config, server, IdlePlan(
                    args.count, args.concurrency, args.start_rate, args.start_burst,
                    args.timeout))
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)
    return 0
