"""``compat-mode MAJOR.MINOR.PATCH``: OpenVPN 2.6's defaults for a peer of that version or
older (src/openvpn/options.c, options_set_backwards_compatible_options(); the parse in
add_option()). What changes, each only when the config does not say it itself:

* before 2.3.7: ``tls-version-min 1.0`` (2.3.6 and older have TLS 1.0 only);
* before 2.4.0: no NCP, so ``cipher`` is also the fallback cipher (``data-ciphers-fallback``);
  without ``cipher`` that would be BF-CBC, which trivpn lacks and openvpn 2.6 on OpenSSL 3
  refuses too ("Unsupported cipher in --data-ciphers: BF-CBC");
* before 2.5.0: ``cipher`` is appended to ``data-ciphers``;
* before 2.6.0: compression is not restricted to stubs by default (allow-compression asym:
  compressed packets from the peer are accepted, and the algorithms are announced).
"""

from __future__ import annotations

import re
from dataclasses import replace

from trivpn.config.options import Options, TlsVersion

_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def parse_compat_version(text: str) -> int | None:
    """MAJOR*10000 + MINOR*100 + PATCH, as OpenVPN's ``sscanf("%u.%u.%u")`` reads it (text
    after the three numbers is ignored); None if it does not parse."""
    found = _VERSION.match(text)
    if found is None:
        return None
    major, minor, patch = (int(g) for g in found.groups())
    return major * 10000 + minor * 100 + patch


def need_compatibility_before(o: Options, version: int) -> bool:
    """OpenVPN's need_compatibility_before(): compat-mode is set and older than ``version``."""
    return o.compat_mode is not None and o.compat_mode < version


def apply_compat_mode(o: Options, seen: set[str]) -> Options:
    """The defaults compat-mode changes (compression is handled in finish_compression).
    ValueError with OpenVPN's words where the result is a cipher it cannot use."""
    if o.compat_mode is None:
        return o
    if need_compatibility_before(o, 20307) and "tls-version-min" not in seen:
        o = replace(o, tls_version_min=TlsVersion("1.0"))
    if need_compatibility_before(o, 20400):
        if o.cipher is None:
            raise ValueError("Unsupported cipher in --data-ciphers: BF-CBC (compat-mode "
                             "before 2.4.0 makes BF-CBC the cipher; set 'cipher', e.g. "
                             "AES-256-CBC, as the old peer is configured)")
        if o.data_ciphers_fallback is None:
            o = replace(o, data_ciphers_fallback=o.cipher.upper())
    if (o.cipher is not None and need_compatibility_before(o, 20500)
            and o.cipher.upper() not in (c.upper() for c in o.data_ciphers)):
        o = replace(o, data_ciphers=(*o.data_ciphers, o.cipher.upper()))
    return o
