"""Key method 2 block and the options ("OCC") string (docs/protocol.md §5.2, §5.3).

The key-method-2 block is the first application data both peers write inside TLS. Its layout:

    u32 zero | u8 key method (2) | [48 pre_master, client only] | 32 random1 | 32 random2
    | str options | str username | str password | str peer-info

where ``str`` is a big-endian u16 length that includes a trailing NUL, followed by that many
bytes. An empty or absent string is written as length 0 (OpenVPN's ``write_empty_string``).

The options string is what ``options.c`` ``options_string()`` builds. 2.6 only compares it and
warns on mismatch, but trivpn sends exactly what a 2.6 peer with the same settings computes so
that neither side logs warnings. Verified against the real ``openvpn`` 2.6.14 binary
(``--verb 7`` "Local Options String") for: udp/tcp, tun/tap, tun-mtu 1400, tun-mtu-extra 40,
tls-auth with and without a key direction, tls-crypt (no token, no change), comp-lzo/compress
stub (+1 byte, ``comp-lzo`` token), fragment (+4, ``mtu-dynamic``), auth SHA256 / none, and
ciphers AES-128/256-GCM, AES-192-GCM (not in data-ciphers: no ``cipher`` token), CHACHA20-POLY1305,
AES-128/256-CBC. ``proto udp6``/``tcp6-client`` print the v4 names, as 2.6 does.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from trivpn.protocol.errors import DecodeError, ProtocolError

KEY_METHOD_2 = 2
KEY_METHOD_MASK = 0x0F
PRE_MASTER_LEN = 48
RANDOM_LEN = 32
OPTIONS_MAX_LEN = 512  # TLS_OPTIONS_LEN, including the NUL
USER_PASS_MAX_LEN = 4096  # USER_PASS_LEN in builds with PKCS#11 (distro 2.6 builds), incl. NUL
_U16 = struct.Struct("!H")
_TEXT_ENCODING = "utf-8"
_TEXT_ERRORS = "surrogateescape"  # round-trips arbitrary bytes in username/password


class IncompleteError(DecodeError):
    """The buffer ends before the block does; wait for more bytes and decode again."""

    reason = "truncated"


class CredentialsTooLongError(DecodeError):
    """Username or password longer than :data:`USER_PASS_MAX_LEN`.

    A 2.6 server does not abort on this: it answers
    ``AUTH_FAILED,Username or password is too long. Maximum length is 128 bytes``.
    """

    reason = "credentials_too_long"


@dataclass(frozen=True, slots=True)
class KeyMethod2:
    """One key-method-2 block. Key material and the password never appear in ``repr``."""

    random1: bytes = field(repr=False)
    random2: bytes = field(repr=False)
    options: str
    pre_master: bytes | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    peer_info: str | None = None


def _put_string(out: bytearray, value: str | None, where: str, limit: int | None) -> None:
    if not value:
        out += b"\x00\x00"
        return
    raw = value.encode(_TEXT_ENCODING, _TEXT_ERRORS)
    if b"\x00" in raw:
        raise ProtocolError("string contains a NUL byte", where, reason="bad_argument")
    size = len(raw) + 1
    if size > 0xFFFF or (limit is not None and size > limit):
        raise ProtocolError(f"string of {size} bytes (with NUL) is too long", where,
                            reason="too_long")
    out += _U16.pack(size)
    out += raw
    out += b"\x00"


def encode_key_method2(km: KeyMethod2, *, from_server: bool) -> bytes:
    """Serialise *km* as the client (``from_server=False``) or server block.

    The client block must carry a 48-byte ``pre_master``; the server block must not.
    """
    if len(km.random1) != RANDOM_LEN or len(km.random2) != RANDOM_LEN:
        raise ProtocolError(f"random1/random2 must be {RANDOM_LEN} bytes", "random",
                            reason="bad_argument")
    out = bytearray(b"\x00\x00\x00\x00")
    out.append(KEY_METHOD_2)
    if from_server:
        if km.pre_master is not None:
            raise ProtocolError("the server block has no pre_master", "pre_master",
                                reason="bad_argument")
    else:
        if km.pre_master is None or len(km.pre_master) != PRE_MASTER_LEN:
            raise ProtocolError(f"the client block needs a {PRE_MASTER_LEN}-byte pre_master",
                                "pre_master", reason="bad_argument")
        out += km.pre_master
    out += km.random1
    out += km.random2
    _put_string(out, km.options, "options", OPTIONS_MAX_LEN)
    _put_string(out, km.username, "username", USER_PASS_MAX_LEN)
    _put_string(out, km.password, "password", USER_PASS_MAX_LEN)
    _put_string(out, km.peer_info, "peer_info", None)
    return bytes(out)


class _Cursor:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int, where: str) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise IncompleteError(
                f"need {n} bytes at offset {self.pos}, have {len(self.data) - self.pos}", where)
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def string(self, where: str, limit: int | None) -> str | None:
        (size,) = _U16.unpack(self.take(2, where))
        if limit is not None and size > limit:
            if where == "options":
                raise DecodeError(f"options string of {size} bytes exceeds {limit}", where,
                                  reason="too_long")
            raise CredentialsTooLongError(f"{size} bytes exceeds {limit}", where)
        raw = self.take(size, where)
        # C semantics: the string ends at its first NUL (the last byte is forced to NUL).
        text = raw.split(b"\x00", 1)[0]
        if not text:
            return None
        return text.decode(_TEXT_ENCODING, _TEXT_ERRORS)


def decode_key_method2(data: bytes, *, from_server: bool) -> tuple[KeyMethod2, int]:
    """Parse one key-method-2 block written by the server (``from_server=True``) or client.

    Returns the block and the number of bytes it occupied. Raises :class:`IncompleteError` if
    *data* ends early (the caller may wait for more), :class:`CredentialsTooLongError` for an
    oversized username/password, and :class:`DecodeError` for anything else malformed. Empty
    strings (length 0, or only a NUL) decode as ``None``, except ``options`` which becomes ``""``.
    """
    cur = _Cursor(bytes(data))
    cur.take(4, "zero")  # literal zero, ignored by 2.6 readers
    method = cur.take(1, "key_method")[0]
    if method & KEY_METHOD_MASK != KEY_METHOD_2:
        raise DecodeError(f"unknown key_method/flags={method}", "key_method",
                          reason="bad_key_method")
    pre_master = None if from_server else cur.take(PRE_MASTER_LEN, "pre_master")
    random1 = cur.take(RANDOM_LEN, "random1")
    random2 = cur.take(RANDOM_LEN, "random2")
    options = cur.string("options", OPTIONS_MAX_LEN) or ""
    username = cur.string("username", USER_PASS_MAX_LEN)
    password = cur.string("password", USER_PASS_MAX_LEN)
    peer_info = cur.string("peer_info", None)
    km = KeyMethod2(random1=random1, random2=random2, options=options, pre_master=pre_master,
                    username=username, password=password, peer_info=peer_info)
    return km, cur.pos


# --------------------------------------------------------------------------------------------
# Options string


@dataclass(frozen=True, slots=True)
class _CipherShape:
    aead: bool
    key_bits: int
    iv: int
    block: int  # OpenVPN reports the CBC block size for GCM (cipher_kt_block_size)
    tag: int = 0


_CIPHERS: dict[str, _CipherShape] = {
    "AES-128-CBC": _CipherShape(False, 128, 16, 16),
    "AES-192-CBC": _CipherShape(False, 192, 16, 16),
    "AES-256-CBC": _CipherShape(False, 256, 16, 16),
    "AES-128-GCM": _CipherShape(True, 128, 12, 16, 16),
    "AES-192-GCM": _CipherShape(True, 192, 12, 16, 16),
    "AES-256-GCM": _CipherShape(True, 256, 12, 16, 16),
    "CHACHA20-POLY1305": _CipherShape(True, 256, 12, 1, 16),
}
_DIGESTS: dict[str, int] = {
    "MD5": 16, "SHA1": 20, "SHA224": 28, "SHA256": 32, "SHA384": 48, "SHA512": 64,
}
NULL_DIGEST = "[null-digest]"
PLACEHOLDER_CIPHER = "BF-CBC"  # 2.6's --cipher default before NCP
TAP_MTU_EXTRA_DEFAULT = 32
_PACKET_ID_SHORT = 4
_PROTO_NAMES = {
    "udp": "UDPv4", "udp4": "UDPv4", "udp6": "UDPv4", "udpv4": "UDPv4",
    "tcp-client": "TCPv4_CLIENT", "tcp4-client": "TCPv4_CLIENT", "tcp6-client": "TCPv4_CLIENT",
    "tcpv4_client": "TCPv4_CLIENT",
    "tcp-server": "TCPv4_SERVER", "tcp4-server": "TCPv4_SERVER", "tcp6-server": "TCPv4_SERVER",
    "tcpv4_server": "TCPv4_SERVER",
}
# Compression settings that add the ``comp-lzo`` token and how many framing bytes they add.
_COMPRESSION_OVERHEAD = {"lzo-stub": 1, "stub": 1, "stub-v2": 0, "lzo": 1, "lz4": 1, "lz4-v2": 0}


def _proto_name(proto: str, is_server: bool) -> str:
    key = proto.lower()
    if key in ("tcp", "tcp4", "tcp6", "tcpv4"):
        return "TCPv4_SERVER" if is_server else "TCPv4_CLIENT"
    try:
        return _PROTO_NAMES[key]
    except KeyError:
        raise ValueError(f"unknown proto {proto!r}") from None


def options_string(*,  # noqa: PLR0912, PLR0915 - one line per OCC option, in order
                   dev_type: str = "tun", proto: str = "UDPv4", is_server: bool,
                   tun_mtu: int = 1500, link_mtu: int | None = None, keydir: int | None = None,
                   tls_auth: bool = False, comp_lzo: bool = False, cipher: str | None = None,
                   auth: str = "SHA1", keysize: int | None = None,
                   compression: str | None = None, fragment: bool = False,
                   tun_mtu_extra: int | None = None,
                   data_ciphers: Sequence[str] | None = None) -> str:
    """The options string a 2.6 peer with these settings sends (``options_string()``).

    - ``proto``: ``UDPv4``/``TCPv4_CLIENT``/``TCPv4_SERVER`` or config names (``udp``,
      ``tcp-client``, bare ``tcp`` picks the side from *is_server*).
    - ``cipher``: the ``--cipher`` value; ``None`` is 2.6's BF-CBC placeholder (no token,
      ``keysize 128``). The ``cipher`` token is printed when *data_ciphers* is ``None`` or
      contains it. AEAD ciphers print ``auth [null-digest]``.
    - ``link_mtu``/``keysize``: ``None`` computes them as ``calc_options_string_link_mtu()``
      does (tun-mtu + tap extra + framing + opcode + packet id + crypto overhead).
    - ``compression``: ``lzo-stub`` (``comp-lzo no``), ``stub`` (``compress``), ``stub-v2``;
      ``comp_lzo=True`` means ``lzo-stub``.
    - ``keydir``: the local key direction (``tls-auth KEY 1`` → 1), printed as ``keydir N``.
    - tls-crypt changes nothing in the string.

    Raises ValueError for unknown ciphers, digests, protocols or compression names.
    """
    if dev_type not in ("tun", "tap"):
        raise ValueError(f"dev_type must be tun or tap, not {dev_type!r}")
    if comp_lzo and compression is None:
        compression = "lzo-stub"
    if compression is not None and compression not in _COMPRESSION_OVERHEAD:
        raise ValueError(f"unsupported compression framing {compression!r}")
    if keydir not in (None, 0, 1):
        raise ValueError("keydir must be 0, 1 or None")
    proto_name = _proto_name(proto, is_server)
    digest = auth.upper()
    if digest != "NONE" and digest not in _DIGESTS:
        raise ValueError(f"unknown auth digest {auth!r}")

    cipher_name = PLACEHOLDER_CIPHER if cipher is None else cipher.upper()
    shape: _CipherShape | None = None
    if cipher_name != PLACEHOLDER_CIPHER:
        try:
            shape = _CIPHERS[cipher_name]
        except KeyError:
            raise ValueError(f"unknown cipher {cipher!r}") from None
    aead = shape is not None and shape.aead
    digest_len = 0 if aead or digest == "NONE" else _DIGESTS[digest]
    digest_name = NULL_DIGEST if digest_len == 0 else digest

    if keysize is None:
        keysize = 128 if shape is None else shape.key_bits
    if link_mtu is None:
        extra_tun = 0
        if dev_type == "tap":
            extra_tun = TAP_MTU_EXTRA_DEFAULT if tun_mtu_extra is None else tun_mtu_extra
        elif tun_mtu_extra is not None:
            extra_tun = tun_mtu_extra
        payload = tun_mtu + extra_tun
        payload += _COMPRESSION_OVERHEAD.get(compression or "", 0)
        payload += 4 if fragment else 0
        cbc = shape is not None and not shape.aead
        if cbc:
            payload += _PACKET_ID_SHORT  # the packet id is inside the CBC plaintext
        overhead = 16 if shape is None else 0  # BF-CBC placeholder: 8-byte block + 8-byte IV
        overhead += 2 if proto_name.startswith("TCP") else 0
        overhead += 1  # opcode (peer-id is not in use when the string is built)
        if not cbc:
            overhead += _PACKET_ID_SHORT
        if shape is not None and shape.aead:
            overhead += shape.tag + shape.iv + shape.block
        else:
            if shape is not None:
                overhead += shape.block + shape.iv
            overhead += digest_len
        link_mtu = payload + overhead

    parts = ["V4", f"dev-type {dev_type}", f"link-mtu {link_mtu}", f"tun-mtu {tun_mtu}",
             f"proto {proto_name}"]
    if compression is not None:
        parts.append("comp-lzo")
    if fragment:
        parts.append("mtu-dynamic")
    if keydir is not None:
        parts.append(f"keydir {keydir}")
    if cipher is not None and (data_ciphers is None
                               or cipher_name in {c.upper() for c in data_ciphers}):
        parts.append(f"cipher {cipher_name}")
    parts.append(f"auth {digest_name}")
    parts.append(f"keysize {keysize}")
    if tls_auth:
        parts.append("tls-auth")
    parts.append("key-method 2")
    parts.append("tls-server" if is_server else "tls-client")
    return ",".join(parts)


def options_string_value(options: str, name: str) -> str | None:
    """The value of the first ``name VALUE`` item of an options string, like 2.6's
    ``options_string_extract_option()`` (used to read a peer's ``cipher``)."""
    for item in options.split(","):
        if item.startswith(name + " ") and len(item) > len(name) + 1:
            return item[len(name) + 1:]
    return None
