"""Build the ``ssl.SSLContext`` the control channel uses, the way OpenVPN 2.6 sets up OpenSSL.

Lives outside ``trivpn.protocol`` because loading a certificate chain into the standard ``ssl``
module needs a path: inline (``<cert>``/``<key>``) material is handed over through an anonymous
``memfd`` so that private keys never touch the disk.

Decisions (docs/protocol.md §4.2, §6.3):
- TLS ≥ 1.2 by default, no SNI, no hostname check; peer certificates required both ways.
- tls-ciphersuites and tls-groups lists, which the ``ssl`` module cannot set, are applied on
  the wrapped ``SSL_CTX`` by :mod:`trivpn.tlsnative` (refused where it cannot be validated).
- No session tickets, no TLS compression or renegotiation.
- Data keys use TLS-EKM (RFC 5705) when both ends can, through :mod:`trivpn.tlsnative`'s
  exporter (the standard ``ssl`` module has none), else OpenVPN's TLS-1.0 PRF.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trivpn.protocol.tls import RevocationLists, parse_crls
from trivpn.tlsnative import IANA_TLS_CIPHERS, NativeContext, NativeTlsError, native_context

# OpenVPN's default TLS ≤ 1.2 list (options.c / ssl_openssl.c tls_ctx_restrict_ciphers).
OPENVPN_TLS12_CIPHERS = "DEFAULT:!EXP:!LOW:!MEDIUM:!kDH:!kECDH:!DSS:!PSK:!SRP:!kRSA"

_VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}


# tls-cert-profile → OpenSSL security level (ssl_openssl.c tls_ctx_set_cert_profile); OpenVPN
# 2.6's default is "legacy".
CERT_PROFILE_LEVELS = {"insecure": 0, "legacy": 1, "preferred": 2, "suiteb": 3}
# OpenSSL's short names for the NIST curve names tls-groups also accepts.
_GROUP_ALIASES = {"P-256": "prime256v1", "secp256r1": "prime256v1", "P-384": "secp384r1",
                  "P-521": "secp521r1"}


class TlsContextError(Exception):
    """The certificate, key or CA material cannot be loaded, or a TLS setting not applied.

    ``directive`` names the config directive at fault when it is not the certificate/CA.
    """

    def __init__(self, message: str, directive: str | None = None) -> None:
        super().__init__(message)
        self.directive = directive


@contextmanager
def _memfd_path(name: str, data: str) -> Iterator[str]:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    try:
        os.write(fd, data.encode())
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


def is_encrypted_key(key_pem: str) -> bool:
    """A PEM private key that needs a password (PKCS#8 ``ENCRYPTED PRIVATE KEY`` or a
    traditional key with ``Proc-Type: 4,ENCRYPTED``)."""
    return "ENCRYPTED" in key_pem


def build_context(
    *,
    server_side: bool,
    ca_pem: str | None,
    cert_pem: str | None,
    key_pem: str | None,
    tls_version_min: str = "1.2",
    tls_version_max: str | None = None,
    require_peer_cert: bool = True,
    dh_pem: str | None = None,
    tls_cipher: str | None = None,
    tls_ciphersuites: str | None = None,
    tls_groups: str | None = None,
    cert_profile: str = "legacy",
    extra_certs_pem: str | None = None,
    capath: str | None = None,
    key_password: str | None = None,
) -> ssl.SSLContext:
    """An SSLContext for one side of the control channel, set up in OpenVPN's order
    (ssl.c init_ssl): cert profile, cipher lists, groups, then CA, certificate and key."""
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
    _apply_cipher_settings(ctx, tls_cipher, tls_ciphersuites, tls_groups, cert_profile)
    if capath is not None:
        # capath: an OpenSSL hashed directory of CAs and CRLs; OpenVPN then checks CRLs for
        # the whole chain (ssl_openssl.c, tls_ctx_load_ca: X509_V_FLAG_CRL_CHECK_ALL)
        try:
            ctx.load_verify_locations(capath=capath)
        except (ssl.SSLError, OSError) as exc:
            raise TlsContextError(f"cannot use capath directory {capath!r}: {exc}",
                                  "capath") from exc
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
        native = native_context(ctx)
        if native is None:
            raise TlsContextError("capath needs OpenSSL's verify callback (a CA without a CRL "
                                  "in the directory is accepted), which this Python build "
                                  "does not let trivpn set; use 'ca' and 'crl-verify'",
                                  "capath")
        native.ignore_missing_crl(require_peer_cert=require_peer_cert)
    if ca_pem is not None:
        try:
            ctx.load_verify_locations(cadata=ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise TlsContextError(f"cannot load the CA certificate(s): {exc}") from exc
    elif capath is None:  # peer-fingerprint without a CA: the fingerprint judges the peer
        native = native_context(ctx)
        if native is None:
            raise TlsContextError("peer-fingerprint without 'ca' needs OpenSSL's verify "
                                  "callback, which this Python build does not let trivpn "
                                  "set; add 'ca'", "peer-fingerprint")
        native.skip_chain_verification(require_peer_cert=require_peer_cert)
    if cert_pem is not None and key_pem is not None:
        try:
            # extra-certs: intermediates sent after our certificate, as OpenVPN does.
            chain = cert_pem if extra_certs_pem is None else \
                cert_pem.rstrip("\n") + "\n" + extra_certs_pem
            with _memfd_path("trivpn-cert", chain) as cert_path, \
                    _memfd_path("trivpn-key", key_pem) as key_path:
                # never OpenSSL's own terminal prompt: an encrypted key without a password
                # fails here, the runtime asks first (trivpn/runtime/credentials.py)
                ctx.load_cert_chain(cert_path, key_path, password=key_password or "")
        except ssl.SSLError as exc:
            if is_encrypted_key(key_pem):
                raise TlsContextError(
                    "cannot decrypt the private key: " + (
                        "wrong password" if key_password else
                        "it is encrypted and no password was given (askpass FILE)"),
                    "key") from exc
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


def _apply_cipher_settings(ctx: ssl.SSLContext, tls_cipher: str | None,
                           tls_ciphersuites: str | None, tls_groups: str | None,
                           cert_profile: str) -> None:
    """tls-cert-profile, tls-cipher, tls-ciphersuites and tls-groups, in OpenVPN's order
    (ssl.c init_ssl). tls-ciphersuites and a tls-groups list go through
    :mod:`trivpn.tlsnative` (the ``ssl`` module has no API for them).

    The security level travels in the cipher string (``@SECLEVEL=n``): the ``ssl`` module has
    no setter for it. The default profile "legacy" is level 1, which is what lets seed configs
    with 1024-bit DH parameters (dh1024.pem) load. "suiteb" installs OpenSSL's SUITEB128 list,
    whose Suite B restrictions stay on when tls-cipher or the default list is set after it, as
    in OpenVPN.
    """
    try:
        level = CERT_PROFILE_LEVELS[cert_profile]
    except KeyError:
        raise TlsContextError(f"unknown tls-cert-profile {cert_profile!r}; use "
                              f"{', '.join(CERT_PROFILE_LEVELS)}", "tls-cert-profile") from None
    seclevel = f":@SECLEVEL={level}"
    if cert_profile == "suiteb":
        # Once SUITEB128 is set OpenSSL replaces every later cipher string (and any @SECLEVEL
        # in it) by the Suite B suites, so the level goes in first.
        ctx.set_ciphers("DEFAULT" + seclevel)
        ctx.set_ciphers("SUITEB128")
    ciphers = OPENVPN_TLS12_CIPHERS if tls_cipher is None else openssl_cipher_list(tls_cipher)
    try:
        # An @SECLEVEL inside tls-cipher wins, as in OpenVPN (which sets the profile's level
        # before the cipher list).
        ctx.set_ciphers(ciphers if "@SECLEVEL=" in ciphers.upper() else ciphers + seclevel)
    except ssl.SSLError as exc:
        # OpenVPN's words; the list shown is the one handed to OpenSSL (translated).
        raise TlsContextError(f"tls-cipher: Failed to set restricted TLS cipher list: {ciphers} "
                              f"(OpenSSL: {exc})", "tls-cipher" if tls_cipher else None) from exc
    if tls_ciphersuites is not None:
        _apply_ciphersuites(ctx, tls_ciphersuites)
    if tls_groups is not None:
        _apply_groups(ctx, tls_groups)


def openssl_cipher_list(tls_cipher: str) -> str:
    """tls-cipher with IANA names (TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384) translated to
    OpenSSL's, element by element, as OpenVPN does; other names pass unchanged to OpenSSL."""
    return ":".join(IANA_TLS_CIPHERS.get(name, name) for name in tls_cipher.split(":"))


