"""Peer-info text (``IV_*`` variables) in the client's key-method-2 block (docs/protocol.md §5.4).

Built in the order of 2.6's ``ssl.c`` ``push_peer_info()`` for a pull client; parsed the way a
2.6 server reads it (first occurrence of a key wins, integers read like ``sscanf("%d")``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

IV_PROTO_DATA_V2 = 2
IV_PROTO_REQUEST_PUSH = 4
IV_PROTO_TLS_KEY_EXPORT = 8
IV_PROTO_AUTH_PENDING_KW = 16
IV_PROTO_NCP_P2P = 32
IV_PROTO_DNS_OPTION = 64
IV_PROTO_CC_EXIT_NOTIFY = 128
IV_PROTO_AUTH_FAIL_TEMP = 256
IV_PROTO_DYN_TLS_CRYPT = 512

#: What a 2.6.1+ pull client announces (990).
IV_PROTO_OPENVPN_26_CLIENT = (IV_PROTO_DATA_V2 | IV_PROTO_REQUEST_PUSH | IV_PROTO_TLS_KEY_EXPORT
                              | IV_PROTO_AUTH_PENDING_KW | IV_PROTO_DNS_OPTION
                              | IV_PROTO_CC_EXIT_NOTIFY | IV_PROTO_AUTH_FAIL_TEMP
                              | IV_PROTO_DYN_TLS_CRYPT)

_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LEADING_INT_RE = re.compile(r"\s*([+-]?)([0-9]+)", re.ASCII)
_INT_MAX = 2**31 - 1
_EMPTY: Mapping[str, str] = MappingProxyType({})


def build_peer_info(*, version: str = "2.6.14", platform: str = "linux",
                    ciphers: Sequence[str], iv_proto: int, mtu: int | None = 1600,
                    comp_stubs: bool = True, comp_algorithms: bool = False,
                    extra: Mapping[str, str] = _EMPTY) -> str:
    """Peer-info text, newline-terminated lines, in 2.6's order.

    ``IV_NCP=2`` appears only when *ciphers* contains both AES-128-GCM and AES-256-GCM.
    ``mtu=None`` omits ``IV_MTU``. ``comp_stubs`` adds ``IV_LZO_STUB``/``IV_COMP_STUB``/
    ``IV_COMP_STUBv2`` (only announce them if the stub framings are implemented). *extra* lines
    (``IV_GUI_VER``, ``UV_*``...) come last. ``comp_algorithms`` announces LZ4, LZ4v2 and LZO
    first (OpenVPN comp.c comp_generate_peer_info_string; then no ``IV_LZO_STUB``). Raises
    ValueError for text that would break the line format or repeat a key.
    """
    lines: list[tuple[str, str]] = [("IV_VER", version), ("IV_PLAT", platform),
                                    ("IV_TCPNL", "1")]
    if mtu is not None:
        lines.append(("IV_MTU", str(mtu)))
    if "AES-128-GCM" in ciphers and "AES-256-GCM" in ciphers:
        lines.append(("IV_NCP", "2"))
    lines.append(("IV_CIPHERS", ":".join(ciphers)))
    lines.append(("IV_PROTO", str(iv_proto)))
    if comp_algorithms:
        lines += [("IV_LZ4", "1"), ("IV_LZ4v2", "1"), ("IV_LZO", "1"),
                  ("IV_COMP_STUB", "1"), ("IV_COMP_STUBv2", "1")]
    elif comp_stubs:
        lines += [("IV_LZO_STUB", "1"), ("IV_COMP_STUB", "1"), ("IV_COMP_STUBv2", "1")]
    lines += list(extra.items())
    seen: set[str] = set()
    for key, value in lines:
        if not _KEY_RE.match(key) or key in seen:
            raise ValueError(f"bad or repeated peer-info key {key!r}")
        if "\n" in value or "\x00" in value or "\r" in value:
            raise ValueError(f"peer-info value for {key} contains a line break or NUL")
        seen.add(key)
    for cipher in ciphers:
        if not cipher or ":" in cipher:
            raise ValueError(f"bad cipher name {cipher!r}")
    return "".join(f"{key}={value}\n" for key, value in lines)


def build_p2p_peer_info(*, ciphers: Sequence[str], iv_proto: int) -> str:
    """The peer-info of a TLS peer-to-peer server, as OpenVPN 2.6 sends it (ssl.c,
    push_peer_info() with push_peer_info_detail 1: no version or platform lines, no
    ``IV_NCP``): ``IV_CIPHERS`` (its data-ciphers, in its order of preference) and
    ``IV_PROTO``."""
    for cipher in ciphers:
        if not cipher or ":" in cipher or "\n" in cipher:
            raise ValueError(f"bad cipher name {cipher!r}")
    return f"IV_CIPHERS={':'.join(ciphers)}\nIV_PROTO={iv_proto}\n"


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """Parsed peer-info. ``raw`` holds every ``KEY=VALUE`` line (first occurrence wins)."""

    version: str | None = None
    platform: str | None = None
    iv_proto: int = 0
    ciphers: tuple[str, ...] = ()
    ncp: int = 0
    mtu: int | None = None
    raw: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)

    @property
    def announces_ciphers(self) -> bool:
        """True if ``IV_CIPHERS`` was sent at all (even empty): the server then ignores the
        options-string cipher."""
        return "IV_CIPHERS" in self.raw

    def has_proto(self, bit: int) -> bool:
        return bool(self.iv_proto & bit)


def _leading_int(value: str | None) -> int | None:
    """The leading decimal number, ASCII digits only, within a C ``int`` (None otherwise: a
    10,000-digit or non-ASCII "number" from a peer is no number, and costs nothing)."""
    if value is None:
        return None
    m = _LEADING_INT_RE.match(value)
    if m is None:
        return None
    digits = m.group(2).lstrip("0") or "0"
    if len(digits) > 10:
        return None
    number = int(digits)
    if number > _INT_MAX:
        return None
    return -number if m.group(1) == "-" else number


def parse_peer_info(text: str | None) -> PeerInfo:
    """Parse peer-info text; ``None`` or garbage gives an empty :class:`PeerInfo` (never raises)."""
    if not text:
        return PeerInfo()
    raw: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, value = line.rstrip("\r").partition("=")
        if sep and key and key not in raw:
            raw[key] = value
    iv_proto = _leading_int(raw.get("IV_PROTO"))
    ncp = _leading_int(raw.get("IV_NCP"))
    return PeerInfo(
        version=raw.get("IV_VER"),
        platform=raw.get("IV_PLAT"),
        iv_proto=iv_proto if iv_proto is not None and iv_proto > 0 else 0,
        ciphers=tuple(c for c in raw.get("IV_CIPHERS", "").split(":") if c),
        ncp=ncp or 0,
        mtu=_leading_int(raw.get("IV_MTU")),
        raw=MappingProxyType(raw),
    )
