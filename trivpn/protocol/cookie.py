"""The 2.6 server's stateless first contact over UDP (docs/protocol.md §10.1; OVPN ``ssl_pkt.c``).

A server answers a client's hard reset without keeping any state: its session id is an HMAC
over a time slot, the client's address and the client's session id. Only when the client's next
packet acks that reset with the matching session id does the server create a session
(:meth:`~trivpn.protocol.session.Session.after_stateless_reset`). A flood of spoofed resets
therefore costs the server no memory.
"""

from __future__ import annotations

import hashlib
import hmac

from trivpn.protocol.packets import ControlPacket, Opcode, encode_control
from trivpn.protocol.wrap import ControlWrap

VALID_SLOTS = 3  # the current slot and the two before it (cookie valid 60-90 s by default)


def timeslot(now: float, hand_window: float) -> int:
    """OpenVPN's slot length is half the handshake window (30 s for the default 60 s)."""
    return int(now // max(1.0, (hand_window + 1) // 2))


def cookie_session_id(secret: bytes, slot: int, peer: bytes, client_sid: bytes) -> bytes:
    """The server session id for this client in this time slot (never all zero)."""
    digest = hmac.new(secret, slot.to_bytes(8, "big") + peer + client_sid,
                      hashlib.sha256).digest()
    sid = digest[:8]
    return sid if any(sid) else b"\x00" * 7 + b"\x01"


def stateless_server_reset(wrap: ControlWrap, server_sid: bytes, client_sid: bytes,
                           timestamp: int, payload: bytes = b"") -> bytes:
    """P_CONTROL_HARD_RESET_SERVER_V2 acking the client's reset, wrapped with replay id 1;
    ``payload``: early-negotiation TLVs (tls-crypt-v2's request to resend WKc)."""
    packet = ControlPacket(opcode=Opcode.CONTROL_HARD_RESET_SERVER_V2, key_id=0,
                           session_id=server_sid, acks=(0,), remote_session_id=client_sid,
                           message_id=0, payload=payload)
    return wrap.wrap(encode_control(packet), 1, timestamp)


def cookie_matches(packet: ControlPacket, secret: bytes, now: float, hand_window: float,
                   peer: bytes) -> bool:
    """Does this packet (the client's second) ack one of our stateless resets?

    It must carry acks only for ids <= 1 echoing a cookie of the current or the two previous
    time slots and, if it is a CONTROL_V1, have message id <= 1.
    """
    if packet.key_id != 0 or not packet.acks or packet.remote_session_id is None:
        return False
    if packet.opcode not in (Opcode.CONTROL_V1, Opcode.ACK_V1):
        return False
    if any(ack > 1 for ack in packet.acks):
        return False
    if packet.opcode == Opcode.CONTROL_V1 and (packet.message_id is None
                                               or packet.message_id > 1):
        return False
    slot = timeslot(now, hand_window)
    return any(
        hmac.compare_digest(cookie_session_id(secret, slot - back, peer, packet.session_id),
                            packet.remote_session_id)
        for back in range(VALID_SLOTS) if slot - back >= 0)  # no slots before time 0
