"""OpenVPN's static-key peer-to-peer mode (``secret FILE [direction]``), docs/protocol.md §13.

No TLS, no control channel: the data-channel keys come straight from the 2048-bit static
key file (OpenVPN src/openvpn/init.c, do_init_crypto_static(); crypto.c,
crypto_read_openvpn_key() and key_direction_state_init()). A packet has no opcode or
key-id byte; with a CBC cipher (the only kind OpenVPN 2.6 allows without TLS: crypto.c,
init_key_type() refuses AEAD, CFB and OFB modes then)::

    [HMAC(IV || ct)][IV 16][AES-CBC(packet id 4 || time 4 || payload || PKCS#7)]

The packet id is the "long form" (CO_PACKET_ID_LONG_FORM): a 32-bit counter and the
sender's 32-bit Unix start time; with ``no-replay`` there is no packet id at all. The
receiver accepts a later time as a new sequence and refuses an earlier one
(packet_id.c, packet_id_test()).
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import Cipher, modes

from trivpn.protocol.datachannel import CBC_BLOCK, PACKET_ID_MAX, DataKey
from trivpn.protocol.errors import AuthenticationError, DecodeError, ProtocolError
from trivpn.protocol.keys import DirectionalKeys
from trivpn.protocol.statickey import StaticKey

_LONG_PID = struct.Struct(">II")


def static_directional_keys(key: StaticKey, direction: int | None) -> DirectionalKeys:
    """Which halves of the static key send and receive (crypto.c,
    key_direction_state_init()): no direction ("bidirectional") uses key[0] both ways;
    direction 0 sends with key[0] and receives with key[1]; direction 1 the reverse."""
    if direction is None:
        out_key = in_key = 0
    elif direction in (0, 1):
        out_key, in_key = direction, 1 - direction
    else:
        raise ValueError("key direction must be 0, 1 or None")
    return DirectionalKeys(encrypt_cipher=key.cipher(out_key), encrypt_hmac=key.hmac(out_key),
                           decrypt_cipher=key.cipher(in_key), decrypt_hmac=key.hmac(in_key))


class StaticDataKey(DataKey):
    """A :class:`DataKey` for static-key mode: no header byte, long-form packet ids.

    ``start_time`` is the sender's Unix time written into every packet id (OpenVPN sets it
    once, at the first packet); ``replay`` False (no-replay) sends no packet id at all.
    """

    __slots__ = ("_long", "_start_time")

    def __init__(self, cipher: str, keys: DirectionalKeys, *, auth: str = "SHA1",
                 start_time: int, replay_backtrack: int = 64, replay_time: float = 15.0,
                 replay: bool = True, iv_source: Callable[[int], bytes] = os.urandom) -> None:
        super().__init__(cipher, keys, 0, auth=auth, replay_backtrack=replay_backtrack,
                         replay_time=replay_time, replay=replay, iv_source=iv_source)
        if self.is_aead:
            raise ValueError(f"Cipher '{self.cipher}' mode not supported")
        self._long = replay
        self._start_time = start_time & 0xFFFFFFFF

    def wire_bytes(self) -> int:
        body = self._mac_len + CBC_BLOCK + (8 if self._long else 0)
        return (self.bytes_out + self.bytes_in + (self.packets_out + self.packets_in) * body
                + self._pad_bytes)

    def encrypt(self, plaintext: bytes) -> bytes:
        if not plaintext:
            raise ValueError("data channel plaintext must not be empty")
        prefix = b""
        if self._long:
            if self._pid >= PACKET_ID_MAX:
                raise ProtocolError("packet ID roll over", "data channel",
                                    reason="packet_id_exhausted")
            self._pid += 1
            prefix = _LONG_PID.pack(self._pid, self._start_time)
        self.packets_out += 1
        self.bytes_out += len(plaintext)
        assert self._cbc_enc_alg is not None and self._enc_mac is not None
        iv = self._iv_source(CBC_BLOCK)
        pad = CBC_BLOCK - (len(prefix) + len(plaintext)) % CBC_BLOCK
        self._pad_bytes += pad
        enc = Cipher(self._cbc_enc_alg, modes.CBC(iv)).encryptor()
        ct = enc.update(b"".join((prefix, plaintext, bytes((pad,)) * pad))) + enc.finalize()
        mac = self._enc_mac.copy()
        mac.update(iv)
        mac.update(ct)
        return b"".join((mac.digest(), iv, ct))

    def decrypt(self, packet: bytes, now: float) -> bytes:
        """Authenticate (HMAC first), decrypt, replay-check; the payload. Raises the
        ProtocolError family for anything that is not a packet of this key."""
        assert self._cbc_dec_alg is not None and self._dec_mac is not None
        mac_end = self._mac_len
        ct_start = mac_end + CBC_BLOCK
        ct_len = len(packet) - ct_start
        if ct_len < CBC_BLOCK or ct_len % CBC_BLOCK:
            raise DecodeError(f"static-key packet of {len(packet)} bytes has a bad length",
                              "data packet", reason="truncated")
        mac = self._dec_mac.copy()
        mac.update(packet[mac_end:])
        if not hmac.compare_digest(mac.digest(), packet[:mac_end]):
            raise AuthenticationError("packet HMAC authentication failed", "data packet",
                                      reason="hmac_mismatch")
        dec = Cipher(self._cbc_dec_alg, modes.CBC(packet[mac_end:ct_start])).decryptor()
        padded = dec.update(packet[ct_start:]) + dec.finalize()
        pad = padded[-1]
        if not 1 <= pad <= CBC_BLOCK or padded[-pad:] != bytes((pad,)) * pad:
            raise AuthenticationError("bad CBC padding", "data packet", reason="bad_padding")
        start = 0
        if self._long:
            if len(padded) - pad < 8:
                raise DecodeError("static-key plaintext without packet id", "data packet",
                                  reason="truncated")
            pid, sent_at = _LONG_PID.unpack_from(padded)
            self._replay.check_and_add(pid, now, sent_at)
            start = 8
        self._pad_bytes += pad
        plaintext = padded[start:-pad]
        self.packets_in += 1
        self.bytes_in += len(plaintext)
        return plaintext

    def __repr__(self) -> str:
        return f"StaticDataKey({self.cipher}, packet_id={self._pid})"
