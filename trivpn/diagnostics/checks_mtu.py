"""``mtu.path``: the largest packet that crosses the path to the server — counted only when
something answered it — and whether the tunnel's ``tun-mtu`` / ``mssfix`` / ``fragment`` fit it.

Data channel (the doctor's shared tunnel session, tunnel_session.py): with ``IP_MTU_DISCOVER =
IP_PMTUDISC_DO`` on the outer socket (Don't Fragment, never fragmented locally; the lease puts
the option back), ICMP echo requests to the server's tunnel address are padded so that the
OUTER datagram has exactly the size under test. The session's own framing (cipher, opcode and
peer-id, compression byte, fragment header) gives that size exactly (Session.data_wire_length()).
An echo reply is as big as its request, so an answer proves the size crosses in both
directions. :func:`search` binary-searches the largest answered size between a floor every path
must carry (576 bytes IPv4, 1280 IPv6) and the kernel's route MTU (``IP_MTU``: a bigger send
fails locally with EMSGSIZE). A size that fails is classified by what else came back: an ICMP
"fragmentation needed" (the kernel's path MTU drops below it, the socket reports EMSGSIZE) or
nothing at all — a black hole, when smaller sizes are answered.

Without a data channel (the handshake failed) the same search runs with padded
P_CONTROL_HARD_RESET_CLIENT_V2 packets on a socket of their own: an OpenVPN 2.6 server answers
each reset that authenticates with its tls-auth/tls-crypt key with its stateless HMAC-cookie
reset, whatever follows the reset's packet id (OpenVPN src/openvpn/mudp.c,
do_pre_decrypt_check(); src/openvpn/ssl_pkt.c, tls_pre_decrypt_lite()). The answer is small,
so this confirms only the direction towards the server.

Over TCP the kernel segments OpenVPN's stream, so the tunnel's packet sizes cannot overflow
the outer path; the check confirms that a full ``tun-mtu`` packet crosses the tunnel (a stalled
TCP connection would be an outer-path black hole, which is the kernel's to handle).
"""

from __future__ import annotations

import errno
import os
import socket
import time
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from trivpn.config import Options
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip
from trivpn.diagnostics.probe import (
    Target,
    classify_reply,
    new_session_id,
    open_target,
    probe_inputs,
    where,
)
from trivpn.diagnostics.probe_icmp import echo_request, parse_echo_reply
from trivpn.diagnostics.tunnel_session import Tunnel, TunnelUnavailable, tunnel_lease
from trivpn.protocol.datachannel import AEAD_TAG_LEN, CBC_BLOCK, CIPHERS
from trivpn.protocol.digests import digest_info
from trivpn.protocol.packets import ControlPacket, Opcode, encode_control
from trivpn.protocol.tlscryptv2 import TlsCryptV2
from trivpn.protocol.wrap import ControlWrap
from trivpn.runtime.link import make_socket

ID = "mtu.path"
# Linux <netinet/in.h> / <linux/in6.h>; the socket module does not export these.
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2
IP_MTU = 14
IPV6_MTU_DISCOVER = 23
IPV6_PMTUDISC_DO = 2
IPV6_MTU = 24
DATA_V2_HEADER = 4
PACKET_ID = 4
COMPRESSION_BYTE = 1
ECHO_HEADERS = 28  # IPv4 + ICMP echo headers: the smallest inner probe
FLOOR: dict[int, int] = {socket.AF_INET: 576, socket.AF_INET6: 1280}  # every path must carry these
FLOOR_TRIES = 3
TRIES = 2  # the smallest failing size counts as silent only after this many attempts
WAIT_MIN, WAIT_MAX = 0.25, 1.0  # per attempt: 4 round trips of the floor probe, bounded
SEARCH_BUDGET = 7.0  # seconds for the whole search (also bounded by the check's timeout)
TCP_WAIT = 2.0


def ip_udp_overhead(family: int) -> int:
    return (40 if family == socket.AF_INET6 else 20) + 8


