"""``--auth`` digest names (tls-auth HMAC and the CBC data-channel HMAC).

OpenVPN passes the name to OpenSSL, which matches it case-insensitively; ``SHA-256`` style
spellings are accepted too.
"""

from __future__ import annotations

from trivpn.protocol.errors import DecodeError

# canonical OpenVPN name -> (hashlib name, digest size)
DIGESTS: dict[str, tuple[str, int]] = {
    "MD5": ("md5", 16),
    "SHA1": ("sha1", 20),
    "SHA224": ("sha224", 28),
    "SHA256": ("sha256", 32),
    "SHA384": ("sha384", 48),
    "SHA512": ("sha512", 64),
}
_ALIASES = {"SHA-1": "SHA1", "SHA-224": "SHA224", "SHA-256": "SHA256", "SHA-384": "SHA384",
            "SHA-512": "SHA512", "SHA2-224": "SHA224", "SHA2-256": "SHA256",
            "SHA2-384": "SHA384", "SHA2-512": "SHA512"}


def normalize_digest(name: str) -> str:
    """Canonical upper-case name (``SHA1``, ``SHA256`` ...); DecodeError if unsupported."""
    upper = name.strip().upper()
    upper = _ALIASES.get(upper, upper)
    if upper not in DIGESTS:
        raise DecodeError(f"unsupported digest {name!r}", "auth", reason="unsupported_digest")
    return upper


def digest_info(name: str) -> tuple[str, int]:
    """(hashlib name, digest size in bytes) for an ``--auth`` digest name."""
    return DIGESTS[normalize_digest(name)]
