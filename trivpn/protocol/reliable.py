"""The control channel's reliability layer (docs/protocol.md §2; OVPN ``reliable.c``).

One :class:`ReliableSender`, one :class:`ReliableReceiver` and one :class:`AckQueue` exist per key
state. Time is passed in; nothing here reads a clock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

SEND_WINDOW = 6  # TLS_RELIABLE_N_SEND_BUFFERS
RECEIVE_WINDOW = 12  # TLS_RELIABLE_N_REC_BUFFERS
ACKS_PER_CONTROL = 4  # CONTROL_SEND_ACK_MAX
ACKS_PER_ACK_PACKET = 8  # RELIABLE_ACK_SIZE
FAST_RETRANSMIT_ACKS = 3  # N_ACK_RETRANSMIT
MRU_SIZE = 8
# Payload bytes the receive window may hold: twelve messages of OpenVPN's largest control
# packet (TLS_CHANNEL_BUF_SIZE, 2048 bytes).
RECEIVE_BUFFER_BYTES = RECEIVE_WINDOW * 2048


@dataclass(slots=True)
class Outgoing:
    """One reliable control message waiting for its ack."""

    message_id: int
    opcode: int
    payload: bytes
    timeout: float
    next_try: float = 0.0  # 0 = not sent yet: due now
    transmissions: int = 0
    higher_acks: int = 0  # acks for higher ids since the last transmission


@dataclass(slots=True)
class ReliableSender:
    """Numbers outgoing messages, keeps them until acked, retransmits with doubling timeouts."""

    initial_timeout: float = 2.0
    window: int = SEND_WINDOW
    next_id: int = 0
    _pending: dict[int, Outgoing] = field(default_factory=dict)

    def can_queue(self) -> bool:
        lowest = min(self._pending, default=self.next_id)
        return self.next_id - lowest < self.window

    def queue(self, opcode: int, payload: bytes) -> int:
        """Assign the next message id; the caller must check :meth:`can_queue` first."""
        if not self.can_queue():
            raise RuntimeError("reliable send window is full")
        message_id = self.next_id
        self.next_id += 1
        self._pending[message_id] = Outgoing(message_id, opcode, payload, self.initial_timeout)
        return message_id

    def acknowledge(self, ids: Iterable[int]) -> int:
        """Drop acked messages; ids that are not outstanding are ignored. Returns how many went."""
        removed = 0
        for message_id in ids:
            if self._pending.pop(message_id, None) is not None:
                removed += 1
                for other in self._pending.values():
                    if other.message_id < message_id and other.transmissions:
                        other.higher_acks += 1
        return removed

    def due(self, now: float) -> list[Outgoing]:
        """Messages to transmit now, lowest id first; updates their retransmission schedule."""
        ready = [
            o for o in sorted(self._pending.values(), key=lambda o: o.message_id)
            if o.transmissions == 0 or now >= o.next_try or o.higher_acks >= FAST_RETRANSMIT_ACKS
        ]
        for o in ready:
            if o.transmissions:
                o.timeout *= 2
            o.transmissions += 1
            o.next_try = now + o.timeout
            o.higher_acks = 0
        return ready

    def schedule_now(self) -> None:
        """Make every outstanding message due at once (OpenVPN's burst on first contact)."""
        for o in self._pending.values():
            o.next_try = 0.0

    def next_deadline(self) -> float | None:
        if not self._pending:
            return None
        return min(o.next_try for o in self._pending.values())

    @property
    def all_acked(self) -> bool:
        return not self._pending

    @property
    def outstanding(self) -> int:
        return len(self._pending)


@dataclass(slots=True)
class ReliableReceiver:
    """Buffers incoming messages and releases them strictly in id order.

    Bounded in count (``window``) and in payload bytes (``max_bytes``): a message that would
    take the buffer past either is neither stored nor acked, so the peer retransmits it. The
    next expected message is always taken (it is released at once by :meth:`pop_ready`), so a
    buffer full of later messages cannot block the stream."""

    window: int = RECEIVE_WINDOW
    max_bytes: int = RECEIVE_BUFFER_BYTES
    expected: int = 0
    _buffer: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    _bytes: int = 0

    def receive(self, message_id: int, opcode: int, payload: bytes) -> bool:
        """Offer a message. Returns True when it must be acked (stored now or already seen)."""
        if message_id < self.expected or message_id in self._buffer:
            return True  # duplicate: ack again so a lost ack gets repaired
        if message_id >= self.expected + self.window:
            return False  # too far ahead: neither stored nor acked
        if message_id != self.expected and (
                len(self._buffer) >= self.window or self._bytes + len(payload) > self.max_bytes):
            return False  # the next expected one is always taken: it drains the buffer
        self._buffer[message_id] = (opcode, payload)
        self._bytes += len(payload)
        return True

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def pop_ready(self) -> list[tuple[int, bytes]]:
        """(opcode, payload) of every message now deliverable in order."""
        out: list[tuple[int, bytes]] = []
        while self.expected in self._buffer:
            message = self._buffer.pop(self.expected)
            self._bytes -= len(message[1])
            out.append(message)
            self.expected += 1
        return out


@dataclass(slots=True)
class AckQueue:
    """Ids to acknowledge, plus OpenVPN's most-recently-acked list used to fill spare slots."""

    _pending: deque[int] = field(default_factory=deque)
    _mru: deque[int] = field(default_factory=lambda: deque(maxlen=MRU_SIZE))

    def add(self, message_id: int) -> None:
        if message_id not in self._pending:
            self._pending.append(message_id)

    @property
    def pending(self) -> bool:
        return bool(self._pending)

    def take(self, limit: int, *, fill_from_mru: bool = True) -> tuple[int, ...]:
        """Up to ``limit`` ids: pending ones first, then recently acked ones (never twice).

        Like OpenVPN's ``reliable_ack_write()``, spare slots repeat recent acks on every
        control packet, so a retransmission still carries the ack its lost original had.
        """
        out: list[int] = []
        while self._pending and len(out) < limit:
            message_id = self._pending.popleft()
            out.append(message_id)
        for message_id in out:  # newly acked ids become the most recent
            if message_id in self._mru:
                self._mru.remove(message_id)
            self._mru.appendleft(message_id)
        if fill_from_mru:
            out += [old for old in self._mru if old not in out][:max(0, limit - len(out))]
        return tuple(out)