def assumed_overhead(options: Options) -> tuple[int, str]:
    """Without a session: the bytes OpenVPN adds inside the UDP payload for the first
    configured data cipher (the one a 2.6 server normally picks; CBC with a full pad block),
    and that cipher."""
    cipher = options.data_ciphers[0].upper() if options.data_ciphers else "AES-256-GCM"
    aead = CIPHERS.get(cipher, (32, True))[1]
    extra = COMPRESSION_BYTE if options.compression else 0
    if aead:
        return DATA_V2_HEADER + PACKET_ID + AEAD_TAG_LEN + extra, cipher
    _name, hlen = digest_info(options.auth)
    return DATA_V2_HEADER + hlen + CBC_BLOCK + PACKET_ID + CBC_BLOCK + extra, cipher


def padded_probe(wrap: ControlWrap, session_id: bytes, udp_payload: int) -> bytes:
    """A wrapped P_CONTROL_HARD_RESET_CLIENT_V2 (message id 0) padded to ``udp_payload``
    bytes after its packet id; a 2.6 server answers it like an unpadded one."""
    plain = encode_control(ControlPacket(Opcode.CONTROL_HARD_RESET_CLIENT_V2, 0, session_id,
                                         message_id=0))
    bare = wrap.wrap(plain, 1, 0)
    pad = max(0, udp_payload - len(bare))
    return wrap.wrap(plain + os.urandom(pad), 1, int(time.time()))


def _mtu_options(family: int) -> tuple[int, int, int, int]:
    if family == socket.AF_INET6:
        return socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_MTU
    return socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU


# ---------------------------------------------------------------- the search


@dataclass
class Attempt:
    """One size tried: ``result`` is ``answered``, ``silent`` (no answer, no error),
    ``icmp`` (an ICMP error lowered the kernel's path MTU below it or reached the socket),
    ``local_limit`` (the kernel refused to send it: EMSGSIZE) or ``error``."""

    size: int
    result: str
    tries: int = 1
    rtt_ms: float | None = None
    kernel_mtu_after: int | None = None
    detail: str | None = None

    def as_evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"size": self.size, "result": self.result, "tries": self.tries}
        if self.rtt_ms is not None:
            out["rtt_ms"] = self.rtt_ms
        if self.kernel_mtu_after is not None:
            out["kernel_mtu_after"] = self.kernel_mtu_after
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass
class Search:
    """What :func:`search` found. ``limit``: the largest answered size (None: even the floor
    got no answer); ``failed``: the smallest size above it that failed, with how."""

    attempts: list[Attempt] = field(default_factory=list)
    limit: int | None = None
    failed: Attempt | None = None
    complete: bool = True  # False: the budget ran out with sizes between limit and failed

    def sizes(self, result: str) -> list[int]:
        return sorted({a.size for a in self.attempts if a.result == result})


Prober = Callable[[int, int], Awaitable[Attempt]]


async def search(sizes: Sequence[int], probe: Prober, kernel_mtu: Callable[[], int],
                 deadline: float) -> Search:
    """The largest of ``sizes`` (ascending, ``sizes[0]`` the floor) that ``probe(size,
    tries)`` gets answered. The top of the range the kernel allows (``kernel_mtu()``) is tried
    first — the healthy case needs one probe above the floor, and after an ICMP error lowers
    the kernel's path MTU the new top is tried at once; a silent failure is bisected."""
    found = Search()
    first = await probe(sizes[0], FLOOR_TRIES)
    found.attempts.append(first)
    if first.result != "answered":
        found.failed = first
        return found
    lo, bad = 0, len(sizes)
    failures: dict[int, Attempt] = {}  # index in sizes -> how it failed
    tried = {sizes[0]}
    while True:
        cap = bisect_right(sizes, kernel_mtu()) - 1
        bad = min(bad, cap + 1)  # the kernel refuses what lies above its path MTU
        tries = 1
        if bad - lo <= 1:
            # Converged. A boundary that was silent only once is tried again (a lost answer
            # must not make a black hole); if it answers now, the search goes on above it.
            last = failures.get(bad)
            if last is None or last.result != "silent" or last.tries >= TRIES:
                break
            index, tries = bad, TRIES - last.tries
        else:
            # the top the kernel allows first (once per value of its path MTU), then bisect
            index = cap if sizes[cap] not in tried else (lo + bad) // 2
        if trio.current_time() >= deadline:
            found.complete = False
            break
        attempt = await probe(sizes[index], tries)
        tried.add(sizes[index])
        found.attempts.append(attempt)
        if attempt.result == "answered":
            lo = index
            bad = min((i for i in failures if i > lo), default=len(sizes))
        else:
            before = failures.get(index)
            if before is not None and attempt.result == "silent":
                attempt.tries += before.tries
            failures[index] = attempt
            bad = index
    found.limit = sizes[lo]
    failed = failures.get(bad)
    found.failed = failed if failed is not None and failed.size > found.limit else None
    return found


