"""Turn parsed :class:`~trivpn.config.Options` into what the protocol core needs (neutral:
used by the runtime and by the diagnostics, which must not reach into each other).

Everything that reads key material, builds the TLS context or decides what trivpn announces to
its peer happens here, once, before any task starts. Errors name the config file and line.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from trivpn.config import ConfigError, Options
from trivpn.config.derive import ping_settings
from trivpn.config.directives import COMP_F_ADAPTIVE, COMP_F_ADVERTISE_STUBS_ONLY
from trivpn.config.options import FileSource
from trivpn.logging import DropAggregator
from trivpn.lzo2 import LzoUnavailable, lzo1x_compressor, lzo1x_decompressor
from trivpn.pki.errors import PkiError
from trivpn.pki.pkcs12 import decode_inline, load_pkcs12
from trivpn.pki.statickeys import (
    KeyFileError,
    parse_tls_crypt_v2_client_key,
    parse_tls_crypt_v2_server_key,
)
from trivpn.protocol.compression import Compression
from trivpn.protocol.datachannel import SUPPORTED_CIPHERS
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.keymethod import options_string
from trivpn.protocol.peerinfo import (
    IV_PROTO_AUTH_FAIL_TEMP,
    IV_PROTO_AUTH_PENDING_KW,
    IV_PROTO_CC_EXIT_NOTIFY,
    IV_PROTO_DATA_V2,
    IV_PROTO_DNS_OPTION,
    IV_PROTO_NCP_P2P,
    IV_PROTO_REQUEST_PUSH,
    IV_PROTO_TLS_KEY_EXPORT,
    build_p2p_peer_info,
    build_peer_info,
)
from trivpn.protocol.push import PullPolicy
from trivpn.protocol.session import SessionConfig
from trivpn.protocol.statickey import parse_static_key
from trivpn.protocol.staticmode import static_directional_keys
from trivpn.protocol.tls import CrlCheck, KeyExporter, PeerVerification, parse_crls
from trivpn.protocol.tlscryptv2 import client_wrap
from trivpn.protocol.wrap import ControlWrap, NoWrap, TlsAuth, TlsCrypt
from trivpn.tlscontext import CrlDirectory, CrlFile, TlsContextError, build_context
from trivpn.tlsnative import keying_material_exporter

# What a trivpn client announces: P_DATA_V2, push without request, AUTH_PENDING keyword, EXIT,
# AUTH_FAILED,TEMP, and TLS-EKM (bit 3) when the keying-material exporter works here
# (trivpn/tlsnative.py); never dynamic tls-crypt (bit 9), so 2.6 servers keep the configured
# control wrapping.
CLIENT_IV_PROTO = (IV_PROTO_DATA_V2 | IV_PROTO_REQUEST_PUSH | IV_PROTO_AUTH_PENDING_KW
                   | IV_PROTO_CC_EXIT_NOTIFY | IV_PROTO_AUTH_FAIL_TEMP)
# A TLS peer-to-peer client (tls-client without pull) announces what OpenVPN 2.6's does (ssl.c,
# push_peer_info() with push_peer_info_detail 1): P_DATA_V2, the dns option, EXIT, and P2P NCP
# instead of the pull bits; no IV_MTU.
P2P_IV_PROTO = IV_PROTO_DATA_V2 | IV_PROTO_DNS_OPTION | IV_PROTO_CC_EXIT_NOTIFY | IV_PROTO_NCP_P2P

_COMPRESSION = {"lzo-stub": Compression.LZO_STUB, "stub": Compression.STUB,
                "stub-v2": Compression.STUB_V2, "lzo": Compression.LZO, "lz4": Compression.LZ4,
                "lz4-v2": Compression.LZ4_V2}


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=<hidden>)"


def _text(source: FileSource | None, what: str, o: Options) -> str:
    if source is None:
        raise ConfigError(f"'{what}' is required", o.config_path)
    return source.read_text()


def _error_at(o: Options, directive: str, reason: str) -> ConfigError:
    where = o.location(directive)
    if where is None:
        return ConfigError(reason, o.config_path)
    return ConfigError(reason, where[0], where[1])


def control_wrap(o: Options) -> ControlWrap:
    """tls-auth (with key direction and the --auth digest) or tls-crypt, or none."""
    is_server = o.tls_role == "server"
    if o.tls_crypt_v2 is not None:
        return _tls_crypt_v2_wrap(o, is_server)
    try:
        if o.tls_crypt is not None:
            key = parse_static_key(o.tls_crypt.read_text(), o.tls_crypt.describe())
            return TlsCrypt(key, is_server=is_server)
        if o.tls_auth is not None:
            key = parse_static_key(o.tls_auth.read_text(), o.tls_auth.describe())
            return TlsAuth(key, o.key_direction, o.auth)
    except ProtocolError as exc:
        directive = "tls-crypt" if o.tls_crypt is not None else "tls-auth"
        raise _error_at(o, directive, f"bad static key: {exc}") from exc
    return NoWrap()


def _tls_crypt_v2_wrap(o: Options, is_server: bool) -> ControlWrap:
    """tls-crypt-v2: a server's key (each client's wrapper comes from its wrapped key) or a
    client's own key. OpenVPN refuses it beside tls-auth/tls-crypt (options.c)."""
    assert o.tls_crypt_v2 is not None
    if o.tls_crypt is not None or o.tls_auth is not None:
        raise _error_at(o, "tls-crypt-v2",
                        "--tls-crypt-v2, --tls-auth and --tls-crypt are mutually exclusive")
    text = o.tls_crypt_v2.read_text()
    try:
        if is_server:
            return parse_tls_crypt_v2_server_key(text)
        return client_wrap(parse_tls_crypt_v2_client_key(text))
    except KeyFileError as exc:
        kind = "server" if is_server else "client"
        raise _error_at(o, "tls-crypt-v2", f"invalid tls-crypt-v2 {kind} key in "
                        f"{o.tls_crypt_v2.describe()}: {exc.what}") from exc


