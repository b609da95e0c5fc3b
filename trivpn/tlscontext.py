"""Build the ``ssl.SSLContext`` the control channel uses, the way OpenVPN 2.6 sets up OpenSSL.

Lives outside ``trivpn.protocol`` because loading a certificate chain into the standard ``ssl``
module needs a path: inline (``<cert>``/``<key>``) material is handed over through an anonymous
``memfd`` so that private keys never touch the disk.

Decisions (digest §4.2, §6.3):
- TLS ≥ 1.2 by default, no SNI, no hostname check; peer certificates required both ways.
- No session tickets, no TLS compression or renegotiation.
- Data keys use OpenVPN's TLS-1.0 PRF, never TLS-EKM: the standard ``ssl`` module has no RFC 5705
  exporter. A trivpn client therefore never sets IV_PROTO bit 3 and a trivpn server never pushes
  ``tls-ekm``; 2.6 peers then fall back to the PRF by design. The cost: servers configured with
  ``force-tls-key-material-export`` and FIPS-mode peers refuse trivpn.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

# OpenVPN's default TLS ≤ 1.2 list (options.c / ssl_openssl.c tls_ctx_restrict_ciphers).
OPENVPN_TLS12_CIPHERS = "DEFAULT:!EXP:!LOW:!MEDIUM:!kDH:!kECDH:!DSS:!PSK:!SRP:!kRSA"

_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


class TlsContextError(Exception):
    """The certificate, key or CA material cannot be loaded."""


@contextmanager
def _memfd_path(name: str, data: str) -> Iterator[str]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, data.encode())
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def build_context(
    *,
    server_side: bool,
    ca_pem: str,
    cert_pem: str | None,
    key_pem: str | None,
    tls_version_min: str = "1.2",
    tls_version_max: str | None = None,
    require_peer_cert: bool = True,
    dh_pem: str | None = None,
) -> ssl.SSLContext:
    """An SSLContext for one side of the control channel."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server_side else ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED if require_peer_cert else ssl.CERT_OPTIONAL
    try:
        ctx.minimum_version = _VERSIONS[tls_version_min]
        if tls_version_max is not None:
            ctx.maximum_version = _VERSIONS[tls_version_max]
    except KeyError as exc:
        raise TlsContextError(f"unknown TLS version {exc.args[0]!r}; use 1.0, 1.1, 1.2 or 1.3")\
            from None
    ctx.options |= ssl.OP_NO_TICKET | ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if server_side:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
        ctx.num_tickets = 0
    try:
        # OpenVPN 2.6's default tls-cert-profile "legacy" is OpenSSL security level 1, which
        # is what lets seed configs with 1024-bit DH parameters (dh1024.pem) load.
        ctx.set_ciphers(OPENVPN_TLS12_CIPHERS + ":@SECLEVEL=1")
    except ssl.SSLError as exc:  # pragma: no cover - depends on the OpenSSL build
        raise TlsContextError(f"OpenSSL rejects the cipher list: {exc}") from exc
    try:
        ctx.load_verify_locations(cadata=ca_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsContextError(f"cannot load the CA certificate(s): {exc}") from exc
    if cert_pem is not None and key_pem is not None:
        try:
            with _memfd_path("trivpn-cert", cert_pem) as cert_path, \
                    _memfd_path("trivpn-key", key_pem) as key_path:
                ctx.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise TlsContextError(
                f"cannot load certificate and key (does the key match the certificate?): {exc}"
            ) from exc
    if dh_pem is not None and server_side:
        try:
            with _memfd_path("trivpn-dh", dh_pem) as dh_path:
                ctx.load_dh_params(dh_path)
        except (ssl.SSLError, ValueError) as exc:
            raise TlsContextError(f"cannot load DH parameters: {exc}") from exc
    return ctx
