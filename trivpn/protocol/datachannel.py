"""Data-channel packet protection for one key_id (docs/protocol.md §7.1-§7.5).

AEAD (AES-GCM, ChaCha20-Poly1305)::

    [30|kid]            [packet id 4][tag 16][ciphertext]      P_DATA_V1, AD = packet id
    [48|kid][peer id 3] [packet id 4][tag 16][ciphertext]      P_DATA_V2, AD = header + packet id

    nonce = packet id || implicit IV (first 8 bytes of the direction's hmac slot)

CBC + HMAC (legacy)::

    [header 1|4][HMAC(IV || ct)][IV 16][AES-CBC(packet id 4 || payload || PKCS#7)]

Hot path: no logging; cipher objects are built once per :class:`DataKey`.
"""

from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from trivpn.protocol.digests import digest_info
from trivpn.protocol.errors import AuthenticationError, DecodeError, ProtocolError, StateError
from trivpn.protocol.keys import DirectionalKeys
from trivpn.protocol.packets import KEY_ID_MASK, OPCODE_SHIFT, Opcode, data_header
from trivpn.protocol.replay import NoReplayCheck, ReplayWindow

# canonical name -> (key length, is AEAD)
CIPHERS: dict[str, tuple[int, bool]] = {
    "AES-128-GCM": (16, True),
    "AES-192-GCM": (24, True),
    "AES-256-GCM": (32, True),
    "CHACHA20-POLY1305": (32, True),
    "AES-128-CBC": (16, False),
    "AES-192-CBC": (24, False),
    "AES-256-CBC": (32, False),
}
SUPPORTED_CIPHERS: tuple[str, ...] = tuple(CIPHERS)
AEAD_TAG_LEN = 16
IMPLICIT_IV_LEN = 8
CBC_BLOCK = 16
PACKET_ID_WRAP_TRIGGER = 0xFF000000  # renegotiate from here on (packet_id.h)
PACKET_ID_MAX = 0xFFFFFFFF

_PID = struct.Struct(">I")
_OP_V1 = int(Opcode.DATA_V1)
_OP_V2 = int(Opcode.DATA_V2)
_V2_AEAD_BODY = 4 + 4 + AEAD_TAG_LEN  # P_DATA_V2 header, packet id, tag: the payload follows


def normalize_cipher(name: str) -> str:
    """Canonical OpenVPN name (``AES-256-GCM`` ...); DecodeError for unsupported ciphers."""
    upper = name.strip().upper()
    if upper not in CIPHERS:
        raise DecodeError(f"unsupported data cipher {name!r}", "cipher",
                          reason="unsupported_cipher")
    return upper


def is_aead(cipher: str) -> bool:
    return CIPHERS[normalize_cipher(cipher)][1]


