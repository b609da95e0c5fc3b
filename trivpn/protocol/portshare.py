"""``port-share``: does a new TCP connection speak OpenVPN? (sans-IO: bytes in, decision out)

A TCP server with ``port-share HOST PORT`` looks at the first bytes of each connection and
hands those that do not start like an OpenVPN client to HOST:PORT (a web server behind the
VPN port). The test is OpenVPN's (src/openvpn/ps.c, is_openvpn_protocol(), called from
socket.c stream_buf_added() once the first two bytes are in): a 2-byte length prefix, then
the opcode byte of a client hard reset —

* ``P_CONTROL_HARD_RESET_CLIENT_V3`` (tls-crypt-v2): the length is 336 to 1278;
* otherwise the length is 14 to 255 and the opcode is ``P_CONTROL_HARD_RESET_CLIENT_V2``;
* only the two length bytes known yet: the length alone decides (14 to 255).

The key id (low 3 bits) is part of the byte compared, so it must be 0, as in a first reset.
"""

from __future__ import annotations

from enum import Enum

from trivpn.protocol.packets import OPCODE_SHIFT, Opcode

HEAD_BYTES = 2
"""Bytes needed before :func:`classify` can decide (the length prefix)."""

_RESET_V2 = int(Opcode.CONTROL_HARD_RESET_CLIENT_V2) << OPCODE_SHIFT
_RESET_V3 = int(Opcode.CONTROL_HARD_RESET_CLIENT_V3) << OPCODE_SHIFT


class FirstBytes(Enum):
    """What the first bytes of a TCP connection say."""

    MORE = "more"  # fewer than HEAD_BYTES: read on
    OPENVPN = "openvpn"  # an OpenVPN client: this server's
    FOREIGN = "foreign"  # anything else: proxied to the port-share target


def is_openvpn_protocol(head: bytes) -> bool:
    """OpenVPN's test on the bytes received so far (fewer than 2 bytes count as OpenVPN,
    as there)."""
    if len(head) >= 3:
        length = int.from_bytes(head[:2], "big")
        if head[2] == _RESET_V3:
            return 336 <= length < 1024 + 255
        return 14 <= length <= 255 and head[2] == _RESET_V2
    if len(head) == 2:
        return 14 <= int.from_bytes(head, "big") <= 255
    return True


def classify(head: bytes) -> FirstBytes:
    """The decision for a connection whose first received bytes are ``head``."""
    if len(head) < HEAD_BYTES:
        return FirstBytes.MORE
    return FirstBytes.OPENVPN if is_openvpn_protocol(head) else FirstBytes.FOREIGN
