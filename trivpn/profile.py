"""Single-file client profiles (``.ovpn``) for a server config, as ``trivpn profile`` writes.

:func:`export_profile` reads the server's config, finds its PKI (easy-rsa layout, see
:class:`~trivpn.pki.store.PkiStore`), issues the client certificate there if it does not exist
yet, and returns the profile: the client directives that match the server (proto, port, dev,
data ciphers, auth digest, compression framing) with the CA, the client certificate and key and
the server's tls-crypt or tls-auth key inline. :func:`render_profile` is the pure part.
Both ``openvpn`` 2.6 and ``trivpn run`` accept the result unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from trivpn.config import ConfigError, FileSource, Options, load_config
from trivpn.pki.certs import Credential, certificate_pem, issue_cert, load_certificates
from trivpn.pki.errors import PkiError
from trivpn.pki.files import PRIVATE_FILE_MODE, write_file
from trivpn.pki.keys import private_key_pem
from trivpn.pki.store import PkiStore, check_entity_name


class ProfileError(Exception):
    """The profile cannot be made; the message says what to change."""


@dataclass(frozen=True, slots=True)
class ProfileSettings:
    """What the client profile must agree on with the server."""

    remote: str
    port: int
    proto: str  # "udp" or "tcp"
    dev: str  # "tun" or "tap"
    data_ciphers: tuple[str, ...] | None = None  # only when the server sets them
    auth: str | None = None
    compression: str | None = None  # the client's directive, e.g. "comp-lzo no"
    tun_mtu: int | None = None
    verify_name: str | None = None  # the server certificate's CN, for verify-x509-name

    @staticmethod
    def from_server(options: Options, remote: str, port: int | None = None,
                    server_cn: str | None = None) -> ProfileSettings:
        given = options.directive_lines
        return ProfileSettings(
            remote=remote,
            port=port if port is not None else options.lport,
            proto="udp" if options.proto == "udp" else "tcp",
            dev=options.dev_type,
            data_ciphers=options.data_ciphers if "data-ciphers" in given else None,
            auth=options.auth if "auth" in given else None,
            compression=_compression_directive(options),
            tun_mtu=options.tun_mtu if "tun-mtu" in given else None,
            verify_name=server_cn or None,
        )


@dataclass(frozen=True, slots=True)
class InlineMaterial:
    """PEM and key-file texts that go into the profile's inline blocks."""

    ca: str
    cert: str
    key: str = field(repr=False)
    tls_crypt: str | None = field(default=None, repr=False)
    tls_auth: str | None = field(default=None, repr=False)
    tls_auth_direction: int | None = None  # the client's key-direction (None: bidirectional)


@dataclass(frozen=True, slots=True)
class Profile:
    text: str = field(repr=False)
    client_name: str
    issued: bool  # the client certificate was issued now
    pki: Path


def _compression_directive(options: Options) -> str | None:
    return {"lzo-stub": "comp-lzo no", "stub": "compress", "stub-v2": "compress stub-v2",
            "lzo": "comp-lzo yes", "lz4": "compress lz4", "lz4-v2": "compress lz4-v2"}.get(
        options.compression or "")


def render_profile(client_name: str, settings: ProfileSettings, material: InlineMaterial) -> str:
    """The .ovpn text."""
    lines = [
        f"# trivpn profile for '{client_name}': a single-file OpenVPN 2.6 client config",
        "client",
        f"dev {settings.dev}",
        f"proto {settings.proto}",
        f"remote {settings.remote} {settings.port}",
        "resolv-retry infinite",
        "nobind",
        "persist-key",
        "persist-tun",
        "remote-cert-tls server",
    ]
    if settings.verify_name:
        lines.append(f"verify-x509-name {settings.verify_name} name")
    if settings.data_ciphers:
        lines.append(f"data-ciphers {':'.join(settings.data_ciphers)}")
    if settings.auth:
        lines.append(f"auth {settings.auth}")
    if settings.compression:
        lines.append(settings.compression)
    if settings.tun_mtu is not None:
        lines.append(f"tun-mtu {settings.tun_mtu}")
    lines.append("verb 3")
    if material.tls_auth is not None and material.tls_auth_direction is not None:
        lines.append(f"key-direction {material.tls_auth_direction}")
    lines += _block("ca", material.ca)
    lines += _block("cert", material.cert)
    lines += _block("key", material.key)
    if material.tls_crypt is not None:
        lines += _block("tls-crypt", material.tls_crypt)
    if material.tls_auth is not None:
        lines += _block("tls-auth", material.tls_auth)
    return "\n".join(lines) + "\n"


def _block(name: str, text: str) -> list[str]:
    return [f"<{name}>", *text.strip().splitlines(), f"</{name}>"]