class DataKey:
    """Encrypt/decrypt data packets of one key_id, with its send counter and replay window.

    ``peer_id`` None sends P_DATA_V1, otherwise P_DATA_V2 with that peer-id; both header
    forms are accepted on receive. ``auth`` is the ``--auth`` digest, used only by CBC.
    ``iv_source`` supplies the random CBC IVs (tests may pass a deterministic one);
    ``last_packet_id`` is the id "already sent" (0: the first packet gets id 1).
    Counters: ``packets_out``/``bytes_out`` count sent plaintext bytes, ``packets_in``/
    ``bytes_in`` count accepted decrypted plaintext bytes.
    """

    __slots__ = (
        "_ad_header", "_aead", "_cbc_dec_alg", "_cbc_enc_alg", "_dec_iv", "_dec_mac", "_enc_iv",
        "_enc_mac", "_header", "_iv_source", "_mac_len", "_open", "_pad_bytes", "_pid", "_replay",
        "_rx_v2", "_seal", "bytes_in", "bytes_out", "cipher", "is_aead", "key_id", "packets_in",
        "packets_out", "peer_id",
    )

    def __init__(self, cipher: str, keys: DirectionalKeys, key_id: int, *, auth: str = "SHA1",
                 peer_id: int | None = None, replay_backtrack: int = 64,
                 replay_time: float = 15.0, replay: bool = True,
                 iv_source: Callable[[int], bytes] = os.urandom,
                 last_packet_id: int = 0) -> None:
        self.cipher = normalize_cipher(cipher)
        keylen, self.is_aead = CIPHERS[self.cipher]
        self.key_id = key_id
        self.peer_id = peer_id
        self._header = data_header(key_id, peer_id)
        # AEAD additional data before the packet id: the P_DATA_V2 header, nothing for V1
        self._ad_header = self._header if len(self._header) == 4 else b""
        # first byte of a P_DATA_V2 packet for this key: the receive fast path's test
        self._rx_v2 = (_OP_V2 << OPCODE_SHIFT) | key_id
        if not 0 <= last_packet_id <= PACKET_ID_MAX:
            raise ValueError("last_packet_id must be a uint32")
        self._pid = last_packet_id
        self._replay = (ReplayWindow(replay_backtrack, replay_time) if replay
                        else NoReplayCheck())  # no-replay
        self._iv_source = iv_source
        self.packets_out = self.bytes_out = self.packets_in = self.bytes_in = 0
        self._pad_bytes = 0  # CBC padding sent and received (for wire_bytes)
        enc_key = keys.encrypt_cipher[:keylen]
        dec_key = keys.decrypt_cipher[:keylen]
        self._aead: tuple[AESGCM | ChaCha20Poly1305, AESGCM | ChaCha20Poly1305] | None = None
        # the AEAD's bound encrypt/decrypt (None for CBC): one attribute lookup per packet
        self._seal: Callable[[bytes, bytes, bytes], bytes] | None = None
        self._open: Callable[[bytes, bytes, bytes], bytes] | None = None
        self._enc_iv = keys.encrypt_hmac[:IMPLICIT_IV_LEN]
        self._dec_iv = keys.decrypt_hmac[:IMPLICIT_IV_LEN]
        self._mac_len = 0
        self._enc_mac: hmac.HMAC | None = None
        self._dec_mac: hmac.HMAC | None = None
        self._cbc_enc_alg: algorithms.AES | None = None
        self._cbc_dec_alg: algorithms.AES | None = None
        if self.is_aead:
            factory = ChaCha20Poly1305 if self.cipher == "CHACHA20-POLY1305" else AESGCM
            self._aead = (factory(enc_key), factory(dec_key))
            self._seal = self._aead[0].encrypt
            self._open = self._aead[1].decrypt
        else:
            hname, self._mac_len = digest_info(auth)
            self._enc_mac = hmac.new(keys.encrypt_hmac[:self._mac_len], digestmod=hname)
            self._dec_mac = hmac.new(keys.decrypt_hmac[:self._mac_len], digestmod=hname)
            self._cbc_enc_alg = algorithms.AES(enc_key)
            self._cbc_dec_alg = algorithms.AES(dec_key)

    @property
    def packet_id(self) -> int:
        """The last packet id sent (0 before the first packet)."""
        return self._pid

    @property
    def needs_renegotiation(self) -> bool:
        """True once the send packet id reached 0xFF000000 (OpenVPN triggers a reneg)."""
        return self._pid >= PACKET_ID_WRAP_TRIGGER

    def wire_bytes(self) -> int:
        """Data-channel bytes sent and received with this key as OpenVPN counts them for
        ``reneg-bytes`` (ssl.c ``tls_post_encrypt``/``tls_pre_decrypt``): whole packets sent,
        packets received without their opcode (and peer-id) header. Derived from the
        per-packet counters, so the hot path does no extra work. Only authenticated packets
        count (OpenVPN counts a received packet before it authenticates it)."""
        # AEAD: packet id, tag. CBC: HMAC, IV, packet id (and the padding, counted apart).
        body = 4 + AEAD_TAG_LEN if self.is_aead else self._mac_len + CBC_BLOCK + 4
        return (self.bytes_out + self.packets_out * (len(self._header) + body)
                + self.bytes_in + self.packets_in * body + self._pad_bytes)

    def wire_length(self, plaintext_len: int) -> int:
        """The length of the wire packet :meth:`encrypt` makes of ``plaintext_len`` bytes:
        opcode (and peer id), then packet id and tag (AEAD), or HMAC, IV and the CBC
        ciphertext of packet id, plaintext and 1..16 bytes of padding."""
        if self.is_aead:
            return len(self._header) + 4 + AEAD_TAG_LEN + plaintext_len
        blocks = (4 + plaintext_len) // CBC_BLOCK + 1
        return len(self._header) + self._mac_len + CBC_BLOCK + blocks * CBC_BLOCK

    @property
    def replay_window(self) -> ReplayWindow:
        return self._replay

    def encrypt(self, plaintext: bytes) -> bytes:
        """Return the complete wire packet for ``plaintext`` (must be non-empty).

        ProtocolError (reason ``packet_id_exhausted``) once packet id 0xFFFFFFFF has been used.
        """
        pid = self._pid + 1
        seal = self._seal
        if seal is not None and plaintext and pid <= PACKET_ID_MAX:
            # AEAD, the per-packet hot path: as little Python as possible
            self._pid = pid
            self.packets_out += 1
            self.bytes_out += len(plaintext)
            pid_b = _PID.pack(pid)
            sealed = seal(pid_b + self._enc_iv, plaintext, self._ad_header + pid_b)
            return b"".join((self._header, pid_b, sealed[-AEAD_TAG_LEN:],
                             sealed[:-AEAD_TAG_LEN]))
        return self._encrypt_slow(plaintext)

    def _encrypt_slow(self, plaintext: bytes) -> bytes:
        """:meth:`encrypt` for CBC, and the errors of both."""
        if not plaintext:
            raise ValueError("data channel plaintext must not be empty")
        pid = self._pid
        if pid >= PACKET_ID_MAX:
            raise ProtocolError("packet ID roll over", "data channel",
                                reason="packet_id_exhausted")
        pid += 1
        self._pid = pid
        self.packets_out += 1
        self.bytes_out += len(plaintext)
        pid_b = _PID.pack(pid)
        header = self._header
        assert self._cbc_enc_alg is not None and self._enc_mac is not None
        iv = self._iv_source(CBC_BLOCK)
        pad = CBC_BLOCK - (len(plaintext) + 4) % CBC_BLOCK
        self._pad_bytes += pad
        enc = Cipher(self._cbc_enc_alg, modes.CBC(iv)).encryptor()
        ct = enc.update(b"".join((pid_b, plaintext, bytes((pad,)) * pad))) + enc.finalize()
        mac = self._enc_mac.copy()
        mac.update(iv)
        mac.update(ct)
        return b"".join((header, mac.digest(), iv, ct))

    def decrypt(self, packet: bytes, now: float) -> bytes:
        """Authenticate, decrypt and replay-check a full wire packet; return the plaintext.

        Raises DecodeError (malformed/truncated/not a data packet), StateError (key_id is not
        this key's), AuthenticationError (tag/HMAC mismatch, bad padding), ReplayError.
        """
        open_ = self._open
        if open_ is not None and len(packet) > _V2_AEAD_BODY and packet[0] == self._rx_v2:
            # AEAD with a P_DATA_V2 header for this key, the per-packet hot path; the same
            # checks as below in the same order (tag, then replay window)
            pid_b = packet[4:8]
            try:
                plaintext = open_(pid_b + self._dec_iv,
                                  packet[_V2_AEAD_BODY:] + packet[8:_V2_AEAD_BODY], packet[:8])
            except InvalidTag:
                raise AuthenticationError("AEAD tag mismatch", "data packet",
                                          reason="tag_mismatch") from None
            self._replay.check_and_add(_PID.unpack(pid_b)[0], now)
            self.packets_in += 1
            self.bytes_in += len(plaintext)
            return plaintext
        return self._decrypt_slow(packet, now)

    def _decrypt_slow(self, packet: bytes, now: float) -> bytes:
        """:meth:`decrypt` for P_DATA_V1, CBC, and every error."""
        if not packet:
            raise DecodeError("empty packet", "data header", reason="truncated")
        b0 = packet[0]
        op = b0 >> OPCODE_SHIFT
        if op == _OP_V2:
            hlen = 4
        elif op == _OP_V1:
            hlen = 1
        else:
            raise DecodeError(f"opcode {op} is not a data opcode", "data header",
                              reason="bad_opcode")
        if b0 & KEY_ID_MASK != self.key_id:
            raise StateError(f"packet for key id {b0 & KEY_ID_MASK}, this key is "
                             f"{self.key_id}", "data header", reason="wrong_key_id")
        if self._aead is not None:
            body = hlen + 4 + AEAD_TAG_LEN
            if len(packet) <= body:
                raise DecodeError(f"AEAD packet of {len(packet)} bytes has no payload",
                                  "data packet", reason="truncated")
            pid_b = packet[hlen:hlen + 4]
            ad = packet[:hlen + 4] if hlen == 4 else pid_b
            try:
                plaintext = self._aead[1].decrypt(
                    pid_b + self._dec_iv, packet[body:] + packet[hlen + 4:body], ad)
            except InvalidTag:
                raise AuthenticationError("AEAD tag mismatch", "data packet",
                                          reason="tag_mismatch") from None
            (pid,) = _PID.unpack(pid_b)
        else:
            plaintext, pid = self._cbc_open(packet, hlen)
        self._replay.check_and_add(pid, now)
        self.packets_in += 1
        self.bytes_in += len(plaintext)
        return plaintext

    def _cbc_open(self, packet: bytes, hlen: int) -> tuple[bytes, int]:
        assert self._cbc_dec_alg is not None and self._dec_mac is not None
        mac_end = hlen + self._mac_len
        ct_start = mac_end + CBC_BLOCK
        ct_len = len(packet) - ct_start
        if ct_len < CBC_BLOCK or ct_len % CBC_BLOCK:
            raise DecodeError(f"CBC packet of {len(packet)} bytes has a bad length",
                              "data packet", reason="truncated")
        mac = self._dec_mac.copy()
        mac.update(packet[mac_end:])
        if not hmac.compare_digest(mac.digest(), packet[hlen:mac_end]):
            raise AuthenticationError("packet HMAC authentication failed", "data packet",
                                      reason="hmac_mismatch")
        dec = Cipher(self._cbc_dec_alg, modes.CBC(packet[mac_end:ct_start])).decryptor()
        padded = dec.update(packet[ct_start:]) + dec.finalize()
        pad = padded[-1]
        if not 1 <= pad <= CBC_BLOCK or padded[-pad:] != bytes((pad,)) * pad:
            raise AuthenticationError("bad CBC padding", "data packet", reason="bad_padding")
        if len(padded) - pad < 4:
            raise DecodeError("CBC plaintext without packet id", "data packet",
                              reason="truncated")
        (pid,) = _PID.unpack_from(padded)
        self._pad_bytes += pad
        return padded[4:-pad], pid

    def __repr__(self) -> str:
        return (f"DataKey({self.cipher}, key_id={self.key_id}, peer_id={self.peer_id}, "
                f"packet_id={self._pid})")