def _capath(o: Options) -> str | None:
    if o.capath is None:
        return None
    if not o.capath.is_dir():
        raise _error_at(o, "capath", f"capath directory '{o.capath}' does not exist")
    return str(o.capath)


def _pkcs12(o: Options, source: FileSource) -> tuple[str, str, str | None]:
    """(certificate, key, CA certificates or None) from the pkcs12 bundle."""
    try:
        if source.inline is not None:
            data = decode_inline(source.inline, source.describe())
        else:
            data = source.read_text().encode("utf-8", "surrogateescape")
        bundle = load_pkcs12(data, source.describe())
    except PkiError as exc:
        raise _error_at(o, "pkcs12", str(exc)) from exc
    return bundle.cert_pem, bundle.key_pem, bundle.ca_pem


def data_ciphers(o: Options) -> tuple[str, ...]:
    """The configured data-ciphers trivpn implements; an unimplemented one is an error."""
    out = []
    for name in o.data_ciphers:
        upper = name.upper()
        if upper not in SUPPORTED_CIPHERS:
            raise _error_at(o, "data-ciphers",
                            f"data-ciphers lists {name}, which trivpn does not implement "
                            f"(supported: {', '.join(sorted(SUPPORTED_CIPHERS))})")
        out.append(upper)
    return tuple(out)


def peer_info_extra(o: Options) -> dict[str, str]:
    """What a pulling client adds to its peer-info beyond the fixed IV_ lines, as OpenVPN 2.6
    does (ssl.c, push_peer_info): ``setenv IV_GUI_VER``/``IV_SSO`` always; with
    ``push-peer-info`` also ``IV_SSL``, ``IV_PLAT_VER`` (the kernel release) and every
    ``setenv UV_*``, in setenv order. (OpenVPN also sends IV_HWADDR, the MAC address of the
    default gateway's interface; trivpn does not.)"""
    extra: dict[str, str] = {}
    if o.push_peer_info:
        extra["IV_SSL"] = ssl.OPENSSL_VERSION
        extra["IV_PLAT_VER"] = os.uname().release
    for name, value in o.setenv:
        if name in ("IV_GUI_VER", "IV_SSO") or (
                o.push_peer_info and (name.startswith("UV_") or name == "IV_PLAT_VER")):
            extra[name] = value  # a later setenv of the same name wins
    return extra