def _echo_wait(rtt_s: float | None) -> float:
    return WAIT_MAX if rtt_s is None else min(WAIT_MAX, max(WAIT_MIN, 4 * rtt_s))


# ---------------------------------------------------------------- data channel (both ways)


class EchoProber:
    """Padded echo requests to the server's tunnel address through the shared session."""

    def __init__(self, t: Tunnel, local: str, gateway: str, target: Target) -> None:
        self.t, self.local, self.gateway, self.target = t, local, gateway, target
        self.ident = int.from_bytes(os.urandom(2), "big")
        self.seq = 0
        self.rtt: float | None = None
        self.level, _opt, _val, self.mtu_opt = _mtu_options(target.family)
        self.outer_extra = ip_udp_overhead(target.family)

    def kernel_mtu(self) -> int:
        return self.t.getsockopt(self.level, self.mtu_opt)

    def packet(self, inner_len: int) -> bytes:
        self.seq = (self.seq + 1) & 0xFFFF
        return echo_request(self.local, self.gateway, self.ident, self.seq,
                            os.urandom(max(0, inner_len - ECHO_HEADERS)))

    def outer_size(self, inner_len: int) -> int | None:
        """The outer IP datagram for an inner packet of ``inner_len`` bytes."""
        wire_length = self.t.wire_length
        if wire_length is None:
            return None
        wire = wire_length(b"\x45" + bytes(inner_len - 1))
        return None if wire is None else wire + self.outer_extra

    async def exchange(self, inner_len: int, wait: float) -> tuple[str, float | None, str | None]:
        packet = self.packet(inner_len)
        seq = self.seq
        errors_before = len(self.t.socket_errors())
        sent = trio.current_time()
        try:
            await self.t.send(packet)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                return "local_limit", None, "EMSGSIZE"
            return "error", None, str(exc)

        def reply(p: bytes) -> bytes | None:
            echo = parse_echo_reply(p)
            if (echo is not None and echo.ident == self.ident and echo.seq == seq
                    and echo.src == self.gateway):
                return p
            return None

        got = await self.t.receive(reply, sent + wait)
        if got is not None:
            if len(got) != len(packet):
                return "error", None, f"reply of {len(got)} bytes to {len(packet)}"
            return "answered", trio.current_time() - sent, None
        new_errors = self.t.socket_errors()[errors_before:]
        if any(e.errno == errno.EMSGSIZE for e in new_errors):
            return "icmp", None, "EMSGSIZE reported on the socket (ICMP fragmentation needed)"
        return "silent", None, None


