"""Argument parsers shared by the directive handlers; each raises ConfigError at the directive."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import TypeVar

from trivpn.config.errors import ConfigError
from trivpn.config.reader import Directive

T = TypeVar("T")

# Data-channel ciphers trivpn can negotiate, and legacy 64-bit block ciphers that OpenVPN still
# accepts (SWEET32-weak; accepted with a warning).
SUPPORTED_CIPHERS = frozenset({
    "AES-128-GCM", "AES-192-GCM", "AES-256-GCM", "CHACHA20-POLY1305",
    "AES-128-CBC", "AES-192-CBC", "AES-256-CBC",
})
WEAK_64BIT_CIPHERS = frozenset({
    "BF-CBC", "DES-CBC", "DES-EDE-CBC", "DES-EDE3-CBC", "DESX-CBC", "CAST5-CBC", "IDEA-CBC",
    "RC2-CBC", "RC2-64-CBC",
})
DIGESTS = frozenset({"MD5", "SHA1", "SHA224", "SHA256", "SHA384", "SHA512"})
WEAK_DIGESTS = frozenset({"MD5"})


def fail(d: Directive, reason: str) -> ConfigError:
    return ConfigError(reason, d.path, d.line)


def integer(d: Directive, idx: int, lo: int, hi: int | None = None) -> int:
    """``d.args[idx]`` as a decimal number in ``lo..hi`` (``hi`` None: no upper bound)."""
    text = d.args[idx]
    value = int(text) if text.isascii() and text.isdigit() else None
    if value is None or value < lo or (hi is not None and value > hi):
        expected = f"a number from {lo} to {hi}" if hi is not None else f"a number of at least {lo}"
        raise fail(d, f"'{d.name}' expects {expected}, got '{text}'")
    return value


def port(d: Directive, idx: int) -> int:
    return integer(d, idx, 1, 65535)


def choice(d: Directive, idx: int, choices: Mapping[str, T]) -> T:
    text = d.args[idx]
    if text not in choices:
        raise fail(d, f"'{d.name}' expects one of {', '.join(choices)}, got '{text}'")
    return choices[text]


def ipv4(d: Directive, idx: int) -> ipaddress.IPv4Address:
    text = d.args[idx]
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise fail(d, f"'{d.name}' expects an IPv4 address, got '{text}'") from None


def netmask(d: Directive, idx: int) -> ipaddress.IPv4Address:
    mask = ipv4(d, idx)
    bits = int(mask)
    inverted = ~bits & 0xFFFFFFFF
    if inverted & (inverted + 1):
        raise fail(d, f"'{d.name}' expects a netmask such as 255.255.255.0, got '{d.args[idx]}'")
    return mask


def cipher_name(d: Directive, text: str) -> str:
    """Normalize an OpenSSL/OpenVPN cipher name (case-insensitive) to upper case."""
    name = text.upper()
    if not name or any(not (c.isalnum() or c in "-_") for c in name):
        raise fail(d, f"'{d.name}' expects a cipher name such as AES-256-GCM, got '{text}'")
    return name


def cipher_list(d: Directive, text: str) -> tuple[str, ...]:
    """A ``data-ciphers`` list: colon-separated names; a ``?`` prefix marks an optional cipher,
    dropped if unknown (as OpenVPN drops ciphers its crypto library lacks)."""
    result: list[str] = []
    for item in text.split(":"):
        optional = item.startswith("?")
        name = cipher_name(d, item[1:] if optional else item)
        if name in SUPPORTED_CIPHERS or name in WEAK_64BIT_CIPHERS:
            if name not in result:
                result.append(name)
        elif not optional:
            raise fail(d, f"'{d.name}': cipher '{name}' is not supported by trivpn "
                          f"(supported: {', '.join(sorted(SUPPORTED_CIPHERS))})")
    if not result:
        raise fail(d, f"'{d.name}' lists no usable cipher")
    return tuple(result)
