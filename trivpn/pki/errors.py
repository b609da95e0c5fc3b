"""The PKI layer's one exception type."""

from __future__ import annotations


class PkiError(Exception):
    """A certificate, key or key file could not be made, read or written.

    ``what`` says what is wrong, ``where`` names the file (or other source) it concerns; the
    message renders as ``pki/ca.crt: no PEM certificate found``. Never carries key material.
    """

    def __init__(self, what: str, where: str = "") -> None:
        self.what = what
        self.where = where
        super().__init__(f"{where}: {what}" if where else what)


class AlreadyExistsError(PkiError):
    """The target file exists and overwriting was not asked for."""
