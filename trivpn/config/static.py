"""Static-key mode checks (``secret FILE [direction]``, no TLS), as OpenVPN 2.6 makes them.

OpenVPN src/openvpn/options.c, options_postprocess_verify_ce(): the TLS-only parameters are
refused without tls-client/tls-server; crypto.c, init_key_type(): without TLS only CBC
ciphers are allowed, and the 2.6 default cipher BF-CBC is refused by an OpenSSL 3 build
("Cipher BF-CBC not supported"), as it is by trivpn (no Blowfish).
"""

from __future__ import annotations

from collections.abc import Callable

from trivpn.config.directives import ParseState
from trivpn.config.errors import ConfigError

# trivpn directive -> the name OpenVPN's message uses (options.c, MUST_BE_UNDEF(parm))
TLS_ONLY: dict[str, str] = {
    "ca": "ca_file", "capath": "ca_path", "dh": "dh_file", "cert": "cert_file",
    "key": "priv_key_file", "pkcs12": "pkcs12_file", "tls-cipher": "cipher_list",
    "tls-ciphersuites": "cipher_list_tls13", "tls-cert-profile": "tls_cert_profile",
    "tls-verify": "tls_verify", "verify-x509-name": "verify_x509_name",
    "tls-timeout": "tls_timeout", "reneg-bytes": "renegotiate_bytes",
    "reneg-pkts": "renegotiate_packets", "reneg-sec": "renegotiate_seconds",
    "hand-window": "handshake_window", "tran-window": "transition_window",
    "tls-auth": "tls_auth_file", "tls-crypt": "tls_crypt_file",
    "tls-crypt-v2": "tls_crypt_v2_file", "push-peer-info": "push_peer_info",
    "tls-exit": "tls_exit", "crl-verify": "crl_file", "ns-cert-type": "ns_cert_type",
    "remote-cert-ku": "remote_cert_ku[0]", "remote-cert-eku": "remote_cert_eku",
}
STATIC_CIPHERS = ("AES-128-CBC", "AES-192-CBC", "AES-256-CBC")
_NOT_CBC = ("-GCM", "-CCM", "POLY1305", "-CFB", "-CFB1", "-CFB8", "-OFB", "-CTR")

ErrorAt = Callable[[ParseState, str, "str | None"], ConfigError]


def check_static(st: ParseState, error: ErrorAt) -> None:
    """Raise the ConfigError OpenVPN's refusal corresponds to, at the directive's line."""
    for name, parm in TLS_ONLY.items():
        if name in st.last_seen:
            raise error(st, f"Parameter {parm} can only be specified in TLS-mode, i.e. where "
                            "--tls-server or --tls-client is also specified.", name)
    cipher = st.opts.cipher
    if cipher is None:
        raise error(st, "Cipher BF-CBC not supported (OpenVPN 2.6's static-key default; "
                        "add 'cipher AES-256-CBC' on both sides)", "secret")
    upper = cipher.upper()
    if upper.endswith(_NOT_CBC):
        raise error(st, f"Cipher '{upper}' mode not supported (static-key mode needs a CBC "
                        "cipher, e.g. 'cipher AES-256-CBC')", "cipher")
    if upper not in STATIC_CIPHERS:
        raise error(st, f"cipher {cipher} is not supported by trivpn in static-key mode "
                        f"(supported: {', '.join(STATIC_CIPHERS)})", "cipher")
    if "mode" in st.last_seen and st.mode_server:
        raise error(st, "'mode server' needs TLS ('tls-server'), not 'secret'", "mode")
