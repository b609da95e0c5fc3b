"""Data-channel cipher negotiation (NCP), server side and client check (docs/protocol.md §10.4).

Mirrors 2.6 ``ssl_ncp.c`` ``ncp_get_best_cipher()`` and the fallback rules of ``multi.c``
``multi_client_set_protocol_options()``.
"""

from __future__ import annotations

from collections.abc import Sequence

from trivpn.protocol.keymethod import options_string_value
from trivpn.protocol.peerinfo import PeerInfo

#: What a client announcing only ``IV_NCP=2`` (no ``IV_CIPHERS``) is assumed to support.
LEGACY_NCP_CIPHERS = ("AES-256-GCM", "AES-128-GCM")
NO_SHARED_CIPHER_REASON = "Data channel cipher negotiation failed (no shared cipher)"


def peer_cipher_list(peer: PeerInfo) -> tuple[str, ...]:
    """The ciphers the peer supports as a 2.6 server sees them (``tls_peer_ncp_list()``)."""
    if peer.announces_ciphers:
        return peer.ciphers
    if peer.ncp >= 2:
        return LEGACY_NCP_CIPHERS
    return ()


def options_string_cipher(options_string: str) -> str | None:
    """The ``cipher`` named in a peer's options string (``[null-cipher]`` reads as ``none``)."""
    name = options_string_value(options_string, "cipher")
    if name == "[null-cipher]":
        return "none"
    return name


def choose_cipher(server_ciphers: Sequence[str], peer: PeerInfo, options_string: str,
                  fallback: str | None) -> str | None:
    """The cipher a 2.6 server would push, or ``None`` (→ AUTH_FAILED with
    :data:`NO_SHARED_CIPHER_REASON`).

    1. The first of *server_ciphers* that is in the peer's ``IV_CIPHERS`` (or, without
       ``IV_CIPHERS``, in AES-256-GCM:AES-128-GCM if ``IV_NCP>=2``), or — only for a peer that
       sent no ``IV_CIPHERS`` — equal to the ``cipher`` of its options string.
    2. Otherwise *fallback* (``data-ciphers-fallback``), but only if the peer told us nothing:
       no cipher list and no options-string cipher.
    """
    peer_list = peer_cipher_list(peer)
    remote_cipher = options_string_cipher(options_string)
    usable_remote = None if peer.announces_ciphers else remote_cipher
    for cipher in server_ciphers:
        if cipher in peer_list or cipher == usable_remote:
            return cipher
    if peer_list or remote_cipher is not None:
        return None
    return fallback


def pushed_cipher_allowed(cipher: str, data_ciphers: Sequence[str]) -> bool:
    """Client check of a pushed ``cipher``: it must be in the client's own data-ciphers
    (2.6: ``Error: negotiated cipher not allowed - X not in Y``). Names compare
    case-insensitively, as 2.6 normalises them."""
    wanted = cipher.upper()
    return any(c.upper() == wanted for c in data_ciphers)
