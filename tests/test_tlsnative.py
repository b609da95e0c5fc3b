"""tls-ciphersuites, tls-groups lists and IANA tls-cipher names, applied through the SSL_CTX the
``ssl`` module wraps (trivpn/tlsnative.py), and the guard that refuses them when that SSL_CTX
cannot be reached and validated."""

from __future__ import annotations

import os
import ssl

import pytest

from tests.protocol.sessionkit import make_test_pki
from trivpn import tlscontext, tlsnative
from trivpn.pki.certs import certificate_pem
from trivpn.pki.keys import private_key_pem
from trivpn.tlscontext import TlsContextError, build_context


def _context(server_side: bool, **settings: str | None) -> ssl.SSLContext:
    pki = make_test_pki()
    cred = pki.server if server_side else pki.client
    return build_context(server_side=server_side, ca_pem=certificate_pem(pki.ca.cert).decode(),
                         cert_pem=certificate_pem(cred.cert).decode(),
                         key_pem=private_key_pem(cred.key).decode(),
                         **settings)  # type: ignore[arg-type]


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[str, str] | None:
    """(protocol, cipher) the two contexts agree on in memory, or None when the handshake
    fails."""
    bios = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx.wrap_bio(bios[0], bios[1], server_side=True)
    client = client_ctx.wrap_bio(bios[2], bios[3], server_side=False)
    done = {id(server): False, id(client): False}
    for _ in range(20):
        for conn, out, peer_in in ((client, bios[3], bios[0]), (server, bios[1], bios[2])):
            if not done[id(conn)]:
                try:
                    conn.do_handshake()
                    done[id(conn)] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError:
                    return None
            peer_in.write(out.read())
        if all(done.values()):
            cipher = client.cipher()
            assert cipher is not None
            return cipher[1], cipher[0]
    return None


def test_the_ssl_ctx_is_reached_and_validated_on_this_interpreter():
    """If this fails, a Python/OpenSSL upgrade broke the technique: tls-ciphersuites and
    tls-groups lists are then refused with a config error (see the next tests)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    native = tlsnative.native_context(ctx)
    assert native is not None
    lib = tlsnative._library()
    assert lib is not None and os.path.basename(lib.path).startswith("libssl")
    with open("/proc/self/maps", encoding="utf-8") as maps:  # the one _ssl uses, no other
        assert {os.path.basename(line.split()[-1]) for line in maps if "/libssl" in line} == \
            {os.path.basename(lib.path)}
    native.set_ciphersuites("TLS_CHACHA20_POLY1305_SHA256")
    assert [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"] == \
        ["TLS_CHACHA20_POLY1305_SHA256"]
    assert ctx.options == ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).options  # probe undone


def test_the_guard_refuses_another_contexts_pointer_and_non_contexts(monkeypatch):
    lib = tlsnative._library()
    assert lib is not None
    mine, other = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    other_pointer = tlsnative._pointer_of(other)
    assert other_pointer is not None
    assert tlsnative._matches(lib, other_pointer, other)
    assert not tlsnative._matches(lib, other_pointer, mine)
    monkeypatch.setattr(tlsnative, "_pointer_of", lambda ctx: other_pointer)
    assert tlsnative.native_context(mine) is None
    monkeypatch.undo()
    assert tlsnative.native_context(object()) is None
    assert tlsnative._pointer_of(object()) is None


@pytest.mark.directive("tls-ciphersuites", "tls-groups")
def test_without_the_native_path_the_directives_are_refused_not_ignored(monkeypatch):
    monkeypatch.setattr(tlscontext, "native_context", lambda ctx: None)
    with pytest.raises(TlsContextError, match="tls-ciphersuites cannot be applied") as err:
        _context(True, tls_ciphersuites="TLS_AES_256_GCM_SHA384")
    assert err.value.directive == "tls-ciphersuites"
    with pytest.raises(TlsContextError, match="tls-groups cannot be applied") as err:
        _context(True, tls_groups="X25519:P-256")
    assert err.value.directive == "tls-groups"
    # One group still goes through the ssl module's own setter.
    server = _context(True, tls_groups="secp384r1")
    assert _handshake(server, _context(False, tls_groups="secp384r1")) is not None
    assert _handshake(server, _context(False, tls_groups="X25519")) is None


@pytest.mark.directive("tls-ciphersuites")
def test_tls_ciphersuites_restricts_the_tls13_suites_a_handshake_can_use():
    server = _context(True, tls_ciphersuites="TLS_CHACHA20_POLY1305_SHA256")
    assert _handshake(server, _context(False, tls_ciphersuites="TLS_AES_256_GCM_SHA384")) is None
    # OpenVPN's dashed spelling is accepted too (convert_tls13_list_to_openssl).
    shared = _context(False,
                      tls_ciphersuites="TLS-AES-256-GCM-SHA384:TLS-CHACHA20-POLY1305-SHA256")
    assert _handshake(server, shared) == ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256")


@pytest.mark.directive("tls-groups")
def test_tls_groups_list_restricts_the_key_exchange_groups():
    server = _context(True, tls_groups="X25519:P-256")
    assert _handshake(server, _context(False, tls_groups="secp384r1")) is None
    assert _handshake(server, _context(False, tls_groups="secp384r1:secp256r1")) is not None


@pytest.mark.directive("tls-ciphersuites", "tls-groups")
@pytest.mark.parametrize(("setting", "value", "message"), [
    ("tls_ciphersuites", "NOSUCH", "Failed to set restricted TLS 1.3 cipher list: NOSUCH"),
    ("tls_groups", "X25519:nosuch", "group 'nosuch' cannot be set"),
])
def test_openssl_refusals_are_errors_naming_the_directive(setting, value, message):
    with pytest.raises(TlsContextError, match=message) as err:
        _context(True, **{setting: value})
    assert err.value.directive == setting.replace("_", "-")


@pytest.mark.directive("tls-cipher")
def test_iana_tls_cipher_names_are_translated_to_openssls():
    server = _context(True, tls_cipher="TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256:NOSUCH",
                      tls_version_max="1.2")
    assert [c["name"] for c in server.get_ciphers() if c["protocol"] == "TLSv1.2"] == \
        ["ECDHE-ECDSA-AES128-GCM-SHA256"]
    # Case matters, as in OpenVPN: a lower-case IANA name is not translated.
    with pytest.raises(TlsContextError, match="Failed to set restricted TLS cipher list"):
        _context(True, tls_cipher="tls-ecdhe-ecdsa-with-aes-128-gcm-sha256")


def test_the_iana_table_is_openssls_own_mapping():
    for iana, openssl_name in tlsnative.IANA_TLS_CIPHERS.items():
        assert tlsnative.openssl_cipher_name(iana.replace("-", "_")) == openssl_name, iana