def drop_aggregator(o: Options, interval: float = 10.0) -> DropAggregator:
    """The dropped-packet log; ``mute-replay-warnings`` silences replayed packets (OpenVPN:
    its replay warnings), which are still counted."""
    muted = frozenset({"replay"}) if o.mute_replay_warnings else frozenset()
    return DropAggregator(interval, muted=muted)


def read_credentials(o: Options) -> Credentials | None:
    """``auth-user-pass FILE`` (or inline): line 1 username, line 2 password. ``None`` when
    there is nothing complete to read here: no auth-user-pass, a bare ``auth-user-pass``
    (asked for on the terminal), or no password line (OpenVPN then asks for the password,
    misc.c get_user_pass_cr; the runtime does, trivpn/runtime/credentials.py)."""
    source = o.auth_user_pass
    if source is None or source == "prompt":
        return None
    lines = source.read_text().splitlines()
    if not lines or not lines[0]:
        raise _error_at(o, "auth-user-pass",
                        f"the username in {source.describe()} is empty (line 1 must be the "
                        "username, line 2 the password)")
    if len(lines) < 2 or not lines[1]:
        return None
    return Credentials(lines[0], lines[1])


def proto_name(o: Options) -> str:
    if o.proto == "udp":
        return "UDPv4"
    return "TCPv4_SERVER" if o.proto == "tcp-server" else "TCPv4_CLIENT"


def _options_string(o: Options, *, is_server: bool, keydir: int | None, proto: str) -> str:
    return options_string(dev_type=o.dev_type, proto=proto, is_server=is_server,
                          tun_mtu=o.tun_mtu, keydir=keydir, tls_auth=o.tls_auth is not None,
                          auth=o.auth, compression=o.compression,
                          fragment=bool(o.fragment))


def expected_client_options_string(o: Options) -> str:
    """The options string a server expects from a client with settings that match its own
    (OpenVPN options.c, options_string() with ``remote`` set: ``tls-client``, the other key
    direction, the client's side of TCP), which ``opt-verify`` compares the client's with."""
    keydir = o.key_direction if o.tls_auth is not None else None
    return _options_string(o, is_server=False, keydir=None if keydir is None else 1 - keydir,
                           proto="UDPv4" if o.proto == "udp" else "TCPv4_CLIENT")


def crl_check(o: Options, ca_pem: str | None) -> CrlCheck | None:
    """crl-verify FILE (re-read on change, inline: fixed) or crl-verify DIR dir."""
    if o.crl_verify is None and o.crl_verify_dir is None:
        return None
    if ca_pem is None:
        raise _error_at(o, "crl-verify", "crl-verify needs 'ca' (the CRL issuer)")
    try:
        cas = tuple(x509.load_pem_x509_certificates(ca_pem.encode()))
    except ValueError as exc:
        raise _error_at(o, "ca", f"cannot parse the CA certificate(s): {exc}") from exc
    if o.crl_verify_dir is not None:
        if not o.crl_verify_dir.is_dir():
            raise _error_at(o, "crl-verify", f"crl-verify directory '{o.crl_verify_dir}' "
                                             "does not exist")
        return CrlCheck(cas, revoked_serial=CrlDirectory(o.crl_verify_dir))
    source = o.crl_verify
    assert source is not None
    if source.path is None:
        fixed = parse_crls(source.read_text().encode(), source.describe())
        return CrlCheck(cas, lists=lambda: fixed)
    try:
        return CrlCheck(cas, lists=CrlFile(source.path))
    except OSError as exc:
        raise _error_at(o, "crl-verify", f"cannot read crl-verify file '{source.path}': "
                                         f"{exc.strerror or exc}") from exc