async def _data_search(t: Tunnel, target: Target, o: Options, deadline: float,
                       ) -> dict[str, Any] | CheckResult:
    local, gateway = t.local_ipv4, t.gateway
    if local is None or gateway is None:
        return skip(ID, "skipped: the server pushed no IPv4 tunnel address and gateway to "
                    "send the padded echo requests to", topology=t.pushed.topology)
    prober = EchoProber(t, local, gateway, target)
    level, discover, do, _mtu = _mtu_options(target.family)
    t.setsockopt(level, discover, do)
    route_mtu = prober.kernel_mtu()
    tun_mtu = t.pushed.tun_mtu or o.tun_mtu
    by_size: dict[int, int] = {}  # outer size -> the largest inner length giving it
    for inner in range(ECHO_HEADERS, tun_mtu + 1):
        outer = prober.outer_size(inner)
        if outer is not None:
            by_size[outer] = inner
    if not by_size:
        return skip(ID, "skipped: the session cannot tell the size of its data packets")
    sizes = sorted(by_size)
    floor = FLOOR[target.family]
    start = max(0, bisect_right(sizes, floor) - 1)
    if sizes[start] < floor and start + 1 < len(sizes):
        start += 1
    sizes = sizes[start:]
    t.mark("route_mtu", mtu=route_mtu)

    async def probe(size: int, tries: int) -> Attempt:
        inner = by_size[size]
        result, rtt, detail = "silent", None, None
        attempt = 0
        while attempt < tries:
            attempt += 1
            result, rtt, detail = await prober.exchange(inner, _echo_wait(prober.rtt))
            t.mark("echo_probe", size=size, inner=inner, result=result)
            if result != "silent":
                break
            if prober.kernel_mtu() < size:
                result, detail = "icmp", "the kernel's path MTU dropped below it"
                break
        if rtt is not None and prober.rtt is None:
            prober.rtt = rtt
        return Attempt(size, result, attempt, None if rtt is None else round(rtt * 1000, 2),
                       prober.kernel_mtu(), detail)

    found = await search(sizes, probe, prober.kernel_mtu, deadline)
    # With 'fragment' the biggest datagram is a fragment's; otherwise a full tun-mtu packet.
    full = prober.outer_size(tun_mtu) or max(by_size)
    return {"method": "data_channel_echo", "direction": "both", "route_mtu": route_mtu,
            "tun_mtu": tun_mtu, "full_packet_bytes": full, "search": found,
            "kernel_mtu_after": prober.kernel_mtu(), "cipher": t.cipher,
            "inner_for": dict(by_size),
            "timeline": t.timeline.steps}


async def _tcp_check(t: Tunnel, target: Target, o: Options,
                     deadline: float) -> dict[str, Any] | CheckResult:
    local, gateway = t.local_ipv4, t.gateway
    if local is None or gateway is None:
        return skip(ID, "skipped: the server pushed no IPv4 tunnel address and gateway to "
                    "send echo requests to", topology=t.pushed.topology)
    prober = EchoProber(t, local, gateway, target)
    tun_mtu = t.pushed.tun_mtu or o.tun_mtu
    attempts = []
    for inner in (FLOOR[socket.AF_INET], tun_mtu):
        result, rtt, detail = "silent", None, None
        tries = 0
        while tries < 2 and trio.current_time() < deadline:
            tries += 1
            wait = min(TCP_WAIT, max(0.1, deadline - trio.current_time()))
            result, rtt, detail = await prober.exchange(inner, wait)
            if result == "answered":
                break
        attempts.append(Attempt(inner, result, tries,
                                None if rtt is None else round(rtt * 1000, 2), None, detail))
        if result != "answered":
            break
    return {"method": "data_channel_echo_tcp", "tun_mtu": tun_mtu, "attempts": attempts,
            "sizes_are": "inner (tunnel) packet sizes: over TCP no outer datagram has a fixed "
                         "size"}


# ---------------------------------------------------------------- control channel (one way)


