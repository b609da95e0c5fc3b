"""Data-path settings derived once per connection (never per packet)."""

from __future__ import annotations

from trivpn.config import Options
from trivpn.protocol.datachannel import CIPHERS, normalize_cipher
from trivpn.protocol.digests import digest_info
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.mss import data_overhead, mss_limit


def mss_limit_for(options: Options, ciphers: tuple[str, ...], transport: str) -> int | None:
    """The TCP MSS to clamp SYNs to for ``options.mssfix`` (None: off), with the largest data
    overhead among ``ciphers`` (a server may serve peers with different ciphers)."""
    try:
        hmac_len = digest_info(options.auth)[1]
    except (ProtocolError, ValueError, KeyError):
        hmac_len = 20
    overhead = 0
    for name in ciphers or ("AES-256-GCM",):
        try:
            aead = CIPHERS[normalize_cipher(name)][1]
        except ProtocolError:
            continue
        overhead = max(overhead, data_overhead(aead, hmac_len=hmac_len))
    m = options.mssfix
    return mss_limit(m.max, mtu_mode=m.mtu, fixed=m.fixed, overhead=overhead or 24,
                     transport="udp" if transport == "udp" else "tcp")
