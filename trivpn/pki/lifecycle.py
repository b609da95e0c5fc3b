"""The certificate lifecycle on a PKI directory: list, revoke, renew, CRL, what expires.

Works on an easy-rsa 3 directory and on one made by ``trivpn pki init`` alike: both keep
``ca.crt``, ``private/ca.key``, ``issued/NAME.crt`` and ``private/NAME.key``, and both keep the
OpenSSL ``ca`` database easy-rsa uses (:mod:`trivpn.pki.index`)::

    index.txt                       one line per certificate: V (valid) or R (revoked)
    index.txt.attr                  "unique_subject = no" (a name can be re-issued)
    serial                          the next serial, hex
    certs_by_serial/SERIAL.pem      a copy of each valid certificate
    revoked/certs_by_serial/SERIAL.crt, revoked/private_by_serial/SERIAL.key,
    revoked/reqs_by_serial/SERIAL.req      where ``revoke`` moves a revoked name's files
    renewed/issued/NAME.crt, renewed/private/NAME.key, renewed/reqs/NAME.req
                                    where ``renew`` moves the old files until they are revoked
    crl.pem                         the CRL (``crl-verify``)

A directory of an older trivpn without ``index.txt`` gets one, built from ``issued/``, the first
time a command writes.

Renewal overlap: ``renew NAME --overlap-days N`` records the old serial and the moment its
overlap ends in ``renewed/trivpn-revoke-after`` (``SERIAL<TAB>YYYYMMDDHHMMSSZ<TAB>NAME``, a file
easy-rsa ignores). Every command that signs a CRL (``crl``, ``revoke``, ``renew``) first revokes,
with reason ``superseded``, each recorded certificate whose overlap has ended, moving its files
from ``renewed/`` to ``revoked/`` as ``easyrsa revoke-renewed`` does. Run ``trivpn pki crl``
from cron (it also keeps the CRL from expiring) and old certificates are revoked on time.

Every file is written to a temporary file and renamed into place; the CA key is loaded and the
CRL signed before anything is changed, so a wrong passphrase or a bad name changes nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from trivpn.pki.certs import (
    DEFAULT_LEAF_DAYS,
    Credential,
    certificate_pem,
    common_name,
    issue_cert,
    load_certificate,
    load_certificates,
)
from trivpn.pki.crl import DEFAULT_CRL_DAYS, REASONS, Revocation, build_crl, crl_pem
from trivpn.pki.errors import PkiError
from trivpn.pki.files import (
    PRIVATE_DIR_MODE,
    PUBLIC_DIR_MODE,
    PUBLIC_FILE_MODE,
    ensure_dir,
    read_text,
    write_file,
)
from trivpn.pki.index import (
    IndexEntry,
    entry_for,
    format_index,
    parse_index,
    serial_hex,
)
from trivpn.pki.keys import generate_like
from trivpn.pki.store import PkiStore, check_entity_name

EXPIRING_DAYS = 30  # "expiring" in ``pki list``: easy-rsa's EASYRSA_CERT_RENEW window
DEFAULT_OVERLAP_DAYS = 7
PENDING_FILE = "trivpn-revoke-after"
ATTR_TEXT = "unique_subject = no\n"  # what easy-rsa's init-pki / first signing leaves

Role = Literal["server", "client", "server+client", "-"]
CertStatus = Literal["valid", "expiring", "expired", "revoked"]


@dataclass(frozen=True, slots=True)
class CertInfo:
    """One certificate as ``pki list`` shows it."""

    name: str | None  # the file name base (issued/NAME.crt), None when the file is gone
    common_name: str
    serial: int
    role: Role
    not_after: datetime
    status: CertStatus
    revoked_at: datetime | None = None
    reason: str | None = None
    current: bool = False  # it is issued/NAME.crt (not a renewed or revoked one)

    @property
    def serial_hex(self) -> str:
        return serial_hex(self.serial)


@dataclass(frozen=True, slots=True)
class Expiry:
    """Something that stops working at ``when``: a certificate, the CA or the CRL."""

    what: Literal["certificate", "ca", "crl"]
    name: str
    when: datetime


@dataclass(frozen=True, slots=True)
class Pending:
    """A renewed certificate to revoke once its overlap ends."""

    serial: int
    after: datetime
    name: str


@dataclass(frozen=True, slots=True)
class RevokeResult:
    serial: int
    crl: Path
    superseded: tuple[int, ...] = ()  # renewed certificates whose overlap ended meanwhile


@dataclass(frozen=True, slots=True)
class RenewResult:
    old_serial: int
    new_serial: int
    cert: Path
    revoke_after: datetime | None  # None: revoked at once
    crl: Path | None  # written when something was revoked


@dataclass(frozen=True, slots=True)
class CrlResult:
    crl: Path
    next_update: datetime
    revoked: int
    superseded: tuple[int, ...]


def role_of(cert: x509.Certificate) -> Role:
    """server / client / server+client from the EKU (easy-rsa's cert types), ``-`` without."""
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "-"
    server = ExtendedKeyUsageOID.SERVER_AUTH in eku
    client = ExtendedKeyUsageOID.CLIENT_AUTH in eku
    if server and client:
        return "server+client"
    return "server" if server else "client" if client else "-"


def open_pki(path: Path) -> PkiStore:
    """The PKI at ``path``, or at ``path/pki`` (an easy-rsa working directory)."""
    for root in (path, path / "pki"):
        if (root / "ca.crt").is_file():
            return PkiStore(root)
    if not path.exists():
        raise PkiError("no such directory", str(path))
    raise PkiError("not a PKI directory: no ca.crt here or in pki/ (expected an easy-rsa "
                   "'pki' directory or one made by 'trivpn pki init')", str(path))


class Lifecycle:
    """The lifecycle commands on one PKI directory (see the module docstring)."""

    def __init__(self, store: PkiStore) -> None:
        self.store = store
        self.root = store.root

    # ----- paths -----
    @property
    def index_path(self) -> Path:
        return self.root / "index.txt"

    @property
    def crl_path(self) -> Path:
        return self.root / "crl.pem"

    @property
    def pending_path(self) -> Path:
        return self.root / "renewed" / PENDING_FILE

    # ----- reading -----
    def entries(self) -> tuple[IndexEntry, ...]:
        """index.txt, or (no index yet) a valid entry for each certificate in issued/."""
        if self.index_path.exists():
            return parse_index(read_text(self.index_path, "certificate index"),
                               str(self.index_path))
        return tuple(entry_for(cert) for _, cert in
                     sorted(self._issued().values(), key=lambda nc: nc[1].not_valid_before_utc))

    def _issued(self, sub: str = "issued") -> dict[int, tuple[str, x509.Certificate]]:
        """Certificates in ``sub`` (issued/ or renewed/issued/) by serial, with their names."""
        found: dict[int, tuple[str, x509.Certificate]] = {}
        folder = self.root / sub
        if folder.is_dir():
            for path in sorted(folder.glob("*.crt")):
                cert = load_certificate(read_text(path, "certificate"), str(path))
                found[cert.serial_number] = (path.stem, cert)
        return found

    def _by_serial(self, sub: str, suffix: str) -> dict[int, x509.Certificate]:
        found: dict[int, x509.Certificate] = {}
        folder = self.root / sub
        if folder.is_dir():
            for path in sorted(folder.glob(f"*{suffix}")):
                with contextlib.suppress(PkiError):
                    cert = load_certificate(read_text(path, "certificate"), str(path))
                    found[cert.serial_number] = cert
        return found

    def pending(self) -> tuple[Pending, ...]:
        if not self.pending_path.exists():
            return ()
        where = str(self.pending_path)
        out = []
        for number, line in enumerate(read_text(self.pending_path, "renewal list")
                                      .splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            try:
                serial, after, name = int(fields[0], 16), fields[1], fields[2]
                when = datetime.strptime(after, "%Y%m%d%H%M%SZ").replace(tzinfo=UTC)
            except (ValueError, IndexError):
                raise PkiError("expected SERIAL<TAB>YYYYMMDDHHMMSSZ<TAB>NAME",
                               f"{where}:{number}") from None
            out.append(Pending(serial, when, name))
        return tuple(out)

    def inventory(self, now: datetime | None = None,
                  expiring_days: int = EXPIRING_DAYS) -> tuple[CertInfo, ...]:
        """Every certificate: those in index.txt, and any in issued/ it does not list."""
        now = now or datetime.now(UTC)
        issued = self._issued()
        renewed = self._issued("renewed/issued")
        copies = self._by_serial("certs_by_serial", ".pem")
        copies.update(self._by_serial("revoked/certs_by_serial", ".crt"))
        soon = now + timedelta(days=expiring_days)
        out = []
        entries = list(self.entries())
        listed = {e.serial for e in entries}
        entries += [entry_for(cert) for serial, (_, cert) in issued.items()
                    if serial not in listed]
        for e in entries:
            name, cert = issued.get(e.serial) or renewed.get(e.serial) or (None, None)
            if cert is None:
                cert = copies.get(e.serial)
            status: CertStatus
            if e.status == "R":
                status = "revoked"
            elif e.expires <= now:
                status = "expired"
            elif e.expires <= soon:
                status = "expiring"
            else:
                status = "valid"
            out.append(CertInfo(
                name=name, common_name=common_name(cert) if cert is not None else e.common_name,
                serial=e.serial, role=role_of(cert) if cert is not None else "-",
                not_after=e.expires, status=status, revoked_at=e.revoked_at, reason=e.reason,
                current=e.serial in issued))
        return tuple(out)

    def expiring(self, days: int, now: datetime | None = None) -> tuple[Expiry, ...]:
        """What stops working within ``days`` days (or already has): the CA certificate(s),
        the current certificate of each name (issued/, not revoked: revoke or renew an expired
        one to clear it) and the CRL."""
        now = now or datetime.now(UTC)
        limit = now + timedelta(days=days)
        found = [Expiry("ca", common_name(ca), ca.not_valid_after_utc)
                 for ca in self._ca_certs()]
        revoked = {e.serial for e in self.entries() if e.status == "R"}
        for serial, (name, cert) in self._issued().items():
            if serial not in revoked:
                found.append(Expiry("certificate", name, cert.not_valid_after_utc))
        crl = self.current_crl()
        if crl is not None and crl.next_update_utc is not None:
            found.append(Expiry("crl", str(self.crl_path), crl.next_update_utc))
        return tuple(sorted((x for x in found if x.when <= limit), key=lambda x: x.when))

    def current_crl(self) -> x509.CertificateRevocationList | None:
        if not self.crl_path.exists():
            return None
        data = self.crl_path.read_bytes()
        try:
            if b"-----BEGIN" in data:
                return x509.load_pem_x509_crl(data)
            return x509.load_der_x509_crl(data)
        except ValueError:
            raise PkiError("malformed CRL", str(self.crl_path)) from None

    def _ca_certs(self) -> tuple[x509.Certificate, ...]:
        path = self.store.ca_cert_path
        return load_certificates(read_text(path, "CA certificate"), str(path))

    # ----- writing -----
    def revoke(self, name: str, reason: str | None = None, *,
               passphrase: bytes | None = None, crl_days: int = DEFAULT_CRL_DAYS,
               now: datetime | None = None) -> RevokeResult:
        """Revoke issued/NAME.crt: index.txt marks it R, its files move to revoked/ and a
        new crl.pem is written."""
        now = _whole_seconds(now)
        check_entity_name(name)
        if reason is not None and reason not in REASONS:
            raise PkiError(f"unknown reason {reason!r}; expected one of {', '.join(REASONS)}")
        cert_path = self.store.cert_path(name)
        entries = list(self.entries())
        if not cert_path.exists():
            self._explain_missing(name, entries)
        cert = load_certificate(read_text(cert_path, "certificate"), str(cert_path))
        entries = self._with_entry(entries, cert)
        index = _find(entries, cert.serial_number)
        if entries[index].status == "R":
            raise PkiError(f"{name} (serial {serial_hex(cert.serial_number)}) is already "
                           "revoked", str(self.index_path))
        moves = self._revoked_moves(name, cert.serial_number, "")
        entries[index] = entries[index].revoked(now, reason)
        ca = self.store.load_ca(passphrase)
        entries, superseded, pending, more = self._supersede_due(entries, now)
        crl = self._sign_crl(ca, entries, now, crl_days)
        self._commit(entries, moves + more, pending, crl,
                     drop=[self._copy_path(cert.serial_number)])
        return RevokeResult(cert.serial_number, self.crl_path, superseded)

    def make_crl(self, *, passphrase: bytes | None = None, crl_days: int = DEFAULT_CRL_DAYS,
                 now: datetime | None = None) -> CrlResult:
        """Revoke renewed certificates whose overlap ended, then sign a fresh crl.pem."""
        now = _whole_seconds(now)
        entries = list(self.entries())
        ca = self.store.load_ca(passphrase)
        entries, superseded, pending, moves = self._supersede_due(entries, now)
        crl = self._sign_crl(ca, entries, now, crl_days)
        self._commit(entries, moves, pending, crl)
        assert crl.next_update_utc is not None
        return CrlResult(self.crl_path, crl.next_update_utc,
                         sum(1 for e in entries if e.status == "R"), superseded)

    def renew(self, name: str, *, overlap_days: int = DEFAULT_OVERLAP_DAYS,
              days: int = DEFAULT_LEAF_DAYS, passphrase: bytes | None = None,
              crl_days: int = DEFAULT_CRL_DAYS, now: datetime | None = None) -> RenewResult:
        """A new key and certificate for NAME (same subject, role and key type); the old files move
        to renewed/ and the old certificate is revoked when ``overlap_days`` have passed."""
        now = _whole_seconds(now)
        if overlap_days < 0:
            raise PkiError(f"the overlap must not be negative, got {overlap_days}")
        check_entity_name(name)
        cert_path = self.store.cert_path(name)
        entries = list(self.entries())
        if not cert_path.exists():
            self._explain_missing(name, entries)
        old = load_certificate(read_text(cert_path, "certificate"), str(cert_path))
        entries = self._with_entry(entries, old)
        if entries[_find(entries, old.serial_number)].status == "R":
            raise PkiError(f"{name} (serial {serial_hex(old.serial_number)}) is revoked; "
                           f"issue a new certificate with 'trivpn pki issue'", str(cert_path))
        role = role_of(old)
        if role == "-":
            raise PkiError("has no serverAuth/clientAuth extended key usage: cannot tell "
                           "whether to renew it as a server or a client certificate",
                           str(cert_path))
        renewed = {sub: self.root / "renewed" / sub / f"{name}{ext}" for sub, ext in
                   (("issued", ".crt"), ("private", ".key"), ("reqs", ".req"))}
        for path in renewed.values():
            if path.exists():
                raise PkiError(f"a renewal of {name} is still pending (its old certificate is "
                               "revoked when the overlap ends, by 'trivpn pki crl'); revoke "
                               "it first", str(path))
        ca = self.store.load_ca(passphrase)
        eku = ((ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
               if role == "server+client" else None)
        cred = issue_cert(ca, "client" if role == "client" else "server", common_name(old),
                          days=days, now=now, eku=eku, key=generate_like(old.public_key()),
                          subject=old.subject)
        moves = [(cert_path, renewed["issued"]),
                 (self.store.key_path(name), renewed["private"]),
                 (self.root / "reqs" / f"{name}.req", renewed["reqs"])]
        pending = list(self.pending())
        after = now + timedelta(days=overlap_days)
        pending.append(Pending(old.serial_number, after, name))
        entries.append(entry_for(cred.cert))
        entries, superseded, pending, more = self._supersede_due(entries, now, pending)
        crl = self._sign_crl(ca, entries, now, crl_days) if superseded else None
        # Move the old files out of the way, then write the new key and certificate.
        self._commit(entries, moves + more, pending, crl,
                     drop=[self._copy_path(old.serial_number)],
                     issued=(name, cred))
        return RenewResult(old.serial_number, cred.cert.serial_number, cert_path,
                           None if overlap_days == 0 else after,
                           self.crl_path if crl is not None else None)

    def record_issued(self, cert: x509.Certificate) -> None:
        """Add a certificate just written to issued/ to index.txt, certs_by_serial/ and
        serial, as OpenSSL's ``ca`` does when it signs."""
        entries = self._with_entry(list(self.entries()), cert)
        self._write_index(entries)
        self._write_serial(cert.serial_number + 1)
        folder = self.root / "certs_by_serial"
        ensure_dir(folder, PUBLIC_DIR_MODE)
        write_file(folder / f"{serial_hex(cert.serial_number)}.pem", certificate_pem(cert),
                   mode=PUBLIC_FILE_MODE, overwrite=True)

    def init_database(self) -> None:
        """An empty index.txt, index.txt.attr and serial where none exist yet."""
        if not self.index_path.exists():
            self._write_index(list(self.entries()))
        if not (self.root / "index.txt.attr").exists():
            write_file(self.root / "index.txt.attr", ATTR_TEXT.encode(), mode=PUBLIC_FILE_MODE,
                       overwrite=True)
        if not (self.root / "serial").exists():
            self._write_serial(1)

    # ----- helpers -----
    def _explain_missing(self, name: str, entries: Sequence[IndexEntry]) -> None:
        if any(e.status == "R" and e.common_name == name for e in entries) and \
                not any(e.status == "V" and e.common_name == name for e in entries):
            raise PkiError(f"{name} is already revoked (no {self.store.cert_path(name)})")
        known = sorted(name for name, _ in self._issued().values())
        raise PkiError(f"unknown name {name!r}: no {self.store.cert_path(name)} (issued: "
                       f"{', '.join(known) or 'none'})")

    @staticmethod
    def _with_entry(entries: list[IndexEntry], cert: x509.Certificate) -> list[IndexEntry]:
        if not any(e.serial == cert.serial_number for e in entries):
            entries = [*entries, entry_for(cert)]
        return entries

    def _revoked_moves(self, name: str, serial: int, prefix: str) -> list[tuple[Path, Path]]:
        """easy-rsa's revoke_move: issued/NAME.crt, private/NAME.key and reqs/NAME.req (under
        ``prefix``, e.g. ``renewed/``) go to revoked/*_by_serial/SERIAL.*; refuses to
        overwrite, as easy-rsa does."""
        sx = serial_hex(serial)
        out = self.root / "revoked"
        moves = [(self.root / prefix / "issued" / f"{name}.crt",
                  out / "certs_by_serial" / f"{sx}.crt"),
                 (self.root / prefix / "private" / f"{name}.key",
                  out / "private_by_serial" / f"{sx}.key"),
                 (self.root / prefix / "reqs" / f"{name}.req",
                  out / "reqs_by_serial" / f"{sx}.req")]
        for _, target in moves:
            if target.exists():
                raise PkiError("cannot revoke: a revoked file of this serial already exists",
                               str(target))
        return moves

    def _supersede_due(
        self, entries: list[IndexEntry], now: datetime,
        pending: list[Pending] | None = None,
    ) -> tuple[list[IndexEntry], tuple[int, ...], list[Pending], list[tuple[Path, Path]]]:
        """Revoke (reason superseded) each pending renewal whose overlap ended."""
        pending = list(self.pending()) if pending is None else pending
        keep: list[Pending] = []
        done: list[int] = []
        moves: list[tuple[Path, Path]] = []
        for item in pending:
            try:
                index = _find(entries, item.serial)
            except PkiError:
                continue  # no longer in the index: nothing left to revoke
            if entries[index].status == "R":
                continue  # revoked meanwhile (e.g. by easyrsa revoke-renewed)
            if item.after > now:
                keep.append(item)
                continue
            entries[index] = entries[index].revoked(now, "superseded")
            done.append(item.serial)
            moves += self._revoked_moves(item.name, item.serial, "renewed")
        return entries, tuple(done), keep, moves

    def _sign_crl(self, ca: Credential, entries: Sequence[IndexEntry], now: datetime,
                  crl_days: int) -> x509.CertificateRevocationList:
        if crl_days <= 0:
            raise PkiError(f"the CRL validity must be a positive number of days, got {crl_days}")
        number = 1
        with contextlib.suppress(PkiError, x509.ExtensionNotFound):
            previous = self.current_crl()
            if previous is not None:
                number = previous.extensions.get_extension_for_class(
                    x509.CRLNumber).value.crl_number + 1
        revoked = [Revocation(e.serial, e.revoked_at or now, e.reason)
                   for e in entries if e.status == "R"]
        return build_crl(ca, revoked, now + timedelta(days=crl_days), now=now,
                         crl_number=number)

    def _commit(self, entries: list[IndexEntry], moves: Sequence[tuple[Path, Path]],
                pending: Sequence[Pending], crl: x509.CertificateRevocationList | None, *,
                drop: Sequence[Path] = (),
                issued: tuple[str, Credential] | None = None) -> None:
        """Write everything prepared: index, moved files, the new credential, pending list,
        serial and CRL, each file atomically."""
        self._write_index(entries)
        self.init_database()
        for source, target in moves:  # in order: renewed/ may be a stop on the way to revoked/
            if not source.exists():
                continue  # easy-rsa moves keys and requests "only if we have it" too
            if not target.parent.parent.is_dir():
                ensure_dir(target.parent.parent, PUBLIC_DIR_MODE)
            if not target.parent.is_dir():
                ensure_dir(target.parent, PRIVATE_DIR_MODE if "private" in target.parent.name
                           else PUBLIC_DIR_MODE)
            try:
                os.replace(source, target)
            except OSError as exc:
                raise PkiError(f"cannot move to {target}: {exc.strerror}",
                               str(source)) from None
        for path in drop:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if issued is not None:
            name, cred = issued
            self.store.save_issued(name, cred, record=False)
            folder = self.root / "certs_by_serial"
            ensure_dir(folder, PUBLIC_DIR_MODE)
            write_file(folder / f"{serial_hex(cred.cert.serial_number)}.pem",
                       certificate_pem(cred.cert), mode=PUBLIC_FILE_MODE, overwrite=True)
            self._write_serial(cred.cert.serial_number + 1)
        if pending or self.pending_path.exists():
            ensure_dir(self.pending_path.parent, PUBLIC_DIR_MODE)
            text = "".join(f"{serial_hex(p.serial)}\t{p.after.strftime('%Y%m%d%H%M%SZ')}\t"
                           f"{p.name}\n" for p in pending)
            write_file(self.pending_path, text.encode(), mode=PUBLIC_FILE_MODE, overwrite=True)
        if crl is not None:
            write_file(self.crl_path, crl_pem(crl), mode=PUBLIC_FILE_MODE, overwrite=True)

    def _copy_path(self, serial: int) -> Path:
        return self.root / "certs_by_serial" / f"{serial_hex(serial)}.pem"

    def _write_index(self, entries: Sequence[IndexEntry]) -> None:
        write_file(self.index_path, format_index(entries).encode(), mode=PUBLIC_FILE_MODE,
                   overwrite=True)

    def _write_serial(self, serial: int) -> None:
        write_file(self.root / "serial", (serial_hex(serial) + "\n").encode(),
                   mode=PUBLIC_FILE_MODE, overwrite=True)


def _find(entries: Sequence[IndexEntry], serial: int) -> int:
    for i, e in enumerate(entries):
        if e.serial == serial:
            return i
    raise PkiError(f"serial {serial_hex(serial)} is not in index.txt")


def _whole_seconds(now: datetime | None) -> datetime:
    # index.txt and the CRL keep whole seconds; keep ours the same so they agree.
    return (now or datetime.now(UTC)).replace(microsecond=0)
