"""Settings the standard ``ssl`` module has no API for, applied through OpenSSL itself.

``tls-ciphersuites`` (``SSL_CTX_set_ciphersuites``) and a ``tls-groups`` list
(``SSL_CTX_set1_groups_list``) are what OpenVPN 2.6 calls in ssl_openssl.c
(tls_ctx_restrict_ciphers_tls13, tls_ctx_set_tls_groups). Python's ``ssl.SSLContext`` has no
setter for either, so trivpn calls them with ``ctypes`` on the ``SSL_CTX *`` the context wraps.

The technique, and the guard that keeps it from touching anything but that ``SSL_CTX``:

- The library: the ``libssl`` the interpreter's ``_ssl`` extension links against. Functions are
  looked up through a handle on ``_ssl`` itself, opened with ``RTLD_NOLOAD`` (so nothing new is
  ever loaded), which resolves them in ``_ssl``'s own dependencies; ``dladdr`` must then name a
  ``libssl`` file that /proc/self/maps shows mapped, and ``OpenSSL_version_num()`` must equal
  ``ssl.OPENSSL_VERSION_NUMBER`` (OpenSSL 3 or later). A ``_ssl`` built into the interpreter
  or statically linked without exported symbols makes the technique unavailable.
- The pointer: in CPython, ``_ssl._SSLContext`` stores its ``SSL_CTX *`` first, right after the
  object header (``PySSLContext.ctx``), at ``id(ctx) + object.__basicsize__``. Only CPython and
  real ``ssl.SSLContext`` instances are considered.
- The validation, before any setter runs: OpenSSL's view through that pointer must match the
  ``ssl`` module's view of the context — ``SSL_CTX_get_security_level`` equals
  ``ctx.security_level`` and ``SSL_CTX_get_options`` equals ``ctx.options``, also after a
  distinctive option bit is flipped through ``ctx.options`` (and flipped back). A pointer to any
  other ``SSL_CTX`` or to something else fails this.

When anything above does not hold (another Python implementation or build, a changed object
layout), :func:`native_context` returns ``None`` and the caller refuses the directive with an
error naming it — the setting is never silently dropped.
"""

from __future__ import annotations

import ctypes
import os
import ssl
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

_SSL_CTRL_SET_GROUPS_LIST = 92  # openssl/ssl.h; SSL_CTX_set1_groups_list is this ctrl.
# Flipped during validation: non-zero in every OpenSSL, and harmless while flipped.
_PROBE_OPTION = ssl.OP_CIPHER_SERVER_PREFERENCE


class NativeTlsError(ValueError):
    """OpenSSL refused a setting; the message is OpenSSL's own error text."""


@dataclass(frozen=True)
class _Lib:
    path: str
    dll: ctypes.CDLL


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _mapped_files() -> set[str]:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            fields = [line.split(maxsplit=5) for line in maps]
    except OSError:
        return set()
    return {os.path.realpath(f[5].strip()) for f in fields if len(f) == 6}


def _providing_file(symbol: Any) -> str | None:
    """The file (as dladdr reports it) that defines a resolved symbol."""
    info = _DlInfo()
    try:
        dladdr = ctypes.CDLL(None).dladdr
    except (OSError, AttributeError):
        return None
    address = ctypes.cast(symbol, ctypes.c_void_p)
    if not dladdr(address, ctypes.byref(info)) or not info.dli_fname:
        return None
    name: bytes = info.dli_fname
    return os.path.realpath(name.decode(errors="replace"))


