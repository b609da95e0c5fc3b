"""OpenVPN static key files (``-----BEGIN OpenVPN Static key V1-----``).

Used by tls-auth and tls-crypt. The file holds 256 bytes: two keys, each ``cipher[64] ||
hmac[64]`` (docs/protocol.md §3.1). Pure text functions: reading the file is the caller's business.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from trivpn.protocol.errors import DecodeError

HEADER = "-----BEGIN OpenVPN Static key V1-----"
FOOTER = "-----END OpenVPN Static key V1-----"
KEY_BYTES = 256
_HEX = frozenset(string.hexdigits)


@dataclass(frozen=True, slots=True)
class StaticKey:
    """256 bytes of static key material, with the slices OpenVPN uses."""

    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) != KEY_BYTES:
            raise DecodeError(f"static key must be {KEY_BYTES} bytes, got {len(self.data)}",
                              "static key")

    def cipher(self, index: int) -> bytes:
        """key[index].cipher: 64 bytes."""
        start = 128 * index
        return self.data[start:start + 64]

    def hmac(self, index: int) -> bytes:
        """key[index].hmac: 64 bytes."""
        start = 128 * index + 64
        return self.data[start:start + 64]

    def __repr__(self) -> str:  # never show key material
        return "StaticKey(<256 bytes>)"


def parse_static_key(text: str, where: str = "static key") -> StaticKey:
    """Parse the PEM-like text form; ``where`` names the file for error messages."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(HEADER)), None)
    if start is None:
        raise DecodeError(f"missing '{HEADER}' line", where)
    digits: list[str] = []
    for offset, line in enumerate(lines[start + 1:], start=start + 2):
        if line.startswith(FOOTER):
            break
        for ch in line:
            if ch.isspace():
                continue
            if ch not in _HEX:
                raise DecodeError(f"non-hex character {ch!r} in key body", f"{where}:{offset}")
            digits.append(ch)
    else:
        raise DecodeError(f"missing '{FOOTER}' line", where)
    if len(digits) != 2 * KEY_BYTES:
        raise DecodeError(
            f"key body must hold {KEY_BYTES} bytes (512 hex digits), got {len(digits)} digits",
            where,
        )
    return StaticKey(bytes.fromhex("".join(digits)))


def format_static_key(key: StaticKey, comment: str = "2048 bit OpenVPN static key") -> str:
    """Render in the exact layout ``openvpn --genkey secret`` writes (16 lines of 32 hex)."""
    hexed = key.data.hex()
    body = "\n".join(hexed[i:i + 32] for i in range(0, len(hexed), 32))
    return f"#\n# {comment}\n#\n{HEADER}\n{body}\n{FOOTER}\n"
