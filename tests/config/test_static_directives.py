"""Static-key mode in the config (``secret FILE [direction]``, inline ``<secret>`` with
``key-direction``): who connects, and the refusals OpenVPN 2.6 makes (checked against the
binary in tests/interop/test_static_claims.py)."""

from __future__ import annotations

import re

import pytest

from trivpn.config import ConfigError, parse_config
from trivpn.protocol.statickey import StaticKey, format_static_key
from trivpn.sessionsetup import session_config

KEY_TEXT = format_static_key(StaticKey(bytes(range(256))))
WAITING = "dev tun\nsecret static.key 0\ncipher AES-256-CBC\nifconfig 198.18.9.1 198.18.9.2\n"
CONNECTING = WAITING.replace("0\n", "1\n", 1) + "remote 198.18.0.1 1194\n"


@pytest.mark.directive("secret")
def test_secret_without_remote_waits_for_its_peer() -> None:
    o = parse_config(WAITING, "s.conf")
    assert (o.tls_role, o.mode, o.role, o.pull) == ("server", "p2p", "client", False)
    assert o.secret is not None and o.key_direction == 0


@pytest.mark.directive("secret", "remote")
def test_secret_with_remote_connects() -> None:
    o = parse_config(CONNECTING, "s.conf")
    assert o.tls_role == "client" and o.key_direction == 1


@pytest.mark.directive("secret", "proto")
def test_secret_with_tcp_server_waits_even_with_a_remote() -> None:
    o = parse_config(CONNECTING + "proto tcp-server\n", "s.conf")
    assert o.tls_role == "server"


@pytest.mark.directive("secret", "key-direction")
def test_inline_secret_takes_its_direction_from_key_direction(tmp_path: object) -> None:
    text = (WAITING.replace("secret static.key 0\n", "")
            + f"key-direction 1\n<secret>\n{KEY_TEXT}</secret>\n")
    o = parse_config(text, "s.conf", read_files=True)
    assert o.key_direction == 1
    config = session_config(o, unix_time_offset=0.0)
    assert config.static_keys is not None
    assert config.static_keys.encrypt_cipher == StaticKey(bytes(range(256))).cipher(1)


@pytest.mark.directive("secret")
def test_secret_without_a_direction_is_bidirectional() -> None:
    o = parse_config(WAITING.replace("static.key 0", "static.key"), "s.conf")
    assert o.key_direction is None


@pytest.mark.directive("secret", "cipher")
@pytest.mark.parametrize(("extra", "message"), [
    ("", "Cipher BF-CBC not supported"),
    ("cipher AES-256-GCM\n", "Cipher 'AES-256-GCM' mode not supported"),
    ("cipher CHACHA20-POLY1305\n", "Cipher 'CHACHA20-POLY1305' mode not supported"),
    ("cipher BF-CBC\n", "cipher BF-CBC is not supported by trivpn in static-key mode"),
])
def test_static_key_mode_needs_a_cbc_cipher(extra: str, message: str) -> None:
    text = WAITING.replace("cipher AES-256-CBC\n", extra)
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(text, "s.conf")


@pytest.mark.directive("secret", "client")
@pytest.mark.parametrize("role", ["client", "tls-client", "tls-server"])
def test_secret_and_a_tls_role_are_exclusive(role: str) -> None:
    with pytest.raises(ConfigError, match="specify only one of --tls-server, --tls-client, "
                                          "or --secret"):
        parse_config(CONNECTING + f"{role}\n", "s.conf")


@pytest.mark.directive("secret", "ca", "tls-auth")
@pytest.mark.parametrize(("line", "parm"), [("ca ca.crt", "ca_file"),
                                            ("tls-auth ta.key 0", "tls_auth_file"),
                                            ("reneg-sec 60", "renegotiate_seconds")])
def test_tls_only_parameters_are_refused_in_static_key_mode(line: str, parm: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(
            f"s.conf:5: Parameter {parm} can only be specified in TLS-mode")):
        parse_config(WAITING + line + "\n", "s.conf")


@pytest.mark.directive("secret")
def test_a_bad_static_key_file_is_reported_at_the_secret_line(tmp_path: object) -> None:
    text = WAITING.replace("secret static.key 0\n", "<secret>\nnot a key\n</secret>\n")
    o = parse_config(text, "s.conf", read_files=True)
    with pytest.raises(ConfigError, match=r"s\.conf:2: .*bad static key"):
        session_config(o, unix_time_offset=0.0)