def _native(ctx: ssl.SSLContext, directive: str) -> NativeContext:
    native = native_context(ctx)
    if native is None:
        raise TlsContextError(
            f"{directive} cannot be applied: this Python's ssl module has no API for it and "
            "trivpn could not reach (and validate) the OpenSSL context it wraps on this "
            "interpreter; remove the directive", directive)
    return native


def _apply_ciphersuites(ctx: ssl.SSLContext, suites: str) -> None:
    """tls-ciphersuites: OpenSSL's TLS 1.3 names; OpenVPN turns '-' into '_' first
    (ssl_openssl.c convert_tls13_list_to_openssl). Unknown names are skipped by OpenSSL; a
    list with no known suite is an error, as in OpenVPN."""
    names = suites.replace("-", "_")
    try:
        _native(ctx, "tls-ciphersuites").set_ciphersuites(names)
    except NativeTlsError as exc:
        raise TlsContextError(f"tls-ciphersuites: Failed to set restricted TLS 1.3 cipher list: "
                              f"{names} (OpenSSL: {exc})", "tls-ciphersuites") from exc


def _apply_groups(ctx: ssl.SSLContext, groups: str) -> None:
    """tls-groups: the list goes to SSL_CTX_set1_groups_list unchanged, as OpenVPN 2.6 does
    with OpenSSL 3 (ssl_openssl.c tls_ctx_set_tls_groups); an unknown group is an error."""
    native = native_context(ctx)
    if native is None and ":" not in groups:
        # Without the native path a single group still works through the ssl module.
        try:
            ctx.set_ecdh_curve(_GROUP_ALIASES.get(groups, groups))
        except (ValueError, ssl.SSLError) as exc:
            raise TlsContextError(f"tls-groups {groups}: unknown group ({exc})",
                                  "tls-groups") from exc
        return
    try:
        _native(ctx, "tls-groups").set_groups_list(groups)
    except NativeTlsError as exc:
        raise TlsContextError(f"tls-groups: Failed to set allowed TLS group list: {groups} "
                              f"(OpenSSL: {exc})", "tls-groups") from exc


class CrlFile:
    """``crl-verify FILE``: the file's CRLs, re-read when its size or mtime changed since the
    last call (OpenVPN's tls_ctx_reload_crl). A file that vanished keeps the previous CRLs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._lists = RevocationLists((), str(path))
        self()  # the first read must work: OSError propagates

    def __call__(self) -> RevocationLists:
        try:
            st = os.stat(self.path)
        except OSError:
            if self._stamp is None:
                raise
            return self._lists
        stamp = (st.st_size, st.st_mtime_ns)
        if stamp != self._stamp:
            try:
                data = self.path.read_bytes()
            except OSError:
                if self._stamp is None:
                    raise
                return self._lists
            self._stamp = stamp
            self._lists = parse_crls(data, str(self.path))
        return self._lists


class CrlDirectory:
    """``crl-verify DIR dir``: a certificate is revoked when DIR holds a file named after its
    decimal serial number that can be opened (ssl_verify.c verify_check_crl_dir)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, serial: int) -> bool:
        try:
            fd = os.open(self.path / str(serial), os.O_RDONLY)
        except OSError:
            return False
        os.close(fd)
        return True