@cache
def _library() -> _Lib | None:
    if sys.implementation.name != "cpython" or not hasattr(os, "RTLD_NOLOAD"):
        return None
    # The extension module the ssl package wraps.
    ssl_module_file = getattr(getattr(ssl, "_ssl", None), "__file__", None)
    if ssl_module_file is None:  # built into the interpreter: no handle of its own
        return None
    try:
        # RTLD_NOLOAD: only a handle on the already-loaded _ssl. Symbols looked up through it
        # come from _ssl and its dependencies, i.e. from the libssl _ssl was linked against.
        dll = ctypes.CDLL(ssl_module_file, mode=os.RTLD_NOLOAD | os.RTLD_NOW)
        version = dll.OpenSSL_version_num
        path = _providing_file(dll.SSL_CTX_set_ciphersuites)
    except (OSError, AttributeError):
        return None
    if path is None or not os.path.basename(path).startswith("libssl")\
            or path not in _mapped_files():
        return None
    version.restype, version.argtypes = ctypes.c_ulong, []
    if version() != ssl.OPENSSL_VERSION_NUMBER or version() < 0x30000000:
        return None
    signatures: dict[str, tuple[type | None, list[type]]] = {
        "SSL_CTX_get_options": (ctypes.c_uint64, [ctypes.c_void_p]),
        "SSL_CTX_get_security_level": (ctypes.c_int, [ctypes.c_void_p]),
        "SSL_CTX_set_ciphersuites": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_char_p]),
        "SSL_CTX_ctrl": (ctypes.c_long, [ctypes.c_void_p, ctypes.c_int, ctypes.c_long,
                                         ctypes.c_void_p]),
        "OPENSSL_cipher_name": (ctypes.c_char_p, [ctypes.c_char_p]),
        "ERR_get_error_all": (ctypes.c_ulong, [ctypes.c_void_p, ctypes.c_void_p,
                                               ctypes.c_void_p, ctypes.POINTER(ctypes.c_char_p),
                                               ctypes.c_void_p]),
        "ERR_error_string_n": (None, [ctypes.c_ulong, ctypes.c_char_p, ctypes.c_size_t]),
        "ERR_clear_error": (None, []),
        "SSL_get_SSL_CTX": (ctypes.c_void_p, [ctypes.c_void_p]),
        "SSL_CTX_set_verify": (None, [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]),
        "X509_STORE_CTX_get_error": (ctypes.c_int, [ctypes.c_void_p]),
        "SSL_is_server": (ctypes.c_int, [ctypes.c_void_p]),
        "SSL_export_keying_material": (ctypes.c_int, [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
            ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]),
    }
    try:
        for name, (restype, argtypes) in signatures.items():
            func = getattr(dll, name)
            func.restype, func.argtypes = restype, argtypes
    except AttributeError:
        return None
    return _Lib(path, dll)


def _pointer_of(ctx: object) -> int | None:
    if not isinstance(ctx, ssl.SSLContext):
        return None
    pointer_size = ctypes.sizeof(ctypes.c_void_p)
    if type(ctx).__basicsize__ < object.__basicsize__ + pointer_size:
        return None
    value = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    return value or None


def _matches(lib: _Lib, pointer: int, ctx: ssl.SSLContext) -> bool:
    """OpenSSL's view through ``pointer`` is ``ctx`` (see the module docstring)."""
    dll = lib.dll
    if dll.SSL_CTX_get_security_level(pointer) != ctx.security_level:
        return False
    original = ctx.options
    if dll.SSL_CTX_get_options(pointer) != original:
        return False
    try:
        ctx.options = original ^ _PROBE_OPTION
        flipped: bool = dll.SSL_CTX_get_options(pointer) == original ^ _PROBE_OPTION
    finally:
        ctx.options = original
    restored: bool = dll.SSL_CTX_get_options(pointer) == original
    return flipped and restored


_SSL_VERIFY_PEER = 0x01
_SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x02
_X509_V_ERR_UNABLE_TO_GET_CRL = 3
_VERIFY_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


def _accept_chain(preverify_ok: int, store: int | None) -> int:
    return 1