async def _control_search(target: Target, wrap: ControlWrap, netns: str | None,
                          deadline: float) -> dict[str, Any]:
    level, discover, do, mtu_opt = _mtu_options(target.family)
    extra = ip_udp_overhead(target.family)
    sock = make_socket(target.family, socket.SOCK_DGRAM, netns)
    sock.setsockopt(level, discover, do)
    rtt: list[float] = []
    with trio.socket.from_stdlib_socket(sock) as s:
        await s.connect(target.sockaddr)

        def kernel_mtu() -> int:
            return int(s.getsockopt(level, mtu_opt))

        route_mtu = kernel_mtu()

        async def probe(size: int, tries: int) -> Attempt:
            result, detail, took = "silent", None, None
            attempt = 0
            while attempt < tries:
                attempt += 1
                sid = new_session_id()
                packet = padded_probe(wrap, sid, size - extra)
                sent = trio.current_time()
                try:
                    await s.send(packet)
                except OSError as exc:
                    result = "local_limit" if exc.errno == errno.EMSGSIZE else "error"
                    detail = str(exc)
                    break
                with trio.move_on_at(sent + _echo_wait(rtt[0] if rtt else None)):
                    while True:
                        try:
                            data = await s.recv(65536)
                        except OSError as exc:
                            if exc.errno == errno.EMSGSIZE:
                                result, detail = "icmp", "EMSGSIZE reported on the socket"
                                break
                            continue
                        if classify_reply(data, wrap, sid) == "openvpn_reset":
                            result, took = "answered", trio.current_time() - sent
                            break
                if result != "silent":
                    break
                if kernel_mtu() < size:
                    result, detail = "icmp", "the kernel's path MTU dropped below it"
                    break
            if took is not None and not rtt:
                rtt.append(took)
            return Attempt(size, result, attempt,
                           None if took is None else round(took * 1000, 2), kernel_mtu(),
                           detail)

        bare = len(padded_probe(wrap, new_session_id(), 0)) + extra
        floor = max(FLOOR[target.family], bare)
        sizes = list(range(floor, max(route_mtu, floor) + 1))
        found = await search(sizes, probe, kernel_mtu, deadline)
        return {"method": "control_channel_reset", "direction": "to_server",
                "route_mtu": route_mtu, "search": found, "kernel_mtu_after": kernel_mtu()}


# ---------------------------------------------------------------- verdict


def _mss_outer(o: Options, family: int) -> int | None:
    ms = o.mssfix
    if ms.max == 0:
        return None
    if ms.mtu:
        return ms.max
    return ms.max + ip_udp_overhead(family)


def _mss_text(o: Options) -> str:
    ms = o.mssfix
    return "mssfix 0 (off)" if ms.max == 0 else f"mssfix {ms.max}{' mtu' if ms.mtu else ''}"


def _evidence(found: Search) -> dict[str, Any]:
    return {"sizes_tried": [a.size for a in found.attempts],
            "answered": found.sizes("answered"), "silent": found.sizes("silent"),
            "icmp_reported": found.sizes("icmp"), "refused_locally": found.sizes("local_limit"),
            "probes": [a.as_evidence() for a in found.attempts],
            "search_complete": found.complete}


def _fixes(o: Options, target: Target, pmtu: int, best_tun: int) -> str:
    fragment = (f", or 'fragment {pmtu} mtu' on both sides (UDP only: OpenVPN then splits "
                "bigger packets itself)" if target.transport == "udp" else "")
    return (f"Set 'mssfix {pmtu} mtu' ({where(o, 'mssfix')}): it keeps TCP inside the tunnel "
            f"within {pmtu}-byte packets. For other traffic (UDP, ICMP) lower 'tun-mtu' to "
            f"{best_tun} on both client ({where(o, 'tun-mtu')}) and server{fragment}.")