def _issuers(o: Options, ca_pem: str | None) -> tuple[x509.Certificate, ...]:
    if ca_pem is None:
        raise _error_at(o, "verify-hash", "verify-hash needs 'ca' (it checks the CA there)")
    try:
        return tuple(x509.load_pem_x509_certificates(ca_pem.encode()))
    except ValueError as exc:
        raise _error_at(o, "ca", f"cannot parse the CA certificate(s): {exc}") from exc


def verification(o: Options, ca_pem: str | None) -> PeerVerification:
    """The checks on the peer's certificate this config asks for."""
    verify_name = None
    if o.verify_x509_name is not None:
        verify_name = (o.verify_x509_name.name, o.verify_x509_name.type)
    return PeerVerification(remote_cert_tls=o.remote_cert_tls, verify_x509_name=verify_name,
                            ns_cert_type=o.ns_cert_type, remote_cert_eku=o.remote_cert_eku,
                            remote_cert_ku=o.remote_cert_ku,
                            username_fields=o.x509_username_field, crl=crl_check(o, ca_pem),
                            fingerprints=o.peer_fingerprints,
                            issuer_fingerprints=o.verify_hash,
                            issuer_hash=o.verify_hash_algo.lower(),
                            issuers=_issuers(o, ca_pem) if o.verify_hash else ())


def _timer_fields(o: Options) -> dict[str, Any]:
    """The SessionConfig fields of replay protection and liveness timers, as both TLS and
    static-key sessions take them."""
    pings = ping_settings(o)
    return {
        "replay_window": o.replay_window.size,
        "replay_time": float(o.replay_window.seconds),
        "ping_interval": float(pings.ping) if pings.ping else None,
        "ping_restart": (float(pings.ping_restart or pings.ping_exit or 0)
                         if pings.ping_restart or pings.ping_exit else None),
        "ping_exit": bool(pings.ping_exit) and not pings.ping_restart,
        "inactive": float(o.inactive) if o.inactive else None,
        "inactive_bytes": o.inactive_bytes,
        "session_timeout": float(o.session_timeout) if o.session_timeout else None,
    }


def _payload_fields(o: Options) -> dict[str, Any]:
    """The SessionConfig fields of compression and fragmentation, as both TLS and static-key
    sessions take them."""
    return {
        "compression": _COMPRESSION[o.compression] if o.compression else Compression.NONE,
        "compress_outgoing": o.allow_compression == "yes",
        "comp_adaptive": bool(o.comp_flags & COMP_F_ADAPTIVE) and o.compression == "lzo",
        "compression_stub_only": o.allow_compression == "no",
        "decompress_limit": max(o.tun_mtu, 1500) + 128,
        "lzo_compress": _lzo_compressor(o),
        "lzo_decompress": _lzo_decompressor(o),
        "fragment": o.fragment,
        "fragment_encap": 28 if o.fragment_mtu else 0,  # IPv4 + UDP (mss.c get_ip_encap_overhead)
    }


