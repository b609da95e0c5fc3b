"""``link-mtu N`` (and its alias ``udp-mtu N``): the tun MTU derived from the link MTU as
OpenVPN 2.6 derives it (src/openvpn/init.c, get_frame_mtu(): ``link_mtu -
frame_calculate_protocol_header_size(key_type, options, occ=true)``; mtu.c and crypto.c,
calculate_crypto_overhead()). The overhead counts, for the cipher and ``auth`` of the config
(the negotiated cipher is not known yet when OpenVPN computes it):

* 10 for a SOCKS proxy over UDP, 2 for TCP's length field;
* TLS mode: 1 for the opcode (a peer-id is never known then);
* CBC: block size + IV (16 + 16 for AES) + the HMAC; the packet id counts as payload;
* AEAD: packet id 4 + tag 16 + the IV (12) and block size that old clients counted
  (OpenSSL's: 16 for AES-GCM, 1 for ChaCha20-Poly1305);
* no cipher (TLS without 'cipher': OpenVPN's BF-CBC placeholder counts as none): the
  packet id (4, or 8 in static-key mode; 0 with no-replay) + the HMAC.

Without an explicit ``mssfix N``, OpenVPN then clamps nothing (its mssfix default applies
only with a tun-mtu), nor does trivpn.
"""

from __future__ import annotations

from dataclasses import replace

from trivpn.config.options import Mssfix, Options
from trivpn.protocol.digests import digest_info
from trivpn.protocol.errors import ProtocolError

TUN_MTU_MIN = 100  # OpenVPN mtu.h
_AEAD = ("-GCM", "-POLY1305")


def _digest_size(auth: str) -> int:
    if auth.upper() == "NONE":
        return 0
    try:
        return digest_info(auth)[1]
    except (ProtocolError, KeyError, ValueError):
        return 0


def link_mtu_overhead(o: Options) -> int:
    """What OpenVPN 2.6 subtracts from ``link-mtu`` to get the tun MTU for these options."""
    tls = o.secret is None
    size = 0
    if o.socks_proxy is not None and o.proto == "udp":
        size += 10
    if o.proto != "udp":
        size += 2
    if tls:
        size += 1
    cipher = (o.cipher or "").upper()
    if cipher in ("", "BF-CBC", "NONE"):
        pid = 0 if not o.replay else (4 if tls else 8)
        return size + pid + _digest_size(o.auth)
    if cipher.endswith(_AEAD):
        return size + 4 + 16 + 12 + (1 if cipher == "CHACHA20-POLY1305" else 16)
    return size + 16 + 16 + _digest_size(o.auth)  # AES-*-CBC: block, IV, HMAC


def apply_link_mtu(o: Options, *, mssfix_given: bool) -> Options:
    """The tun MTU from ``o.link_mtu`` (ValueError with OpenVPN's words if too small)."""
    assert o.link_mtu is not None
    mtu = o.link_mtu - link_mtu_overhead(o)
    if mtu < TUN_MTU_MIN:
        raise ValueError(f"TUN MTU value ({mtu}) must be at least {TUN_MTU_MIN}")
    o = replace(o, tun_mtu=mtu)
    if not mssfix_given and not o.fragment:
        o = replace(o, mssfix=Mssfix(0, mtu=False))
    return o
