"""OpenSSL ``ca``'s certificate database (``index.txt``), the file easy-rsa keeps its PKI in.

One line per certificate, six tab-separated fields::

    V|R|E  <expiry>  <revocation date[,reason]>  <serial>  <file name>  <subject>

Times are ``YYMMDDHHMMSSZ`` (UTCTime; years from 2050 on as ``YYYYMMDDHHMMSSZ``), the serial
is upper-case hex with an even number of digits, the file name is ``unknown`` (OpenSSL's ``ca``
writes it so) and the subject is OpenSSL's one-line form ``/CN=alice``. The revocation field is
empty unless the status is ``R``.

Pure functions: parsing and formatting only; nothing here touches files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal, cast

from cryptography import x509

from trivpn.pki.crl import REASONS
from trivpn.pki.errors import PkiError
from trivpn.protocol.tls import OPENSSL_SHORT_NAMES

Status = Literal["V", "R", "E"]



@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One line of ``index.txt``."""

    status: Status
    expires: datetime
    serial: int
    subject: str
    revoked_at: datetime | None = None
    reason: str | None = None
    filename: str = "unknown"

    @property
    def serial_hex(self) -> str:
        return serial_hex(self.serial)

    @property
    def common_name(self) -> str:
        """The last ``CN=`` of the one-line subject (``""`` when there is none)."""
        cn = ""
        for part in self.subject.split("/"):
            key, sep, value = part.partition("=")
            if sep and key == "CN":
                cn = value
        return cn

    def revoked(self, when: datetime, reason: str | None) -> IndexEntry:
        """This entry marked revoked at ``when`` for ``reason``."""
        return replace(self, status="R", revoked_at=when, reason=reason)


def serial_hex(serial: int) -> str:
    """The serial as OpenSSL prints it: upper-case hex, an even number of digits."""
    text = f"{serial:X}"
    return text if len(text) % 2 == 0 else "0" + text


def subject_oneline(name: x509.Name) -> str:
    """``name`` in OpenSSL's ``X509_NAME_oneline`` form, e.g. ``/CN=alice``."""
    parts = []
    for attribute in name:
        key = OPENSSL_SHORT_NAMES.get(attribute.oid, attribute.oid.dotted_string)
        value = attribute.value
        parts.append(f"/{key}={value if isinstance(value, str) else value.decode()}")
    return "".join(parts)


def format_time(when: datetime) -> str:
    """``YYMMDDHHMMSSZ`` for years 1950-2049, ``YYYYMMDDHHMMSSZ`` otherwise (as in X.509)."""
    when = when.astimezone(UTC)
    if 1950 <= when.year < 2050:
        return when.strftime("%y%m%d%H%M%SZ")
    return when.strftime("%Y%m%d%H%M%SZ")


def parse_time(text: str, where: str) -> datetime:
    try:
        if len(text) == 13:
            when = datetime.strptime(text, "%y%m%d%H%M%SZ")
            if when.year >= 2050:  # UTCTime: 50..99 are 1950..1999
                when = when.replace(year=when.year - 100)
        elif len(text) == 15:
            when = datetime.strptime(text, "%Y%m%d%H%M%SZ")
        else:
            raise ValueError(text)
    except ValueError:
        raise PkiError(f"bad time {text!r}: expected YYMMDDHHMMSSZ", where) from None
    return when.replace(tzinfo=UTC)


def parse_index(text: str, where: str = "index.txt") -> tuple[IndexEntry, ...]:
    """Every line of an ``index.txt``; a malformed line is a :class:`PkiError` naming
    ``where:line``."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        entries.append(_parse_line(line, f"{where}:{number}"))
    return tuple(entries)


def _parse_line(line: str, where: str) -> IndexEntry:
    fields = line.split("\t")
    if len(fields) != 6:
        raise PkiError(f"expected 6 tab-separated fields, found {len(fields)}", where)
    status, expiry, revocation, serial_text, filename, subject = fields
    if status not in ("V", "R", "E"):
        raise PkiError(f"unknown status {status!r}: expected V, R or E", where)
    try:
        serial = int(serial_text, 16)
    except ValueError:
        raise PkiError(f"bad serial {serial_text!r}: expected hex digits", where) from None
    revoked_at = None
    reason = None
    if status == "R":
        date, _, reason_text = revocation.partition(",")
        if not date:
            raise PkiError("revoked certificate without a revocation date", where)
        revoked_at = parse_time(date, where)
        reason = reason_text or None
    elif revocation:
        raise PkiError(f"revocation date on a certificate of status {status}", where)
    return IndexEntry(cast(Status, status), parse_time(expiry, where), serial, subject,
                      revoked_at, reason, filename)


def format_index(entries: Iterable[IndexEntry]) -> str:
    """The ``index.txt`` text for ``entries``, one line each, in order."""
    lines = []
    for e in entries:
        revocation = ""
        if e.status == "R":
            if e.revoked_at is None:
                raise PkiError(f"revoked serial {e.serial_hex} has no revocation date")
            if e.reason is not None and e.reason not in REASONS:
                raise PkiError(f"unknown revocation reason {e.reason!r}")
            revocation = format_time(e.revoked_at) + (f",{e.reason}" if e.reason else "")
        lines.append("\t".join((e.status, format_time(e.expires), revocation, e.serial_hex,
                                e.filename, e.subject)))
    return "".join(line + "\n" for line in lines)


def entry_for(cert: x509.Certificate) -> IndexEntry:
    """A valid (``V``) entry for a certificate just issued."""
    return IndexEntry("V", cert.not_valid_after_utc, cert.serial_number,
                      subject_oneline(cert.subject))