def session_config(o: Options, *, unix_time_offset: float,
                   key_password: str | None = None) -> SessionConfig:
    """Everything a :class:`~trivpn.protocol.session.Session` needs for this config.

    ``unix_time_offset`` converts the caller's clock to Unix time (``time.time() -
    trio.current_time()`` under trio) for tls-auth/tls-crypt replay timestamps.
    """
    if o.secret is not None:
        return static_session_config(o, unix_time_offset=unix_time_offset)
    is_server = o.tls_role == "server"
    dh_text = o.dh.read_text() if isinstance(o.dh, FileSource) else None
    cert = o.cert.read_text() if o.cert is not None else None
    key = o.key.read_text() if o.key is not None else None
    extra = o.extra_certs.read_text() if o.extra_certs is not None else None
    bundle_ca: str | None = None
    if o.pkcs12 is not None:
        cert, key, bundle_ca = _pkcs12(o, o.pkcs12)
        if o.ca is not None and bundle_ca is not None:
            # with 'ca', the bundle's CA certificates are only sent as intermediates
            extra = bundle_ca if extra is None else extra.rstrip("\n") + "\n" + bundle_ca
    # peer-fingerprint without ca: no chain, the fingerprint decides (options.c,
    # verify_hash_no_ca); pkcs12 without ca: the bundle's CA certificates (ssl.c,
    # tls_ctx_load_pkcs12)
    if o.ca is None and o.pkcs12 is not None and bundle_ca is not None:
        ca_pem: str | None = bundle_ca
    elif o.ca is None and (o.peer_fingerprints or o.capath is not None):
        ca_pem = None
    else:
        ca_pem = _text(o.ca, "ca", o)
    try:
        ctx = build_context(
            server_side=is_server, ca_pem=ca_pem, cert_pem=cert, key_pem=key,
            tls_version_min=o.tls_version_min.version, tls_version_max=o.tls_version_max,
            require_peer_cert=not (is_server and o.verify_client_cert != "require"),
            dh_pem=dh_text, tls_cipher=o.tls_cipher, tls_ciphersuites=o.tls_ciphersuites,
            tls_groups=o.tls_groups, cert_profile=o.tls_cert_profile or "legacy",
            extra_certs_pem=extra, capath=_capath(o), key_password=key_password)
    except TlsContextError as exc:
        directive = exc.directive or ("cert" if "certificate" in str(exc) else "ca")
        raise _error_at(o, directive, str(exc)) from exc
    wrap = control_wrap(o)
    exporter = keying_material_exporter(ctx)
    ciphers = data_ciphers(o)
    keydir = o.key_direction if o.tls_auth is not None else None
    opts = _options_string(o, is_server=is_server, keydir=keydir, proto=proto_name(o))
    creds = read_credentials(o) if not is_server else None
    return SessionConfig(
        is_server=is_server,
        client_cert_optional=is_server and o.verify_client_cert != "require",
        tls_context=ctx,
        options_string=opts,
        verification=verification(o, ca_pem),
        wrap=wrap,
        peer_info=_server_peer_info(o, ciphers, exporter) if is_server else build_peer_info(
            ciphers=ciphers,
            iv_proto=(CLIENT_IV_PROTO if o.pull else P2P_IV_PROTO) | (
                IV_PROTO_TLS_KEY_EXPORT if exporter else 0),
            mtu=max(1600, o.tun_mtu, o.tun_mtu_max) if o.pull else None,  # tun-mtu-max
            comp_algorithms=advertises_compression(o), extra=peer_info_extra(o)),
        data_ciphers=ciphers,
        data_ciphers_fallback=data_ciphers_fallback(o),
        auth=o.auth,
        username=creds.username if creds else None,
        password=creds.password if creds else None,
        tls_timeout=float(o.tls_timeout),
        hand_window=float(o.hand_window),
        reneg_seconds=float(o.reneg_sec) if o.reneg_sec else None,
        reneg_bytes=o.reneg_bytes or None,
        reneg_packets=o.reneg_pkts or None,
        transition_window=float(o.tran_window),
        max_packet_size=o.max_packet_size,
        **_timer_fields(o),
        server_poll_timeout=(float(o.server_poll_timeout)
                             if o.server_poll_timeout and not is_server else None),
        **_payload_fields(o),
        pull_policy=PullPolicy(o.pull_filters, o.route_nopull, o.allow_pull_fqdn),
        unix_time_offset=unix_time_offset,
        defer_peer_verdict=o.tls_verify is not None,
        tls_crypt_v2_max_age=o.tls_crypt_v2_max_age,
        key_exporter=exporter,
        replay=o.replay,
        p2p=o.mode == "p2p" and not o.pull,
        # a server checking passwords holds a renegotiated key until they are checked again
        hold_reauth=is_server and (bool(o.auth_user_pass_verify) or o.management_client_auth
                                   or o.auth_pam_service is not None),
    )


