"""The doctor's probe for a static-key peer (``secret FILE [direction]``, no TLS).

A static-key peer ignores a TLS reset, but answers an OCC request: OpenVPN's occ.c
(process_received_occ_msg(): OCC_REQUEST -> OCC_REPLY with its options string) and trivpn's
staticmode. The request goes out encrypted with the config's key, direction, cipher and
auth; a reply that decrypts proves the port is open and all four right, and carries the
peer's options string. A peer drops a packet it cannot authenticate silently, so when the
configured form stays unanswered the probe sends the same request once under every other
key direction, auth digest and CBC cipher (all made from the same key file): the form that
gets the answer names what differs. Packets that decrypt under no form at all come from a
peer with another key. ICMP port unreachable (UDP) or a refused connection (TCP) means
nothing listens; silence stays silence (filtered, or a peer with another key: the wire cannot
tell the two apart).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from trivpn.config import ConfigError, Options
from trivpn.diagnostics.probe import (
    RECV_SIZE,
    TCP_CONNECT_TIMEOUT,
    Target,
    Timeline,
    _addr_text,
    _icmp_word,
    read_icmp_errors,
    udp_socket,
)
from trivpn.protocol.compression import Compression, unframe
from trivpn.protocol.compression import frame as comp_frame
from trivpn.protocol.digests import DIGESTS, normalize_digest
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.framing import StreamDeframer, frame
from trivpn.protocol.occ import OccOpcode, build_occ, is_ping, parse_occ
from trivpn.protocol.statickey import StaticKey, parse_static_key
from trivpn.protocol.staticmode import StaticDataKey, static_directional_keys
from trivpn.runtime.link import make_socket
from trivpn.sessionsetup import static_session_config

# The CBC ciphers OpenVPN 2.6 runs in static-key mode with OpenSSL 3 (BF-CBC and the other
# 64-bit block ciphers need the legacy provider; AEAD is refused: crypto.c, init_key_type()).
CBC_CIPHERS = ("AES-256-CBC", "AES-128-CBC", "AES-192-CBC")
DIRECTIONS: tuple[int | None, ...] = (None, 0, 1)
ATTEMPTS = 3  # the configured form, INTERVAL apart
INTERVAL = 1.0
SWEEP_GAP = 0.01  # seconds between the packets of the other-forms sweep
SWEEP_WAIT = 1.5  # listen this long after the sweep
CONFIRM_WAIT = 0.5  # per candidate form, when several open the reply


@dataclass(frozen=True, slots=True)
class Form:
    """One way to encrypt: key direction (None: bidirectional), cipher, auth digest."""

    direction: int | None
    cipher: str
    auth: str

    def as_evidence(self) -> dict[str, Any]:
        return {"direction": "bidirectional" if self.direction is None else self.direction,
                "cipher": self.cipher, "auth": self.auth}


@dataclass(frozen=True, slots=True)
class StaticInputs:
    """What the probe needs from the config (the key stays here, never in evidence)."""

    key: StaticKey
    configured: Form
    compression: Compression
    replay: bool
    local_options: str

    def forms(self) -> list[Form]:
        """The configured form first, then every other direction x cipher x auth."""
        others = [Form(d, c, a) for d in DIRECTIONS for c in
                  (self.configured.cipher, *CBC_CIPHERS) for a in
                  (self.configured.auth, *DIGESTS)]
        return list(dict.fromkeys([self.configured, *others]))


def static_inputs(o: Options) -> StaticInputs:
    """ConfigError when the key file or the cipher cannot be used."""
    cfg = static_session_config(o, unix_time_offset=0.0)
    assert cfg.static_keys is not None and cfg.data_ciphers_fallback is not None
    assert o.secret is not None
    key = parse_static_key(o.secret.read_text(), o.secret.describe())
    return StaticInputs(key, Form(o.key_direction, cfg.data_ciphers_fallback.upper(),
                                  normalize_digest(cfg.auth)),
                        cfg.compression, cfg.replay, cfg.options_string)


@dataclass
class StaticExchange:
    """What the probe saw. ``state`` in port.reachable's words; ``kind`` of the answer:
    ``occ_reply`` (under the configured form), ``occ_reply_other`` (under another form:
    ``answered_by``), ``undecryptable`` (packets no form decrypts), ``other`` (decrypted, but
    no OCC reply: a ping or data), None (no answer)."""

    target: Target
    timeline: Timeline
    configured: Form
    attempts: int = 0
    forms_tried: int = 0
    replies: list[dict[str, Any]] = field(default_factory=list)
    icmp: str | None = None
    tcp: str | None = None
    answered_by: Form | None = None
    candidates: list[Form] = field(default_factory=list)  # forms that open the OCC reply
    peer_options: str | None = None
    local_options: str = ""

    @property
    def confirmed(self) -> bool:
        """One form is known to be the one the peer answered."""
        return self.answered_by is not None

    @property
    def kind(self) -> str | None:
        if self.peer_options is not None and self.answered_by is None:
            return "occ_reply_other"  # several forms open it, none confirmed alone
        if self.peer_options is not None and self.answered_by is not None:
            return "occ_reply" if self.answered_by == self.configured else "occ_reply_other"
        if self.answered_by is not None:
            return "other"
        if self.replies:
            return "undecryptable"
        return None

    @property
    def state(self) -> str:
        if self.replies or self.tcp == "connected":
            return "open"
        if self.icmp == "port_unreachable" or self.tcp == "refused":
            return "closed"
        return "filtered"

    def evidence(self) -> dict[str, Any]:
        first = self.replies[0] if self.replies else None
        return {
            "state": self.state, "sent_to": self.target.describe(),
            "target": self.target.as_evidence(), "wrap": "static-key",
            "mode": "static-key", "attempts": self.attempts, "forms_tried": self.forms_tried,
            "configured": self.configured.as_evidence(),
            "reply_kind": self.kind, "reply_from": first["from"] if first else None,
            "first_reply_s": first["t"] if first else None,
            "bytes_received": [r["bytes"] for r in self.replies],
            "answered_by": self.answered_by.as_evidence() if self.answered_by else None,
            "candidates": [f.as_evidence() for f in self.candidates],
            "peer_options": self.peer_options, "local_options": self.local_options,
            "icmp": self.icmp, "tcp": self.tcp, "timeline": self.timeline.steps,
        }


class _Keys:
    """One StaticDataKey per form (fresh packet ids), made on first use."""

    def __init__(self, inputs: StaticInputs) -> None:
        self._inputs = inputs
        self._keys: dict[Form, StaticDataKey] = {}
        self._start = int(time.time())

    def key(self, form: Form) -> StaticDataKey:
        if form not in self._keys:
            keys = static_directional_keys(self._inputs.key, form.direction)
            self._keys[form] = StaticDataKey(form.cipher, keys, auth=form.auth,
                                             start_time=self._start,
                                             replay=self._inputs.replay)
        return self._keys[form]

    def request(self, form: Form) -> bytes:
        return self.key(form).encrypt(comp_frame(self._inputs.compression,
                                                 build_occ(OccOpcode.REQUEST)))

    def open(self, data: bytes, forms: list[Form]) -> list[tuple[Form, bytes]]:
        """Every form under which ``data`` authenticates and decrypts, with its payload
        (forms that differ only in what they send with open a reply alike)."""
        opened = []
        for form in forms:
            try:
                plain = self.key(form).decrypt(data, trio.current_time())
            except (ProtocolError, ValueError):
                continue
            opened.append((form, plain))
        return opened


def _note_reply(ex: StaticExchange, keys: _Keys, forms: list[Form], data: bytes, *,
                source: str, compression: Compression) -> bool:
    """Record one received packet; True when it is the OCC reply (the probe can stop)."""
    opened = keys.open(data, forms)
    reply: dict[str, Any] = {"from": source, "bytes": len(data), "t": ex.timeline.elapsed()}
    ex.replies.append(reply)
    if not opened:
        reply["kind"] = "undecryptable"
        ex.timeline.add("reply", source=source, bytes=len(data), kind="undecryptable")
        return False
    form, plain = opened[0]
    try:
        payload = unframe(compression, plain)
        occ = parse_occ(payload)
    except ProtocolError:
        payload, occ = plain, None
    if occ is not None and occ[0] is OccOpcode.REPLY:
        ex.candidates = [f for f, _ in opened]
        ex.answered_by = form if len(opened) == 1 else None
        ex.peer_options = occ[1].split(b"\0", 1)[0].decode("ascii", "replace")
        reply["kind"] = "occ_reply"
        ex.timeline.add("reply", source=source, bytes=len(data), kind="occ_reply",
                        forms=[f.as_evidence() for f in ex.candidates])
        return True
    ex.answered_by = ex.answered_by or form
    reply["kind"] = "ping" if is_ping(payload) else "decrypted"
    ex.timeline.add("reply", source=source, bytes=len(data), kind=reply["kind"],
                    form=form.as_evidence())
    return False


async def static_exchange(target: Target, inputs: StaticInputs, *,
                          netns: str | None) -> StaticExchange:
    """Probe ``target`` as the module docstring says (bounded: about 4.5 s over UDP)."""
    if target.transport == "tcp":
        return await _tcp_exchange(target, inputs, netns=netns)
    timeline = Timeline()
    ex = StaticExchange(target, timeline, inputs.configured,
                        local_options=inputs.local_options)
    keys = _Keys(inputs)
    forms = inputs.forms()
    want = _addr_text(target.sockaddr)
    std = udp_socket(target, netns)
    with trio.socket.from_stdlib_socket(std) as sock:

        def icmp_seen() -> bool:
            for err in read_icmp_errors(std):
                if err.original_destination not in (None, want):
                    continue
                ex.icmp = err.word
                timeline.add("icmp_error", **err.as_evidence())
                return True
            return False

        async def listen_until(deadline: float, opening: list[Form]) -> bool:
            """True when the probe is done (OCC reply or ICMP error)."""
            while True:
                with trio.move_on_at(deadline):
                    try:
                        data, addr = await sock.recvfrom(RECV_SIZE)
                    except OSError:
                        if icmp_seen():
                            return True
                        continue
                    if _note_reply(ex, keys, opening, data, source=_addr_text(addr),
                                   compression=inputs.compression):
                        return True
                    continue
                return icmp_seen()

        async def send(form: Form) -> bool:
            try:
                await sock.sendto(keys.request(form), target.sockaddr)
            except OSError as exc:
                if not icmp_seen():
                    ex.icmp = _icmp_word(exc)
                    timeline.add("send_error", error=ex.icmp)
                return False
            return True

        ex.forms_tried = 1
        for attempt in range(1, ATTEMPTS + 1):
            if not await send(inputs.configured):
                return ex
            ex.attempts = attempt
            timeline.add("occ_request_sent", attempt=attempt)
            if await listen_until(trio.current_time() + INTERVAL, forms[:1]):
                return ex
        if ex.answered_by is not None:  # decrypted, but no OCC reply (occ disabled?)
            return ex
        timeline.add("sweep_started", forms=len(forms) - 1)
        for form in forms[1:]:
            if not await send(form):
                return ex
            ex.forms_tried += 1
            ex.attempts += 1
            if await listen_until(trio.current_time() + SWEEP_GAP, forms):
                break
        else:
            if not await listen_until(trio.current_time() + SWEEP_WAIT, forms):
                timeline.add("gave_up", attempts=ex.attempts)
        # Forms that differ only in their sending key open the reply alike: ask under each
        # alone, and the one answered is the peer's.
        for form in list(ex.candidates) if ex.answered_by is None else []:
            timeline.add("confirming", form=form.as_evidence())
            if not await send(form):
                break
            ex.attempts += 1
            if (await listen_until(trio.current_time() + CONFIRM_WAIT, [form])
                    and ex.confirmed):
                break
    return ex


async def _tcp_exchange(target: Target, inputs: StaticInputs, *,
                        netns: str | None) -> StaticExchange:
    timeline = Timeline()
    ex = StaticExchange(target, timeline, inputs.configured,
                        local_options=inputs.local_options)
    keys = _Keys(inputs)
    forms = inputs.forms()
    sock = trio.socket.from_stdlib_socket(make_socket(target.family, socket.SOCK_STREAM, netns))
    with sock:
        try:
            with trio.fail_after(TCP_CONNECT_TIMEOUT):
                await sock.connect(target.sockaddr)
        except trio.TooSlowError:
            ex.tcp = "timeout"
            timeline.add("connect_timeout")
            return ex
        except ConnectionRefusedError:
            ex.tcp = "refused"
            timeline.add("connect_refused")
            return ex
        except OSError as exc:
            ex.tcp, ex.icmp = "unreachable", _icmp_word(exc)
            timeline.add("connect_error", error=ex.icmp)
            return ex
        ex.tcp = "connected"
        timeline.add("connected")
        stream = trio.SocketStream(sock)
        deframer = StreamDeframer()
        source = target.describe().rsplit("/", 1)[0]

        async def listen(seconds: float, opening: list[Form]) -> bool:
            with trio.move_on_after(seconds):
                while True:
                    try:
                        data = await stream.receive_some(RECV_SIZE)
                    except (OSError, trio.BrokenResourceError):
                        return True
                    if not data:
                        timeline.add("closed_by_peer")
                        return True
                    try:
                        packets = deframer.feed(data)
                    except ProtocolError:
                        ex.replies.append({"from": source, "bytes": len(data),
                                           "kind": "undecryptable", "t": timeline.elapsed()})
                        return True
                    for packet in packets:
                        if _note_reply(ex, keys, opening, packet, source=source,
                                       compression=inputs.compression):
                            return True
            return False

        try:
            ex.forms_tried = ex.attempts = 1
            await stream.send_all(frame(keys.request(inputs.configured)))
            timeline.add("occ_request_sent", attempt=1)
            if await listen(ATTEMPTS * INTERVAL, forms[:1]) or ex.answered_by is not None:
                return ex
            timeline.add("sweep_started", forms=len(forms) - 1)
            await stream.send_all(b"".join(frame(keys.request(f)) for f in forms[1:]))
            ex.forms_tried = ex.attempts = len(forms)
            await listen(SWEEP_WAIT, forms)
            for form in list(ex.candidates) if ex.answered_by is None else []:
                timeline.add("confirming", form=form.as_evidence())
                await stream.send_all(frame(keys.request(form)))
                ex.attempts += 1
                if await listen(CONFIRM_WAIT, [form]) and ex.confirmed:
                    break
        except (OSError, trio.BrokenResourceError) as exc:
            timeline.add("connection_error", error=str(exc))
    return ex


def usable_inputs(o: Options) -> StaticInputs | str:
    """The probe's inputs, or why the config's key/cipher cannot be used."""
    try:
        return static_inputs(o)
    except ConfigError as exc:
        return exc.reason
    except (ProtocolError, ValueError) as exc:
        return str(exc)