def judge(o: Options, target: Target, measured: dict[str, Any]) -> CheckResult:
    """The verdict on a measured path: ``measured`` has ``path_mtu`` (the largest confirmed
    outer size), ``route_mtu``, ``limit_kind`` (``route_mtu``, ``icmp``, ``black_hole``,
    ``tun_mtu``, ``unresolved``) and optionally ``inner_for`` (outer datagram size → the
    largest inner packet giving it, from the session's framing) and ``full_packet_bytes``
    (the tunnel's largest datagram) — the rest is passed on as evidence."""
    pmtu = int(measured["path_mtu"])
    kind = measured.get("limit_kind", "route_mtu")
    extra = ip_udp_overhead(target.family)
    tun_mtu = int(measured.get("tun_mtu") or o.tun_mtu)
    inner_for: dict[int, int] | None = measured.get("inner_for")
    if inner_for is None:
        data, cipher = assumed_overhead(o)
        inner_for = {inner + data + extra: inner for inner in range(ECHO_HEADERS, tun_mtu + 1)}
        framing = f"assumed for {cipher}: no data channel to measure it"
    else:
        framing = f"measured from the session, {measured.get('cipher') or 'negotiated cipher'}"
    full = int(measured.get("full_packet_bytes") or max(inner_for))
    best_tun = max((inner for outer, inner in inner_for.items() if outer <= pmtu), default=0)
    mss_outer = _mss_outer(o, target.family)
    mss_text = _mss_text(o)
    evidence = {k: v for k, v in measured.items() if k != "inner_for"}
    evidence.update(sent_to=target.describe(), tun_mtu=tun_mtu, framing=framing,
                    overhead_bytes=full - tun_mtu if full > tun_mtu else None,
                    outer_packet_bytes=full, mssfix=mss_text, mssfix_outer_bytes=mss_outer,
                    largest_tun_packet_that_fits=best_tun)
    one_way = measured.get("direction") == "to_server"
    how = "answered" + (" (towards the server)" if one_way else "")
    scope = (f" Sizes were confirmed towards the server only, with padded control-channel "
             f"resets the server answered: the data channel could not be used "
             f"({measured.get('no_data_channel')}); the overhead is {framing}."
             if one_way else "")
    if target.transport == "tcp":
        return ok(ID, f"path MTU {pmtu} {how}; over TCP the kernel segments OpenVPN's stream, "
                  "so MTU problems of the outer path are the kernel's, not OpenVPN's",
                  **evidence)
    if kind == "black_hole":
        at = measured.get("black_hole_at")
        if full <= pmtu:
            return ok(ID, f"the tunnel's largest packets ({full} bytes) are answered; bigger "
                      f"ones ({at} bytes and more) vanish on the path without an ICMP error",
                      **evidence)
        tcp_ok = mss_outer is not None and mss_outer <= pmtu
        tcp_line = (f"{mss_text} already keeps TCP inside the tunnel below it, but other "
                    "traffic above the limit (UDP, ICMP) is lost" if tcp_ok else
                    f"{mss_text} does not bring TCP inside the tunnel below it either")
        return problem(
            ID, "warn", f"path MTU black hole: {at}-byte packets to {target.describe()} "
            f"vanish without an ICMP error; {pmtu} bytes is the largest answered size",
            **evidence,
            explanation=f"Packets of up to {pmtu} bytes got answers; {at} bytes and more got "
            "neither an answer nor an ICMP 'fragmentation needed'. Something on the path (a "
            "router with a smaller MTU that sends no ICMP, or a firewall dropping ICMP) drops "
            "them silently, so the kernel's path MTU discovery never learns the limit (it "
            f"still allows {measured.get('route_mtu')} bytes). A full tun-mtu {tun_mtu} "
            f"packet is {full} bytes on the wire: it is lost, not fragmented; {tcp_line}. "
            "The tunnel connects and pings work, but web pages, SSH sessions or file copies "
            f"hang.{scope}",
            fix=_fixes(o, target, pmtu, best_tun) + " Better still, make the router on the "
            "path send ICMP 'fragmentation needed' (or stop filtering it).")
    icmp_note = " (learned from ICMP 'fragmentation needed')" if kind == "icmp" else ""
    if full <= pmtu:
        return ok(ID, f"path MTU {pmtu} {how}{icmp_note}: the tunnel's largest packets "
                  f"(tun-mtu {tun_mtu}, {full} bytes on the wire) cross it", **evidence)
    if mss_outer is not None and mss_outer <= pmtu:
        return ok(ID, f"path MTU {pmtu} {how}{icmp_note}: {mss_text} keeps TCP in the tunnel "
                  f"within it (full {tun_mtu}-byte tun packets, {full} bytes on the wire, "
                  "are fragmented by the kernel)", **evidence)
    return problem(
        ID, "warn", f"path MTU {pmtu} {how}{icmp_note} is smaller than the tunnel's packets "
        f"({full} bytes for tun-mtu {tun_mtu}) and {mss_text} does not compensate",
        **evidence,
        explanation=f"Packets of up to {pmtu} bytes cross the path to {target.describe()}, "
        f"but a full tun-mtu {tun_mtu} packet becomes {full} bytes on the wire "
        f"({full - tun_mtu} bytes of IP/UDP and OpenVPN overhead, {framing}). Bigger packets "
        "are fragmented by the kernel or, where fragments or ICMP are filtered, lost: the "
        "tunnel connects and pings work, but web pages, SSH sessions or file copies hang."
        + scope,
        fix=_fixes(o, target, pmtu, best_tun))