def _server_peer_info(o: Options, ciphers: tuple[str, ...],
                      exporter: KeyExporter | None) -> str | None:
    """A 'mode server' server sends no peer-info; a TLS peer-to-peer server sends what
    OpenVPN 2.6's does (ssl.c, push_peer_info() with push_peer_info_detail 1): its
    data-ciphers and the P2P IV_PROTO bits, TLS-EKM when the exporter works here."""
    if o.mode == "server":
        return None
    return build_p2p_peer_info(
        ciphers=ciphers,
        iv_proto=P2P_IV_PROTO | (IV_PROTO_TLS_KEY_EXPORT if exporter else 0))


def data_ciphers_fallback(o: Options) -> str | None:
    """The cipher used when negotiation finds none. In TLS peer-to-peer mode 'cipher' is the
    fallback too (OpenVPN options.c, options_postprocess_cipher(): without pull or 'mode
    server', a configured cipher enables the NCP fallback); otherwise only
    'data-ciphers-fallback'."""
    if o.data_ciphers_fallback is not None:
        return o.data_ciphers_fallback
    if o.mode == "p2p" and not o.pull and o.cipher is not None \
            and o.cipher.upper() in SUPPORTED_CIPHERS:
        return o.cipher.upper()
    return None


def advertises_compression(o: Options) -> bool:
    """Whether the peer info announces IV_LZ4/IV_LZ4v2/IV_LZO (OpenVPN comp.c
    comp_generate_peer_info_string: unless only stubs are advertised)."""
    return not o.comp_flags & COMP_F_ADVERTISE_STUBS_ONLY


def _lzo_decompressor(o: Options) -> Callable[[bytes, int], bytes] | None:
    """liblzo2's decoder when LZO may be received (configured, or pushed when allowed);
    without liblzo2, trivpn's own (trivpn/protocol/lzo.py)."""
    if o.compression != "lzo" and o.allow_compression == "no":
        return None
    try:
        return lzo1x_decompressor()
    except LzoUnavailable:
        return None


def _lzo_compressor(o: Options) -> Callable[[bytes], bytes] | None:
    if o.allow_compression != "yes":
        return None
    try:
        return lzo1x_compressor()
    except LzoUnavailable as exc:
        raise _error_at(o, "allow-compression", f"{exc}: install liblzo2-2") from exc


# --- static ---

def static_session_config(o: Options, *, unix_time_offset: float) -> SessionConfig:
    """Static-key mode (``secret``): no TLS; the data channel keys come from the key file
    with the key direction (OpenVPN init.c, do_init_crypto_static()). The TLS context is
    never used (the session builds no TLS endpoint in this mode)."""
    assert o.secret is not None and o.cipher is not None  # the parser made sure
    try:
        key = parse_static_key(o.secret.read_text(), o.secret.describe())
    except ProtocolError as exc:
        raise _error_at(o, "secret", f"bad static key: {exc}") from exc
    cipher = o.cipher.upper()
    # the options string a 2.6 peer sends in its OCC reply: no TLS items, ',secret' instead
    items = options_string(dev_type=o.dev_type, proto=proto_name(o), is_server=False,
                           tun_mtu=o.tun_mtu, keydir=o.key_direction, auth=o.auth,
                           cipher=cipher, compression=o.compression,
                           fragment=bool(o.fragment)).split(",")
    opts = ",".join(i for i in items if i not in ("key-method 2", "tls-client")) + ",secret"
    return SessionConfig(
        is_server=o.tls_role == "server",
        tls_context=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
        options_string=opts,
        data_ciphers=(cipher,),
        data_ciphers_fallback=cipher,
        auth=o.auth,
        reneg_seconds=None,
        **_timer_fields(o),
        **_payload_fields(o),
        unix_time_offset=unix_time_offset,
        replay=o.replay,
        p2p=True,
        static_keys=static_directional_keys(key, o.key_direction),
    )