class NativeContext:
    """A validated handle on the ``SSL_CTX`` behind one ``ssl.SSLContext``.

    Holds a reference to the context, so the pointer stays valid while this object lives.
    """

    def __init__(self, lib: _Lib, pointer: int, ctx: ssl.SSLContext) -> None:
        self._lib = lib
        self._pointer = pointer
        self.context = ctx

    def set_ciphersuites(self, suites: str) -> None:
        """``SSL_CTX_set_ciphersuites``: the TLS 1.3 suites, OpenSSL names, colon-separated."""
        self._check(self._lib.dll.SSL_CTX_set_ciphersuites(self._pointer, suites.encode()))

    def set_groups_list(self, groups: str) -> None:
        """``SSL_CTX_set1_groups_list``: the key-exchange groups, colon-separated."""
        self._check(self._lib.dll.SSL_CTX_ctrl(self._pointer, _SSL_CTRL_SET_GROUPS_LIST, 0,
                                                ctypes.c_char_p(groups.encode())))

    def _check(self, result: int) -> None:
        _check(self._lib, result)

    def skip_chain_verification(self, *, require_peer_cert: bool) -> None:
        """Ask for the peer's certificate but accept any chain (``SSL_CTX_set_verify`` with a
        callback that returns 1): OpenVPN's peer-fingerprint mode without a CA
        (ssl_verify_openssl.c, verify_callback with verify_hash_no_ca), where the certificate
        is then judged by its fingerprint. The callback lives as long as the context."""
        self._set_verify(_accept_chain, require_peer_cert)

    def ignore_missing_crl(self, *, require_peer_cert: bool) -> None:
        """Verify the chain, but let a missing CRL pass (OpenVPN's verify_callback logs
        X509_V_ERR_UNABLE_TO_GET_CRL as a warning and goes on): with ``capath``, whose CRL
        checks cover the whole chain."""
        get_error = self._lib.dll.X509_STORE_CTX_get_error

        def callback(preverify_ok: int, store: int | None) -> int:
            if preverify_ok:
                return 1
            return 1 if store and get_error(store) == _X509_V_ERR_UNABLE_TO_GET_CRL else 0

        self._set_verify(callback, require_peer_cert)

    def _set_verify(self, function: Callable[[int, int | None], int],
                    require_peer_cert: bool) -> None:
        callback = _VERIFY_CALLBACK(function)
        mode = _SSL_VERIFY_PEER | (_SSL_VERIFY_FAIL_IF_NO_PEER_CERT if require_peer_cert else 0)
        self._lib.dll.SSL_CTX_set_verify(self._pointer, mode,
                                         ctypes.cast(callback, ctypes.c_void_p))
        self.context.__dict__["_trivpn_verify_callback"] = callback


def _check(lib: _Lib, result: int) -> None:
    """Raise OpenSSL's queued errors unless ``result`` is 1."""
    dll = lib.dll
    if result == 1:
        return
    messages = []
    data = ctypes.c_char_p()
    while (code := dll.ERR_get_error_all(None, None, None, ctypes.byref(data), None)) != 0:
        buf = ctypes.create_string_buffer(256)
        dll.ERR_error_string_n(code, buf, len(buf))
        detail = (data.value or b"").decode(errors="replace")
        messages.append(buf.value.decode(errors="replace") + (f":{detail}" if detail else ""))
    dll.ERR_clear_error()
    raise NativeTlsError("; ".join(messages) or "OpenSSL refused the setting")


def native_context(ctx: object) -> NativeContext | None:
    """A handle on ``ctx``'s ``SSL_CTX``, or None when it cannot be obtained and validated."""
    lib = _library()
    if lib is None:
        return None
    pointer = _pointer_of(ctx)
    if pointer is None or not isinstance(ctx, ssl.SSLContext) or not _matches(lib, pointer, ctx):
        return None
    return NativeContext(lib, pointer, ctx)


# -- RFC 5705 keying material exporter (TLS-EKM) ----------------------------------------------


class KeyingMaterialExporter:
    """``SSL_export_keying_material`` on the ``SSL *`` behind an ``ssl.SSLObject`` of one
    validated context (OpenVPN 2.6 ``ssl_openssl.c``, ``key_state_export_keying_material``).

    The pointer: ``SSLObject._sslobj`` is CPython's ``_ssl._SSLSocket`` (``PySSLSocket``):
    after the object header come ``PyObject *Socket``, ``SSL *ssl`` and ``PySSLContext *ctx``.
    Before use, the word after ``ssl`` must be the very context object the SSLObject reports,
    ``SSL_get_SSL_CTX`` on ``ssl`` must return the validated ``SSL_CTX *`` of that context
    (:func:`native_context`), and ``SSL_is_server`` must agree with ``server_side``. Anything
    else raises :class:`NativeTlsError`; nothing is read through an unvalidated pointer.
    """

    def __init__(self, native: NativeContext) -> None:
        self._native = native

    def _ssl_pointer(self, obj: ssl.SSLObject) -> int:
        inner = getattr(obj, "_sslobj", None)
        word = ctypes.sizeof(ctypes.c_void_p)
        kind = type(inner)
        if (inner is None or (kind.__module__, kind.__qualname__) != ("_ssl", "_SSLSocket")
                or kind.__basicsize__ < object.__basicsize__ + 3 * word
                or obj.context is not self._native.context):
            raise NativeTlsError("not an SSL object of the validated context")
        base = id(inner) + object.__basicsize__
        pointer = ctypes.c_void_p.from_address(base + word).value
        owner = ctypes.c_void_p.from_address(base + 2 * word).value
        dll = self._native._lib.dll
        if (not pointer or owner != id(self._native.context)
                or dll.SSL_get_SSL_CTX(pointer) != self._native._pointer
                or bool(dll.SSL_is_server(pointer)) != obj.server_side):
            raise NativeTlsError("the SSL object's OpenSSL handle could not be validated")
        return pointer

    def __call__(self, obj: ssl.SSLObject, label: bytes, length: int) -> bytes:
        """``length`` bytes of keying material for ``label``, no context (RFC 5705)."""
        pointer = self._ssl_pointer(obj)
        out = ctypes.create_string_buffer(length)
        _check(self._native._lib, self._native._lib.dll.SSL_export_keying_material(
            pointer, out, length, label, len(label), None, 0, 0))
        return out.raw


