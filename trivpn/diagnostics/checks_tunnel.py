"""``tunnel.traffic``: once a handshake works, does data flow both ways?

On the doctor's shared tunnel session (tunnel_session.py), ICMP echo requests from the pushed
tunnel address to the tunnel gateway (``route-gateway`` for topology subnet, the ``ifconfig``
peer for net30/p2p) are encrypted by the session and sent on the link; the echo replies are
decrypted by the session. No TUN device and no privileges are needed, and nothing on this host
is reconfigured.
"""

from __future__ import annotations

import os
from typing import Any

import trio

from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip
from trivpn.diagnostics.probe_icmp import echo_request, parse_echo_reply
from trivpn.diagnostics.tunnel_session import TunnelUnavailable, gateway_of, tunnel_lease

__all__ = ["CHECKS", "gateway_of", "run"]

ID = "tunnel.traffic"
ECHO_COUNT = 3
ECHO_INTERVAL = 0.5
ECHO_WAIT = 3.0
ECHO_PAYLOAD = b"trivpn doctor tunnel.traffic probe"


async def run(ctx: DoctorContext) -> CheckResult:
    ident = int.from_bytes(os.urandom(2), "big")
    evidence: dict[str, Any] = {"echo_sent": 0, "echo_received": 0}
    try:
        async with tunnel_lease(ctx) as t:
            evidence["sent_to"] = t.remote
            local, gateway = t.local_ipv4, t.gateway
            if local is None or gateway is None:
                return skip(ID, "skipped: the server pushed no tunnel address and gateway to "
                            "ping", topology=t.pushed.topology, **evidence)
            evidence.update(local_address=local, gateway=gateway, topology=t.pushed.topology,
                            cipher=t.cipher)
            replies: dict[int, float] = {}
            sent_at: dict[int, float] = {}

            def reply_of(packet: bytes) -> int | None:
                echo = parse_echo_reply(packet)
                if (echo is not None and echo.ident == ident and echo.src == gateway
                        and echo.seq not in replies):
                    return echo.seq
                return None

            async def collect(until: float) -> bool:
                seq = await t.receive(reply_of, until)
                while seq is not None:
                    replies[seq] = trio.current_time()
                    seq = await t.receive(reply_of, trio.current_time())
                return bool(replies)

            end = trio.current_time() + ECHO_WAIT
            for seq in range(1, ECHO_COUNT + 1):
                packet = echo_request(local, gateway, ident, seq, ECHO_PAYLOAD)
                try:
                    await t.send(packet)
                except OSError:
                    continue
                sent_at[seq] = trio.current_time()
                t.mark("echo_request_sent", seq=seq, bytes=len(packet))
                if await collect(min(end, trio.current_time() + ECHO_INTERVAL)):
                    break
            if not replies:
                await collect(end)
            counters = t.counters
    except TunnelUnavailable as exc:
        return exc.skip_result(ID)
    session_drops: dict[str, int] = dict(counters["drops"])
    rtts = [round((at - sent_at[seq]) * 1000, 2) for seq, at in sorted(replies.items())
            if seq in sent_at]
    evidence.update(echo_sent=len(sent_at), echo_received=len(replies), rtt_ms=rtts,
                    drops=session_drops, timeline=t.timeline.steps,
                    data_packets_received=counters["received_packets"])
    if replies:
        best = min(rtts) if rtts else 0.0
        return ok(ID, f"data flows both ways: {gateway} answered an echo through the tunnel "
                  f"({best:.1f} ms)", **evidence)
    drops = session_drops
    if drops:
        why = (f"The session dropped {sum(drops.values())} incoming packet(s) "
               f"({', '.join(f'{k}: {v}' for k, v in drops.items())}): data arrives but does "
               "not decrypt, so the data-channel keys or cipher differ between the two sides.")
    else:
        why = ("Nothing came back through the data channel: the server received the encrypted "
               "echo requests but did not answer them — its kernel dropped them (a firewall "
               "on the tun interface, rp_filter, or no address on it), or it did not accept "
               "our data packets.")
    return problem(
        ID, "fail", f"no echo reply from the tunnel gateway {gateway} after {len(sent_at)} "
        "request(s)", **evidence,
        explanation=f"The handshake completed, but {len(sent_at)} ICMP echo request(s) from "
        f"{local} to {gateway} through the tunnel got no reply. {why} OpenVPN would show "
        "'Initialization Sequence Completed' and then nothing works, ending in 'Inactivity "
        "timeout (--ping-restart), restarting'.",
        fix="On the server, check its log for 'Authenticate/Decrypt packet error' or 'bad "
        "packet ID', its firewall for the tun interface (e.g. 'nft list ruleset'), and that "
        f"the gateway address {gateway} is configured on its tun device.")


CHECKS: tuple[Check, ...] = (
    Check(ID, run, roles=("client",), depends_on=("tls.handshake",)),
)
