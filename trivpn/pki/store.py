"""An easy-rsa style directory of a CA and the certificates it issued.

Layout (the same paths easy-rsa uses, so OpenVPN configs look familiar)::

    DIR/ca.crt              CA certificate            0644
    DIR/private/            private keys              0700
    DIR/private/ca.key      CA key                    0600
    DIR/issued/NAME.crt     leaf certificate          0644
    DIR/private/NAME.key    leaf key                  0600

plus OpenSSL ``ca``'s database that easy-rsa keeps beside them (``index.txt``,
``index.txt.attr``, ``serial``, ``certs_by_serial/``; see :mod:`trivpn.pki.lifecycle`), so
``easyrsa`` and ``trivpn pki`` can work on the same directory.

Keys trivpn writes are unencrypted PEM (OpenVPN reads them unattended at start); an easy-rsa CA
key may be encrypted and is loaded with its passphrase. Existing files are never overwritten
unless ``force`` is given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from trivpn.pki.certs import (
    Credential,
    certificate_pem,
    check_key_matches,
    load_certificate,
    request_pem,
)
from trivpn.pki.errors import AlreadyExistsError, PkiError
from trivpn.pki.files import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    PUBLIC_DIR_MODE,
    PUBLIC_FILE_MODE,
    ensure_dir,
    read_text,
    write_file,
)
from trivpn.pki.keys import load_private_key, private_key_pem

# A name becomes a file name: no separators, no leading dot, no surprises in shells.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_RESERVED_NAMES = frozenset({"ca"})  # private/ca.key belongs to the CA


def check_entity_name(name: str) -> None:
    """Raise unless ``name`` is usable as NAME in ``issued/NAME.crt``."""
    if not _NAME.fullmatch(name):
        raise PkiError(
            f"invalid name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', "
            "starting with a letter or digit"
        )
    if name.lower() in _RESERVED_NAMES:
        raise PkiError(f"the name {name!r} is reserved for the CA")


@dataclass(frozen=True, slots=True)
class IssuedPaths:
    """Where a certificate and its key were written."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class PkiStore:
    """The PKI directory rooted at ``root``."""

    root: Path

    @property
    def ca_cert_path(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key_path(self) -> Path:
        return self.root / "private" / "ca.key"

    def cert_path(self, name: str) -> Path:
        check_entity_name(name)
        return self.root / "issued" / f"{name}.crt"

    def key_path(self, name: str) -> Path:
        check_entity_name(name)
        return self.root / "private" / f"{name}.key"

    def save_ca(self, ca: Credential, *, force: bool = False) -> IssuedPaths:
        """Write the CA certificate and key; refuses if either exists unless ``force``."""
        from trivpn.pki.lifecycle import Lifecycle  # noqa: PLC0415 (it imports this module)

        paths = IssuedPaths(self.ca_cert_path, self.ca_key_path)
        self._save(paths, ca, force)
        Lifecycle(self).init_database()
        return paths

    def save_issued(self, name: str, cred: Credential, *, force: bool = False,
                    record: bool = True) -> IssuedPaths:
        """Write ``issued/NAME.crt`` and ``private/NAME.key``; refuses to overwrite unless
        ``force``. With ``record`` the certificate is also entered in ``index.txt``."""
        from trivpn.pki.lifecycle import Lifecycle  # noqa: PLC0415 (it imports this module)

        paths = IssuedPaths(self.cert_path(name), self.key_path(name))
        self._save(paths, cred, force)
        reqs = self.root / "reqs"
        if reqs.is_dir():  # easy-rsa keeps each name's request; its revoke and renew move it
            write_file(reqs / f"{name}.req", request_pem(cred), mode=PUBLIC_FILE_MODE,
                       overwrite=True)
        if record:
            Lifecycle(self).record_issued(cred.cert)
        return paths

    def load_ca_cert(self) -> x509.Certificate:
        """The CA certificate alone (no key, so no passphrase)."""
        if not self.ca_cert_path.exists():
            raise PkiError(
                f"no CA certificate here (create one with 'trivpn pki init {self.root}')",
                str(self.ca_cert_path),
            )
        return load_certificate(read_text(self.ca_cert_path, "CA certificate"),
                                str(self.ca_cert_path))

    def load_ca(self, passphrase: bytes | None = None) -> Credential:
        """The CA certificate and key, checked to belong together; ``passphrase`` decrypts an
        encrypted key (:class:`~trivpn.pki.keys.PassphraseError` when missing or wrong)."""
        if not self.ca_cert_path.exists():
            raise PkiError(
                f"no CA certificate here (create one with 'trivpn pki init {self.root}')",
                str(self.ca_cert_path),
            )
        cert_where = str(self.ca_cert_path)
        key_where = str(self.ca_key_path)
        cert = load_certificate(read_text(self.ca_cert_path, "CA certificate"), cert_where)
        key = load_private_key(read_text(self.ca_key_path, "CA private key"), key_where,
                               passphrase)
        check_key_matches(cert, key, key_where)
        return Credential(cert, key)

    def load_issued(self, name: str) -> Credential:
        """A previously issued certificate and its key."""
        cert_path, key_path = self.cert_path(name), self.key_path(name)
        cert = load_certificate(read_text(cert_path, "certificate"), str(cert_path))
        key = load_private_key(read_text(key_path, "private key"), str(key_path))
        check_key_matches(cert, key, str(key_path))
        return Credential(cert, key)

    def _save(self, paths: IssuedPaths, cred: Credential, force: bool) -> None:
        if not force:
            for path in (paths.cert, paths.key):
                if path.exists():
                    raise AlreadyExistsError("already exists; refusing to overwrite", str(path))
        if not self.root.is_dir():  # leave an existing directory's mode alone
            ensure_dir(self.root, PUBLIC_DIR_MODE)
        ensure_dir(paths.key.parent, PRIVATE_DIR_MODE)
        if paths.cert.parent != self.root:
            ensure_dir(paths.cert.parent, PUBLIC_DIR_MODE)
        # Key first: a certificate on disk without its key would look usable but is not.
        write_file(paths.key, private_key_pem(cred.key), mode=PRIVATE_FILE_MODE, overwrite=force)
        write_file(paths.cert, certificate_pem(cred.cert), mode=PUBLIC_FILE_MODE, overwrite=force)