def find_pki(options: Options, pki_dir: Path | None) -> PkiStore:
    """The PKI directory holding the CA key: ``pki_dir`` or found from the server config's
    ``ca``/``cert`` paths (``DIR/ca.crt``, ``DIR/issued/NAME.crt``)."""
    if pki_dir is not None:
        store = PkiStore(pki_dir)
        if not store.ca_key_path.is_file():
            raise ProfileError(f"{pki_dir} is not a PKI directory: no {store.ca_key_path}")
        return store
    candidates: list[Path] = []
    for src in (options.ca, options.cert):
        if src is not None and src.path is not None:
            candidates += [src.path.parent, src.path.parent.parent]
    for root in dict.fromkeys(candidates):
        store = PkiStore(root)
        if store.ca_cert_path.is_file() and store.ca_key_path.is_file():
            return store
    looked = ", ".join(str(c) for c in dict.fromkeys(candidates)) or "nowhere (no ca/cert paths)"
    raise ProfileError("cannot find the PKI (ca.crt and private/ca.key) next to the server "
                       f"config's ca/cert files (looked in {looked}); pass --pki DIR")


def _is_client_cert(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True  # no EKU: any purpose
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku


def client_credential(store: PkiStore, name: str) -> tuple[Credential, bool]:
    """The client's certificate and key from ``store``, issued now if missing; returns
    (credential, issued_now)."""
    check_entity_name(name)
    if store.cert_path(name).exists():
        cred = store.load_issued(name)
        if not _is_client_cert(cred.cert):
            raise ProfileError(f"{store.cert_path(name)} exists but is not a client certificate "
                               "(no clientAuth EKU); choose another CLIENTNAME")
        return cred, False
    ca = store.load_ca()
    cred = issue_cert(ca, "client", name)
    store.save_issued(name, cred)
    return cred, True


def _read(src: FileSource | None, what: str) -> str | None:
    if src is None:
        return None
    try:
        return src.read_text()
    except ConfigError as exc:
        raise ProfileError(f"cannot read the server's {what}: {exc}") from None


def _server_cn(options: Options) -> str | None:
    text = _read(options.cert, "cert")
    if text is None:
        return None
    try:
        cert = load_certificates(text, "server cert")[0]
    except PkiError:
        return None
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value if isinstance(value, str) and " " not in value else None


def export_profile(client_name: str, server_config: Path, remote: str, *,
                   port: int | None = None, pki_dir: Path | None = None) -> Profile:
    """Build the profile for ``client_name`` (issuing its certificate if needed)."""
    try:
        options = load_config(server_config, read_files=False, lenient=True)
    except ConfigError as exc:
        raise ProfileError(f"cannot read the server config: {exc}") from None
    if options.role != "server":
        raise ProfileError(f"{server_config} is not a server config (no 'server' or "
                           "'mode server' directive)")
    if not remote or any(c.isspace() for c in remote):
        raise ProfileError(f"invalid --remote {remote!r}: give a host name or address")
    ca_text = _read(options.ca, "ca")
    if ca_text is None:
        raise ProfileError(f"{server_config} has no 'ca' directive")
    try:
        server_cas = load_certificates(ca_text, "server ca")
        store = find_pki(options, pki_dir)
        # the CA key (maybe encrypted) is needed only to issue a new client certificate
        if store.load_ca_cert() not in server_cas:
            raise ProfileError(f"the CA in {store.root} is not the CA the server trusts "
                               f"({options.ca.describe() if options.ca else 'ca'}); "
                               "pass the right --pki DIR")
        cred, issued = client_credential(store, client_name)
    except PkiError as exc:
        raise ProfileError(str(exc)) from None
    direction = None
    if options.tls_auth is not None and options.key_direction is not None:
        direction = 1 - options.key_direction
    material = InlineMaterial(
        ca=ca_text,
        cert=certificate_pem(cred.cert).decode("ascii"),
        key=private_key_pem(cred.key).decode("ascii"),
        tls_crypt=_read(options.tls_crypt, "tls-crypt key"),
        tls_auth=_read(options.tls_auth, "tls-auth key"),
        tls_auth_direction=direction,
    )
    settings = ProfileSettings.from_server(options, remote, port, _server_cn(options))
    return Profile(render_profile(client_name, settings, material), client_name, issued,
                   store.root)


def write_profile(path: Path, profile: Profile, *, force: bool = False) -> None:
    """Write the profile with mode 0600 (it holds a private key); refuses to overwrite
    unless ``force``."""
    try:
        write_file(path, profile.text.encode("utf-8"), mode=PRIVATE_FILE_MODE, overwrite=force)
    except PkiError as exc:
        raise ProfileError(str(exc)) from None