def classify(found: Search, route_mtu: int, kernel_mtu_after: int,
             top: int | None = None) -> dict[str, Any]:
    """``path_mtu``, ``limit_kind`` and ``black_hole_at`` from a finished search; ``top``:
    the largest size the search could try (a full tun-mtu packet)."""
    assert found.limit is not None
    out: dict[str, Any] = {"path_mtu": found.limit, "confirmed": True}
    failed = found.failed
    if not found.complete:
        out.update(limit_kind="unresolved",
                   silent_from=failed.size if failed is not None else None)
    elif failed is None and top is not None and found.limit >= top and top < kernel_mtu_after:
        out["limit_kind"] = "tun_mtu"  # the path may carry more: nothing bigger was tried
    elif failed is None:
        out["limit_kind"] = "icmp" if kernel_mtu_after < route_mtu else "route_mtu"
    elif failed.result == "silent":
        out.update(limit_kind="black_hole", black_hole_at=failed.size)
    elif failed.result in ("icmp", "local_limit"):
        out["limit_kind"] = "icmp"
    else:
        out["limit_kind"] = "unresolved"
    return out


def _unresolved(o: Options, target: Target, base: dict[str, Any], found: Search,
                ) -> CheckResult:
    above = (f"{base['silent_from']} bytes got none and no ICMP error either"
             if base.get("silent_from") else "bigger sizes were not tried")
    return problem(
        ID, "warn", f"path MTU of at least {base['path_mtu']} bytes confirmed: the search ran "
        "out of time", **base, **_evidence(found), sent_to=target.describe(),
        explanation=f"{base['path_mtu']}-byte packets got answers, {above}; the time budget "
        "ran out before the exact limit was found (a lossy path makes every size take "
        "longer).",
        fix="Run 'trivpn doctor --check mtu.path' again with a longer --timeout; meanwhile "
        f"'mssfix {base['path_mtu']} mtu' ({where(o, 'mssfix')}) is safe.")


async def run(ctx: DoctorContext) -> CheckResult:
    inputs = await probe_inputs(ctx, ID)
    if isinstance(inputs, CheckResult):
        return inputs
    o, wrap = inputs.options, inputs.wrap
    target = open_target(ctx, inputs.targets)
    # Everything, the shared session's handshake included when this check is the first to
    # lease it, ends within the check's timeout.
    end = trio.current_time() + ctx.timeout * 0.9
    deadline = min(trio.current_time() + SEARCH_BUDGET, end)
    unavailable: TunnelUnavailable | None = None
    try:
        async with tunnel_lease(ctx) as t:
            if target.transport == "tcp":
                tcp = await _tcp_check(t, target, o, deadline)
            else:
                data = await _data_search(t, target, o, deadline)
    except TunnelUnavailable as exc:
        unavailable = exc
    except OSError as exc:
        return skip(ID, f"skipped: cannot measure the path MTU to {target.describe()} ({exc})")
    if unavailable is not None:
        return await _without_data_channel(o, wrap, target, unavailable, netns=ctx.netns,
                                           end=end)
    if target.transport == "tcp":
        return _judge_tcp(o, target, tcp)
    if isinstance(data, CheckResult):  # no IPv4 tunnel gateway to ping: the control channel
        why = TunnelUnavailable("no_gateway", data.summary.removeprefix("skipped: "))
        return await _without_data_channel(o, wrap, target, why, netns=ctx.netns, end=end)
    found: Search = data.pop("search")
    if found.limit is None:
        return _no_answer(target, found, data)
    base = {**data, **classify(found, int(data["route_mtu"]), int(data["kernel_mtu_after"]),
                               data["full_packet_bytes"])}
    if base["limit_kind"] == "unresolved":
        base.pop("inner_for", None)
        return _unresolved(o, target, base, found)
    return judge(o, target, {**base, **_evidence(found)})