def keying_material_exporter(ctx: object) -> KeyingMaterialExporter | None:
    """An exporter for SSL objects of ``ctx``, or None when the technique is unavailable."""
    native = native_context(ctx)
    return KeyingMaterialExporter(native) if native is not None else None


def openssl_cipher_name(standard_name: str) -> str | None:
    """OpenSSL's name for an RFC/IANA suite name (``OPENSSL_cipher_name``), None if unknown or
    the library is unavailable. Used by tests to check :data:`IANA_TLS_CIPHERS`."""
    lib = _library()
    if lib is None:
        return None
    name = lib.dll.OPENSSL_cipher_name(standard_name.encode())
    return None if name in (None, b"(NONE)") else bytes(name).decode()


# tls-cipher accepts IANA names written with dashes (TLS-ECDHE-...); OpenVPN translates them to
# OpenSSL names before SSL_CTX_set_cipher_list (ssl_openssl.c convert_tls_list_to_openssl). This
# table is OpenSSL's own IANA↔OpenSSL mapping (`openssl ciphers -stdname`) for the TLS ≤ 1.2
# suites OpenVPN 2.6 translates that OpenSSL 3 still implements; for the others OpenSSL ignores
# the name either way. Names are matched exactly (case-sensitive), as OpenVPN does.
IANA_TLS_CIPHERS: dict[str, str] = dict((
    ("TLS-DHE-DSS-WITH-AES-128-CBC-SHA", "DHE-DSS-AES128-SHA"),
    ("TLS-DHE-DSS-WITH-AES-128-CBC-SHA256", "DHE-DSS-AES128-SHA256"),
    ("TLS-DHE-DSS-WITH-AES-128-GCM-SHA256", "DHE-DSS-AES128-GCM-SHA256"),
    ("TLS-DHE-DSS-WITH-AES-256-CBC-SHA", "DHE-DSS-AES256-SHA"),
    ("TLS-DHE-DSS-WITH-AES-256-CBC-SHA256", "DHE-DSS-AES256-SHA256"),
    ("TLS-DHE-DSS-WITH-AES-256-GCM-SHA384", "DHE-DSS-AES256-GCM-SHA384"),
    ("TLS-DHE-DSS-WITH-CAMELLIA-128-CBC-SHA", "DHE-DSS-CAMELLIA128-SHA"),
    ("TLS-DHE-DSS-WITH-CAMELLIA-128-CBC-SHA256", "DHE-DSS-CAMELLIA128-SHA256"),
    ("TLS-DHE-DSS-WITH-CAMELLIA-256-CBC-SHA", "DHE-DSS-CAMELLIA256-SHA"),
    ("TLS-DHE-DSS-WITH-CAMELLIA-256-CBC-SHA256", "DHE-DSS-CAMELLIA256-SHA256"),
    ("TLS-DHE-RSA-WITH-AES-128-CBC-SHA", "DHE-RSA-AES128-SHA"),
    ("TLS-DHE-RSA-WITH-AES-128-CBC-SHA256", "DHE-RSA-AES128-SHA256"),
    ("TLS-DHE-RSA-WITH-AES-128-GCM-SHA256", "DHE-RSA-AES128-GCM-SHA256"),
    ("TLS-DHE-RSA-WITH-AES-256-CBC-SHA", "DHE-RSA-AES256-SHA"),
    ("TLS-DHE-RSA-WITH-AES-256-CBC-SHA256", "DHE-RSA-AES256-SHA256"),
    ("TLS-DHE-RSA-WITH-AES-256-GCM-SHA384", "DHE-RSA-AES256-GCM-SHA384"),
    ("TLS-DHE-RSA-WITH-CAMELLIA-128-CBC-SHA", "DHE-RSA-CAMELLIA128-SHA"),
    ("TLS-DHE-RSA-WITH-CAMELLIA-128-CBC-SHA256", "DHE-RSA-CAMELLIA128-SHA256"),
    ("TLS-DHE-RSA-WITH-CAMELLIA-256-CBC-SHA", "DHE-RSA-CAMELLIA256-SHA"),
    ("TLS-DHE-RSA-WITH-CAMELLIA-256-CBC-SHA256", "DHE-RSA-CAMELLIA256-SHA256"),
    ("TLS-DHE-RSA-WITH-CHACHA20-POLY1305-SHA256", "DHE-RSA-CHACHA20-POLY1305"),
    ("TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA", "ECDHE-ECDSA-AES128-SHA"),
    ("TLS-ECDHE-ECDSA-WITH-AES-128-CBC-SHA256", "ECDHE-ECDSA-AES128-SHA256"),
    ("TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    ("TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA", "ECDHE-ECDSA-AES256-SHA"),
    ("TLS-ECDHE-ECDSA-WITH-AES-256-CBC-SHA384", "ECDHE-ECDSA-AES256-SHA384"),
    ("TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"),
    ("TLS-ECDHE-ECDSA-WITH-CAMELLIA-128-CBC-SHA256", "ECDHE-ECDSA-CAMELLIA128-SHA256"),
    ("TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"),
    ("TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA", "ECDHE-RSA-AES128-SHA"),
    ("TLS-ECDHE-RSA-WITH-AES-128-CBC-SHA256", "ECDHE-RSA-AES128-SHA256"),
    ("TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
    ("TLS-ECDHE-RSA-WITH-AES-256-CBC-SHA", "ECDHE-RSA-AES256-SHA"),
    ("TLS-ECDHE-RSA-WITH-AES-256-CBC-SHA384", "ECDHE-RSA-AES256-SHA384"),
    ("TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384"),
    ("TLS-ECDHE-RSA-WITH-CAMELLIA-128-CBC-SHA256", "ECDHE-RSA-CAMELLIA128-SHA256"),
    ("TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"),
    ("TLS-PSK-WITH-AES-128-CBC-SHA", "PSK-AES128-CBC-SHA"),
    ("TLS-PSK-WITH-AES-256-CBC-SHA", "PSK-AES256-CBC-SHA"),
    ("TLS-RSA-WITH-AES-128-CBC-SHA", "AES128-SHA"),
    ("TLS-RSA-WITH-AES-128-CBC-SHA256", "AES128-SHA256"),
    ("TLS-RSA-WITH-AES-128-GCM-SHA256", "AES128-GCM-SHA256"),
    ("TLS-RSA-WITH-AES-256-CBC-SHA", "AES256-SHA"),
    ("TLS-RSA-WITH-AES-256-CBC-SHA256", "AES256-SHA256"),
    ("TLS-RSA-WITH-AES-256-GCM-SHA384", "AES256-GCM-SHA384"),
    ("TLS-RSA-WITH-CAMELLIA-128-CBC-SHA", "CAMELLIA128-SHA"),
    ("TLS-RSA-WITH-CAMELLIA-128-CBC-SHA256", "CAMELLIA128-SHA256"),
    ("TLS-RSA-WITH-CAMELLIA-256-CBC-SHA", "CAMELLIA256-SHA"),
    ("TLS-RSA-WITH-CAMELLIA-256-CBC-SHA256", "CAMELLIA256-SHA256"),
    ("TLS-RSA-WITH-NULL-MD5", "NULL-MD5"),
    ("TLS-RSA-WITH-NULL-SHA", "NULL-SHA"),
    ("TLS-RSA-WITH-NULL-SHA256", "NULL-SHA256"),
    ("TLS-SRP-SHA-DSS-WITH-AES-128-CBC-SHA", "SRP-DSS-AES-128-CBC-SHA"),
    ("TLS-SRP-SHA-DSS-WITH-AES-256-CBC-SHA", "SRP-DSS-AES-256-CBC-SHA"),
    ("TLS-SRP-SHA-RSA-WITH-AES-128-CBC-SHA", "SRP-RSA-AES-128-CBC-SHA"),
    ("TLS-SRP-SHA-RSA-WITH-AES-256-CBC-SHA", "SRP-RSA-AES-256-CBC-SHA"),
))
