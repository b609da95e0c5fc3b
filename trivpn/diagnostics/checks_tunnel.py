"""``tunnel.traffic``: once a handshake works, does data flow both ways?

On the doctor's shared tunnel session (tunnel_session.py), ICMP echo requests from the pushed
tunnel address to the tunnel gateway (``route-gateway`` for topology subnet, the ``ifconfig``
peer for net30/p2p) are encrypted by the session and sent on the link; the echo replies are
decrypted by the session. No TUN device and no privileges are needed, and nothing on this host
is reconfigured.

When no reply comes, the failure names the cause the evidence shows: a compression framing
mismatch (the options strings tls.handshake recorded, or server packets arriving with a
compression byte this config does not strip), another data-channel option that breaks every
packet (fragment, dev-type, auth, a cipher that was not negotiated), packets that do not
decrypt (keys/cipher); the server's firewall or rp_filter only when nothing else explains it.
"""

from __future__ import annotations

import os
from typing import Any

import trio

from trivpn.diagnostics.checks_compat import Mismatch, compare
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip
from trivpn.diagnostics.probe_icmp import echo_request, parse_echo_reply
from trivpn.diagnostics.tunnel_session import TunnelUnavailable, gateway_of, tunnel_lease
from trivpn.protocol.compression import NO_COMPRESS_BYTE, NO_COMPRESS_BYTE_SWAP

__all__ = ["CHECKS", "explain_no_reply", "gateway_of", "run"]

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
    non_ip = dict(t.non_ip)
    if non_ip:
        evidence["non_ip_received"] = {f"0x{b:02x}" if b >= 0 else "empty": n
                                       for b, n in sorted(non_ip.items())}
    cause, why, fix = explain_no_reply(ctx, session_drops, non_ip, gateway)
    evidence["cause"] = cause
    return problem(
        ID, "fail", f"no echo reply from the tunnel gateway {gateway} after {len(sent_at)} "
        f"request(s){_CAUSE_WORDS.get(cause, '')}", **evidence,
        explanation=f"The handshake completed, but {len(sent_at)} ICMP echo request(s) from "
        f"{local} to {gateway} through the tunnel got no reply. {why} OpenVPN would show "
        "'Initialization Sequence Completed' and then nothing works, ending in 'Inactivity "
        "timeout (--ping-restart), restarting'.",
        fix=fix)


_CAUSE_WORDS = {"compression_mismatch": ": the two sides frame data for compression "
                "differently",
                "options_mismatch": ": the server's data-channel options differ from ours",
                "keys_or_cipher": ": the server's data packets do not decrypt"}
# Options-string items whose difference breaks every data packet, small pings included
# (a different tun-mtu only breaks large packets: not a reason for a lost ping).
_BREAKS_EVERY_PACKET = ("mtu-dynamic", "dev-type", "auth", "cipher")
# First bytes of uncompressed packets framed for compression (compressed ones start with 0x66
# or 0x69, which look like IPv6: not counted as non-IP, and pings are never compressed).
_FRAMING = {NO_COMPRESS_BYTE: "0xFA, the 'comp-lzo'/'compress lzo' framing byte",
            NO_COMPRESS_BYTE_SWAP: "0xFB, the 'compress' (stub/lz4) framing byte"}


def _occ_mismatches(ctx: DoctorContext) -> list[Mismatch]:
    """What compat.occ will report, from tls.handshake's options strings, for a tunnel that
    passes no traffic."""
    handshake = ctx.results.get("tls.handshake")
    occ = handshake.evidence.get("occ") if handshake is not None else None
    if not occ or not occ.get("server") or not occ.get("local"):
        return []
    name = ctx.config_path.name if ctx.config_path is not None else "the config"
    return [m for m in compare(occ, traffic="fail", config_name=name)
            if m.severity != "note"]


def explain_no_reply(ctx: DoctorContext, drops: dict[str, int], non_ip: dict[int, int],
                  gateway: str) -> tuple[str, str, str]:
    """(cause, explanation sentence(s), fix) for echo requests that got no reply: the cause
    the evidence shows (compression framing, data-channel options, decryption), the server's
    kernel dropping them only when nothing else explains it."""
    mismatches = _occ_mismatches(ctx)
    compression = [m for m in mismatches if m.item == "comp-lzo"]
    framed = {b: n for b, n in non_ip.items() if b in _FRAMING}
    if compression or framed:
        seen = []
        if compression:
            m = compression[0]
            if m.ours is None:
                said = ("the server has compression configured ('comp-lzo' in its string: "
                        "'comp-lzo' or 'compress' in its config) without pushing it, and this "
                        "config has none")
            elif m.server is None:
                said = ("this config frames data for compression ('comp-lzo' in our string) "
                        "and the server does not")
            else:
                said = ("both sides frame data for compression, in forms the string does not "
                        "tell apart ('comp-lzo' and 'compress' frame differently)")
            seen.append("The options strings exchanged in the handshake (tls.handshake's "
                        f"'occ' evidence) show that {said}.")
        if framed:
            what = "; ".join(f"{n} starting with {_FRAMING[b]}" for b, n in framed.items())
            seen.append(f"The server's own data packets (its keepalive pings) arrive framed "
                        f"for compression, which this config does not strip ({what}).")
        return ("compression_mismatch",
                " ".join(seen) + " With 'comp-lzo' or 'compress lzo'/'lz4' every data packet "
                "carries a compression byte, so each side misreads the other's packets: the "
                "server drops our echo requests (with 'comp-lzo' its log says 'Bad LZO "
                "decompression header byte'). That explains the silence without a firewall "
                "(compat.occ has the details).",
                compression[0].fix if compression else
                "Make both sides agree on compression: best, remove 'compress'/'comp-lzo' from "
                "the server's config; or have the server push it (push \"compress stub-v2\"), "
                "or add the server's compression line to "
                f"{ctx.config_path.name if ctx.config_path is not None else 'the config'}.")
    breaking = [m for m in mismatches if m.item in _BREAKS_EVERY_PACKET]
    if breaking:
        return ("options_mismatch",
                "The options strings exchanged in the handshake (tls.handshake's 'occ' "
                "evidence) show a difference that breaks every data packet: "
                + " ".join(m.meaning.rstrip(".") + "." for m in breaking)
                + " (compat.occ has the details.)",
                " ".join(m.fix for m in breaking))
    if drops:
        return ("keys_or_cipher",
                f"The session dropped {sum(drops.values())} incoming packet(s) "
                f"({', '.join(f'{k}: {v}' for k, v in drops.items())}): data arrives but does "
                "not decrypt, so the data-channel keys or cipher differ between the two sides.",
                "Compare 'data-ciphers'/'cipher' and 'auth' with the server's; on the server, "
                "check its log for 'Authenticate/Decrypt packet error' or 'bad packet ID'.")
    return ("no_reply",
            "Nothing came back through the data channel, and neither the options strings nor "
            "the packets received show a compression, cipher or options mismatch: the server "
            "received the encrypted echo requests but did not answer them — its kernel dropped "
            "them (a firewall on the tun interface, rp_filter, or no address on it), or it did "
            "not accept our data packets.",
            "On the server, check its log for 'Authenticate/Decrypt packet error' or 'bad "
            "packet ID', its firewall for the tun interface (e.g. 'nft list ruleset'), and that "
            f"the gateway address {gateway} is configured on its tun device.")


CHECKS: tuple[Check, ...] = (
    Check(ID, run, roles=("client",), depends_on=("tls.handshake",)),
)