def _no_answer(target: Target, found: Search, data: dict[str, Any]) -> CheckResult:
    return skip(ID, f"skipped: even {found.attempts[0].size}-byte echo requests through the "
                "tunnel got no answer (see tunnel.traffic), so no size could be confirmed",
                sent_to=target.describe(), route_mtu=data["route_mtu"], **_evidence(found))


def _judge_tcp(o: Options, target: Target, tcp: dict[str, Any] | CheckResult) -> CheckResult:
    if isinstance(tcp, CheckResult):
        return tcp
    attempts: list[Attempt] = tcp["attempts"]
    evidence = {"method": tcp["method"], "tun_mtu": tcp["tun_mtu"], "sent_to": target.describe(),
                "sizes_are": tcp["sizes_are"],
                "probes": [a.as_evidence() for a in attempts]}
    if all(a.result == "answered" for a in attempts) and len(attempts) == 2:
        return ok(ID, f"a full tun-mtu {tcp['tun_mtu']} packet crossed the tunnel and was "
                  "answered; over TCP the kernel segments OpenVPN's stream to the path MTU, "
                  "so MTU problems of the outer path are the kernel's, not OpenVPN's",
                  **evidence)
    if attempts[0].result != "answered":
        return skip(ID, "skipped: even small echo requests through the tunnel got no answer "
                    "(see tunnel.traffic)", **evidence)
    return problem(
        ID, "warn", f"small packets cross the TCP tunnel but a full tun-mtu {tcp['tun_mtu']} "
        "packet got no answer", **evidence,
        explanation="Over TCP the kernel cuts OpenVPN's stream into segments that fit the path "
        "MTU it knows, so OpenVPN's packet size cannot overflow the outer path. A big packet "
        "that goes unanswered while small ones pass means full-size TCP segments of the "
        "outer connection are dropped without ICMP 'fragmentation needed' (a black hole on "
        "the outer path): the kernel's problem, not OpenVPN's — 'mssfix' and 'fragment' do "
        "not change the outer TCP segments.",
        fix="On this host enable TCP path MTU probing ('sysctl -w net.ipv4.tcp_mtu_probing=1') "
        "or clamp the outer TCP MSS on the router; better, let the router on the path send "
        "ICMP 'fragmentation needed'.")


async def _without_data_channel(o: Options, wrap: ControlWrap, target: Target,
                                why: TunnelUnavailable, *, netns: str | None,
                                end: float) -> CheckResult:
    reason = why.summary
    if target.transport == "tcp":
        return skip(ID, "skipped: the data channel could not be used to confirm packet sizes "
                    f"({reason}); over TCP the outer path MTU is the kernel's to handle",
                    **why.evidence, sent_to=target.describe())
    if isinstance(wrap, TlsCryptV2):
        return skip(ID, "skipped: path MTU could not be confirmed: the data channel could not "
                    f"be used ({reason}) and a tls-crypt-v2 reset carries the client key at its "
                    "end, so it cannot be padded", **why.evidence, sent_to=target.describe())
    deadline = min(trio.current_time() + SEARCH_BUDGET, end)
    try:
        data = await _control_search(target, wrap, netns, deadline)
    except OSError as exc:
        return skip(ID, f"skipped: cannot measure the path MTU to {target.describe()} ({exc})")
    found: Search = data.pop("search")
    if found.limit is None:
        return skip(ID, "skipped: path MTU could not be confirmed: the data channel could not "
                    f"be used ({reason}) and the server did not answer padded control-channel "
                    "resets either",
                    **why.evidence, **data, **_evidence(found), sent_to=target.describe())
    base = {**data, **classify(found, int(data["route_mtu"]), int(data["kernel_mtu_after"])),
            "no_data_channel": reason}
    if base["limit_kind"] == "unresolved":
        return _unresolved(o, target, base, found)
    return judge(o, target, {**base, **_evidence(found)})


CHECKS: tuple[Check, ...] = (
    # After tls.handshake: the shared session must not race the handshake check (a server
    # keeps one session per certificate name); a failed handshake still runs the
    # control-channel search.
    Check(ID, run, roles=("client",), depends_on=("port.reachable",), after=("tls.handshake",),
          needs_tls=True),
)
