"""``mtu.path``: the largest packet that crosses the path to the server, and whether the tunnel's
``tun-mtu`` / ``mssfix`` fit it.

Method: a connected UDP socket to the remote with ``IP_MTU_DISCOVER = IP_PMTUDISC_DO`` (Don't
Fragment, never fragment locally). Starting from the kernel's route MTU (``IP_MTU``), a padded
control-channel packet of exactly that size is sent (a wrapped P_ACK_V1 that the server drops
silently); a router with a smaller MTU answers with ICMP "fragmentation needed", the kernel
lowers its path MTU and the next send fails with EMSGSIZE. Repeat until the size is stable. A
path that drops big packets without ICMP ("black hole") is not detected by this method.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

import trio

from trivpn.config import Options
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip
from trivpn.diagnostics.probe import (
    Target,
    Timeline,
    new_session_id,
    open_target,
    probe_inputs,
    where,
)
from trivpn.protocol.datachannel import AEAD_TAG_LEN, CBC_BLOCK, CIPHERS
from trivpn.protocol.digests import digest_info
from trivpn.protocol.packets import ControlPacket, Opcode, encode_control
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
MAX_ROUNDS = 6
ICMP_WAIT = 0.3
DATA_V2_HEADER = 4
PACKET_ID = 4
COMPRESSION_BYTE = 1


def ip_udp_overhead(family: int) -> int:
    return (40 if family == socket.AF_INET6 else 20) + 8


def data_overhead(options: Options) -> tuple[int, str]:
    """Bytes OpenVPN adds to each tunnel packet inside the UDP payload, for the first
    configured data cipher (the one a 2.6 server normally picks), and that cipher."""
    cipher = options.data_ciphers[0].upper() if options.data_ciphers else "AES-256-GCM"
    aead = CIPHERS.get(cipher, (32, True))[1]
    extra = COMPRESSION_BYTE if options.compression else 0
    if aead:
        return DATA_V2_HEADER + PACKET_ID + AEAD_TAG_LEN + extra, cipher
    _name, hlen = digest_info(options.auth)
    # header, HMAC, IV, packet id, and up to a whole block of CBC padding
    return DATA_V2_HEADER + hlen + CBC_BLOCK + PACKET_ID + CBC_BLOCK + extra, cipher


def padded_probe(wrap: ControlWrap, session_id: bytes, udp_payload: int) -> bytes:
    """A wrapped P_ACK_V1 padded to ``udp_payload`` bytes (receivers ignore the tail)."""
    plain = encode_control(ControlPacket(Opcode.ACK_V1, 0, session_id))
    bare = wrap.wrap(plain, 1, 0)
    pad = max(0, udp_payload - len(bare))
    return wrap.wrap(plain + bytes(pad), 1, 0)


def _mtu_socket(target: Target, netns: str | None) -> socket.socket:
    sock = make_socket(target.family, socket.SOCK_DGRAM, netns)
    if target.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
    return sock


def _read_mtu(sock: trio.socket.SocketType, family: int) -> int:
    if family == socket.AF_INET6:
        return int(sock.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU))
    return int(sock.getsockopt(socket.IPPROTO_IP, IP_MTU))


async def measure_path_mtu(target: Target, wrap: ControlWrap, netns: str | None, *,
                           send_probes: bool = True) -> dict[str, Any]:
    """Path MTU to ``target`` from DF probes and the kernel's PMTU cache (without probes:
    the route MTU the kernel knows, for TCP remotes, which must not get UDP datagrams)."""
    timeline = Timeline()
    sid = new_session_id()
    overhead = ip_udp_overhead(target.family)
    probes: list[dict[str, Any]] = []
    with trio.socket.from_stdlib_socket(_mtu_socket(target, netns)) as sock:
        await sock.connect(target.sockaddr)
        route_mtu = mtu = _read_mtu(sock, target.family)
        timeline.add("route_mtu", mtu=mtu)
        confirmed = False
        for _ in range(MAX_ROUNDS if send_probes else 0):
            packet = padded_probe(wrap, sid, mtu - overhead)
            try:
                await sock.send(packet)
            except OSError as exc:
                if exc.errno != errno.EMSGSIZE:
                    probes.append({"size": len(packet) + overhead, "error": str(exc)})
                    break
                new = _read_mtu(sock, target.family)
                probes.append({"size": len(packet) + overhead, "result": "emsgsize",
                               "mtu_after": new})
                timeline.add("emsgsize", size=len(packet) + overhead, mtu=new)
                if new >= mtu:
                    break
                mtu = new
                continue
            timeline.add("df_probe_sent", size=len(packet) + overhead)
            icmp = None
            with trio.move_on_after(ICMP_WAIT):
                try:
                    await sock.recv(65536)
                except OSError as exc:
                    icmp = errno.errorcode.get(exc.errno or 0, str(exc))
            new = _read_mtu(sock, target.family)
            probes.append({"size": len(packet) + overhead, "icmp": icmp, "mtu_after": new})
            if new >= mtu:
                confirmed = True
                break
            timeline.add("path_mtu_lowered", mtu=new, icmp=icmp)
            mtu = new
    return {"path_mtu": mtu, "route_mtu": route_mtu, "confirmed": confirmed,
            "probes": probes, "timeline": timeline.steps}


def judge(o: Options, target: Target, measured: dict[str, Any]) -> CheckResult:
    pmtu = int(measured["path_mtu"])
    data, cipher = data_overhead(o)
    outer_overhead = ip_udp_overhead(target.family) + data
    outer = o.tun_mtu + outer_overhead
    ms = o.mssfix
    if ms.max == 0:
        mss_outer = None
    elif ms.mtu:
        mss_outer = ms.max
    else:
        mss_outer = ms.max + ip_udp_overhead(target.family)
    mss_text = "mssfix 0 (off)" if ms.max == 0 else f"mssfix {ms.max}{' mtu' if ms.mtu else ''}"
    evidence = {**measured, "sent_to": target.describe(), "tun_mtu": o.tun_mtu,
                "cipher_assumed": cipher, "overhead_bytes": outer_overhead,
                "outer_packet_bytes": outer, "mssfix": mss_text,
                "mssfix_outer_bytes": mss_outer}
    if target.transport == "tcp":
        return ok(ID, f"path MTU {pmtu}; over TCP the kernel segments OpenVPN's stream, so "
                  "tun-mtu cannot overflow the path", **evidence)
    if outer <= pmtu:
        return ok(ID, f"path MTU {pmtu}: full tun-mtu {o.tun_mtu} packets ({outer} bytes on "
                  "the wire) cross it", **evidence)
    if mss_outer is not None and mss_outer <= pmtu:
        return ok(ID, f"path MTU {pmtu}: {mss_text} keeps TCP in the tunnel within it "
                  f"(full {o.tun_mtu}-byte tun packets, {outer} bytes on the wire, get "
                  "fragmented)", **evidence)
    best_tun = pmtu - outer_overhead
    return problem(
        ID, "warn", f"path MTU {pmtu} is smaller than the tunnel's packets ({outer} bytes for "
        f"tun-mtu {o.tun_mtu}) and {mss_text} does not compensate", **evidence,
        explanation=f"Packets of up to {pmtu} bytes cross the path to {target.describe()}, "
        f"but a full tun-mtu {o.tun_mtu} packet becomes {outer} bytes on the wire "
        f"({outer_overhead} bytes of IP/UDP and OpenVPN overhead with {cipher}). Large "
        "packets are then fragmented or, where fragments or ICMP are filtered, lost: the "
        "tunnel connects and pings work, but web pages, SSH sessions or file copies hang.",
        fix=f"Set 'mssfix {pmtu} mtu' in {where(o, 'mssfix')} so TCP inside the tunnel fits, "
        f"or lower 'tun-mtu' to {best_tun} ({where(o, 'tun-mtu')}) on both client and server.")


async def run(ctx: DoctorContext) -> CheckResult:
    inputs = await probe_inputs(ctx, ID)
    if isinstance(inputs, CheckResult):
        return inputs
    o, wrap, targets = inputs.options, inputs.wrap, inputs.targets
    target = open_target(ctx, targets)
    try:
        measured = await measure_path_mtu(target, wrap, ctx.netns,
                                          send_probes=target.transport == "udp")
    except OSError as exc:
        return skip(ID, f"skipped: cannot measure the path MTU to {target.describe()} "
                    f"({exc})")
    return judge(o, target, measured)


CHECKS: tuple[Check, ...] = (
    Check(ID, run, roles=("client",), depends_on=("port.reachable",)),
)
