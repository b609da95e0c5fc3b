"""Bad input fails with a ConfigError naming the file, the line and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.helpers import CLIENT_BASE, SERVER_BASE
from trivpn.config import ConfigError, parse_config

# CLIENT_BASE and SERVER_BASE are 7 lines long: appended directives start on line 8.
BAD_CLIENT_LINES = [
    ("foo bar", "client.conf:8: unknown directive 'foo'"),
    ("Port 1194", "client.conf:8: unknown directive 'Port'"),
    ("port 1194 1195", "client.conf:8: 'port' takes 1 argument, got 2"),
    ("port", "client.conf:8: 'port' takes 1 argument, got 0"),
    ("port abc", "client.conf:8: 'port' expects a number from 1 to 65535, got 'abc'"),
    ("port 0", "client.conf:8: 'port' expects a number from 1 to 65535, got '0'"),
    ("port 65536", "client.conf:8: 'port' expects a number from 1 to 65535, got '65536'"),
    ("persist-key yes", "client.conf:8: 'persist-key' takes no arguments, got 1"),
    ("keepalive 10", "client.conf:8: 'keepalive' takes 2 arguments, got 1"),
    ("status a b c", "client.conf:8: 'status' takes 1 or 2 arguments, got 3"),
    ("remote a 1 udp x", "client.conf:8: 'remote' takes 1 to 3 arguments, got 4"),
    ("ignore-unknown-option", "client.conf:8: 'ignore-unknown-option' takes at least 1 "
                              "argument, got 0"),
    ("remote b 99999", "client.conf:8: 'remote' expects a number from 1 to 65535, "
                       "got '99999'"),
    ("remote b 1194 sctp", "client.conf:8: 'remote' expects one of udp, udp4, udp6, tcp, tcp4, "
                           "tcp6, tcp-server, tcp4-server, tcp6-server, tcp-client, "
                           "tcp4-client, tcp6-client, got 'sctp'"),
    ("verb 12", "client.conf:8: 'verb' expects a number from 0 to 11, got '12'"),
    ("verb -1", "client.conf:8: 'verb' expects a number from 0 to 11, got '-1'"),
    ("hand-window 0", "client.conf:8: 'hand-window' expects a number of at least 1, got '0'"),
    ("topology star", "client.conf:8: 'topology' expects one of net30, subnet, p2p, "
                      "got 'star'"),
    ("key-direction 2", "client.conf:8: 'key-direction' expects one of 0, 1, got '2'"),
    ("tls-auth ta.key 2", "client.conf:8: 'tls-auth' expects one of 0, 1, got '2'"),
    ("dev-type tunnel", "client.conf:8: 'dev-type' expects one of tun, tap, got 'tunnel'"),
    ("data-ciphers AES-256-GCM:AES-256-CFB",
     "client.conf:8: 'data-ciphers': cipher 'AES-256-CFB' is not supported by trivpn "
     "(supported: AES-128-CBC, AES-128-GCM, AES-192-CBC, AES-192-GCM, AES-256-CBC, "
     "AES-256-GCM, CHACHA20-POLY1305)"),
    ("auth SHA3", "client.conf:8: 'auth' expects a digest such as SHA1, SHA256 or SHA512, "
                  "got 'SHA3'"),
    ("route 198.18.101.0 255.0.255.0", "client.conf:8: 'route' expects a netmask such as "
                                   "255.255.255.0, got '255.0.255.0'"),
    ("redirect-gateway def1 everything", "client.conf:8: 'redirect-gateway' flag 'everything' "
     "is unknown (expected local, autolocal, def1, bypass-dhcp, bypass-dns, block-local, "
     "ipv6, !ipv4)"),
    ("comp-lzo yes\nallow-compression no",
     "client.conf:9: 'allow-compression no' conflicts with the compression enabled above "
     "(OpenVPN 2.6 refuses this too)"),
    ("allow-compression no\ncomp-lzo yes",
     "client.conf:9: compression ('comp-lzo yes') is not allowed with 'allow-compression no' "
     "(OpenVPN 2.6 refuses this too)"),
    ("allow-compression no\ncompress lz4-v2",
     "client.conf:9: compression ('compress lz4-v2') is not allowed with "
     "'allow-compression no' (OpenVPN 2.6 refuses this too)"),
    ("allow-compression no\nallow-compression yes",
     "client.conf:9: cannot set 'allow-compression yes' after 'allow-compression no' "
     "(OpenVPN 2.6 refuses this too)"),
    ("fragment 60", "client.conf:8: 'fragment' needs to be at least 68, got 60 "
                    "(OpenVPN 2.6 refuses this too)"),
    ("fragment 500 foo", "client.conf:8: unknown parameter to 'fragment': 'foo' (expected "
                         "'mtu'; OpenVPN 2.6 refuses this too)"),
    ("proto tcp\nfragment 500", "client.conf:9: 'fragment' can only be used with 'proto udp' "
                                "(OpenVPN 2.6 refuses this too)"),
    ("comp-lzo bogus", "client.conf:8: 'comp-lzo' expects one of yes, no, adaptive, got 'bogus'"),
    ("compress zstd", "client.conf:8: 'compress' expects one of stub, stub-v2, lzo, lz4, lz4-v2, "
                      "got 'zstd'"),
    ("allow-compression maybe",
     "client.conf:8: 'allow-compression' expects one of yes, no, asym, got 'maybe'"),
    ("<ca>\nnot closed\n", "client.conf:8: inline block <ca> has no end tag </ca>"),
    ("<status>\nx\n</status>", "client.conf:8: 'status' cannot be given as an inline "
                               "<status> block"),
    ("<connection>\nproto udp\n</connection>",
     "client.conf:8: each <connection> block must contain a 'remote' directive"),
    ('push "route 198.18.101.0 255.255.0.0,ping 1"',
     "client.conf:8: 'push' option must not contain ',': 'route 198.18.101.0 255.255.0.0,ping 1' "
     "(write one 'push' line per option)"),
    ('x "unterminated', 'client.conf:8: unterminated " quote'),
    ("tls-crypt tc.key\ntls-auth ta.key 1",
     "client.conf:9: 'tls-auth' and 'tls-crypt' cannot be used together"),
    ("server 198.18.8.0 255.255.255.0",
     "client.conf:8: 'client' and 'server' cannot be used together"),
    ("proto tcp-server",
     "client.conf:8: a client cannot use 'proto tcp-server' (use udp or tcp-client)"),
    ("a" * 255, "client.conf:8: line is longer than 254 bytes (OpenVPN's maximum line length)"),
]

UNSUPPORTED = [
    "engine dynamic",
    "pkcs11-providers p.so",
]


@pytest.mark.directive("allow-compression")
@pytest.mark.parametrize(("extra", "message"), BAD_CLIENT_LINES)
def test_bad_client_input_is_reported_with_file_and_line(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(CLIENT_BASE + extra + "\n", "client.conf")
    assert str(info.value) == message


@pytest.mark.parametrize("extra", UNSUPPORTED)
def test_unsupported_directive_is_an_error_not_silently_accepted(extra: str) -> None:
    name = extra.split(maxsplit=1)[0]
    with pytest.raises(ConfigError) as info:
        parse_config(CLIENT_BASE + extra + "\n", "client.conf")
    assert str(info.value) == f"client.conf:8: '{name}' is not supported by trivpn yet"


BAD_SERVER_LINES = [
    ("server 198.18.8.1 255.255.255.0",
     "server.conf:8: 'server' network 198.18.8.1 is not the first address of a 255.255.255.0 "
     "subnet (did you mean 198.18.8.0?)"),
    ("server 198.18.8.0 255.255.255.0 pool",
     "server.conf:8: 'server' expects 'nopool' as third argument, got 'pool'"),
    ("server 198.18.8.0 255.255.255.252",
     "server.conf:8: 'server' with dev tun needs a /29 or larger subnet, got /30"),
    ("server 198.18.0.0 255.254.0.0",
     "server.conf:8: 'server' subnet /15 is too large (at most /16 host addresses are "
     "allowed)"),
    ("keepalive 10 15", "server.conf:8: the second 'keepalive' parameter (restart timeout 15) "
                        "must be at least twice the first (ping interval 10); 'keepalive 10 60' "
                        "is recommended"),
    ("keepalive 0 60", "server.conf:8: 'keepalive' parameters must be greater than 0"),
    ("keepalive 10 60\nping 5", "server.conf:9: 'keepalive' conflicts with 'ping' (keepalive "
                                "already sets ping and ping-restart)"),
    ("proto tcp-client",
     "server.conf:8: a server cannot use 'proto tcp-client' (use udp or tcp-server)"),
    ("auth-user-pass", "server.conf:8: 'auth-user-pass' is a client option"),
    ("client", "server.conf:8: 'client' and 'server' cannot be used together"),
    ("tls-client", "server.conf:8: a config can be a TLS client or a TLS server, not both "
                   "('client'/'tls-client' with 'server'/'tls-server')"),
    ("connect-freq-initial 100", "server.conf:8: 'connect-freq-initial' takes 2 arguments, "
                                 "got 1"),
    ("connect-freq-initial 100 -1", "server.conf:8: 'connect-freq-initial' expects a number "
                                    "of at least 0, got '-1'"),
    ("connect-freq-initial 1e3 10", "server.conf:8: 'connect-freq-initial' expects a number "
                                    "of at least 0, got '1e3'"),
    ("connect-freq 10 ten", "server.conf:8: 'connect-freq' expects a number of at least 0, "
                            "got 'ten'"),
    ("connect-freq 10 5\nproto tcp-server",
     "server.conf:8: 'connect-freq' only works with 'proto udp' (OpenVPN 2.6 refuses it for "
     "TCP too); use 'max-clients' instead"),
]


def test_connect_freq_in_a_client_config_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(CLIENT_BASE + "connect-freq 10 5\n", "client.conf")
    assert str(info.value) == ("client.conf:8: 'connect-freq' needs 'mode server' "
                               "(or the 'server' directive)")


@pytest.mark.parametrize(("extra", "message"), BAD_SERVER_LINES)
def test_bad_server_input_is_reported_with_file_and_line(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(SERVER_BASE + extra + "\n", "server.conf")
    assert str(info.value) == message


MISSING = [
    ("client\nremote a\nca ca.crt\ncert c.crt\nkey c.key\n",
     "c.conf: no 'dev' directive (add 'dev tun')"),
    ("dev tun\nremote a\nca ca.crt\ncert c.crt\nkey c.key\n",
     "c.conf: no TLS role: add 'client' or 'server' (or 'secret' for OpenVPN's static-key "
     "peer-to-peer mode)"),
    ("mode p2p\ndev tun\nremote a\nca ca.crt\n",
     "c.conf:1: no TLS role: add 'client' or 'server' (or 'secret' for OpenVPN's static-key "
     "peer-to-peer mode)"),
    ("client\ndev tun\nca ca.crt\ncert c.crt\nkey c.key\n",
     "c.conf: client config has no 'remote' directive (add 'remote HOST PORT')"),
    ("client\ndev tun\nremote a\ncert c.crt\nkey c.key\n",
     "c.conf: no 'ca' directive: a TLS client or server needs the CA certificate that signed "
     "its peer's certificate (or 'peer-fingerprint')"),
    ("client\ndev tun\nremote a\nca ca.crt\ncert c.crt\n",
     "c.conf:5: 'cert' is given without 'key'"),
    ("client\ndev tun\nremote a\nca ca.crt\n",
     "c.conf: no 'cert'/'key': a client needs a certificate and key, or 'auth-user-pass' with "
     "a server that sets 'verify-client-cert none'"),
    ("dev tun\nserver 198.18.8.0 255.255.255.0\nca ca.crt\ncert s.crt\nkey s.key\n",
     "c.conf: no 'dh' directive: an OpenVPN 2.6 TLS server requires one (use 'dh none' for "
     "ECDHE key exchange only)"),
    ("dev tun\nserver 198.18.8.0 255.255.255.0\nca ca.crt\ndh none\n",
     "c.conf: a server needs its own 'cert' and 'key'"),
    ("dev vpn0\nclient\nremote a\nca ca.crt\ncert c.crt\nkey c.key\n",
     "c.conf:1: cannot tell whether 'dev vpn0' is a tun or a tap device: add 'dev-type tun' "
     "or 'dev-type tap'"),
    ("tls-client\ndev tun\nproto tcp\nremote a\nca ca.crt\ncert c.crt\nkey c.key\n",
     "c.conf:3: plain 'tcp' is ambiguous here: use tcp-server or tcp-client"),
    ("mode server\ndev tun\ntls-client\nremote a\nca ca.crt\ncert c.crt\nkey c.key\n",
     "c.conf:1: 'mode server' needs 'tls-server' (or use the 'server' directive)"),
]


@pytest.mark.parametrize(("text", "message"), MISSING)
def test_missing_or_contradictory_directives(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.conf")
    assert str(info.value) == message


def test_client_without_cert_is_fine_with_auth_user_pass() -> None:
    o = parse_config("client\ndev tun\nremote a\nca ca.crt\nauth-user-pass\n", "c.conf")
    assert (o.cert, o.key, o.auth_user_pass) == (None, None, "prompt")


def test_error_carries_path_line_and_reason() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(CLIENT_BASE + "port abc\n", "client.conf")
    err = info.value
    assert (str(err.path), err.line) == ("client.conf", 8)
    assert err.reason == "'port' expects a number from 1 to 65535, got 'abc'"


def test_conflict_is_reported_at_the_later_directive_across_includes(tmp_path: Path) -> None:
    (tmp_path / "keys.conf").write_text("verb 3\ntls-auth ta.key 1\n")
    with pytest.raises(ConfigError) as info:
        parse_config("tls-crypt tc.key\n" + CLIENT_BASE + "config keys.conf\n",
                     tmp_path / "client.conf")
    assert (info.value.path, info.value.line) == (tmp_path / "keys.conf", 2)


def test_lenient_parse_turns_unsupported_directives_into_warnings(tmp_path):
    from trivpn.config import load_config

    conf = tmp_path / "server.conf"
    conf.write_text("port 1194\ndev tun\nca ca.crt\ncert s.crt\nkey s.key\ndh none\n"
                    "server 198.18.8.0 255.255.255.0\nmtu-test\n")
    options = load_config(conf, read_files=False, lenient=True)
    assert options.server is not None
    assert any("'mtu-test' is not supported by trivpn yet" in w.message
               and w.line == 8 for w in options.warnings)


@pytest.mark.directive("tls-crypt")
def test_tls_crypt_with_a_key_direction_warns_that_the_direction_is_ignored(tmp_path):
    from trivpn.config import load_config

    conf = tmp_path / "client.conf"
    conf.write_text("client\ndev tun\nremote 198.18.0.1\nca ca.crt\ncert c.crt\nkey c.key\n"
                    "tls-crypt tc.key 0\n")
    options = load_config(conf, read_files=False)
    assert options.tls_crypt is not None and options.tls_crypt.path == tmp_path / "tc.key"
    assert any("second argument '0' is ignored" in w.message and w.line == 7
               for w in options.warnings)


def test_stale_routes_check_on_a_tun_server_is_refused_naming_its_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(SERVER_BASE + "stale-routes-check 30 10\n", "server.conf")
    assert "server.conf:8" in str(caught.value)
    assert "supported by trivpn with 'dev tap' only" in str(caught.value)
