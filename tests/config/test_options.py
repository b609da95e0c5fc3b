"""What individual directives mean once parsed (OpenVPN 2.6 semantics and defaults)."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from tests.config.helpers import CLIENT_BASE, client, server
from trivpn.config import (
    DEFAULT_DATA_CIPHERS,
    ConfigError,
    ConnectFreq,
    ConnectRetry,
    Management,
    Mssfix,
    PeriodicFile,
    PullFilter,
    Remote,
    ReplayWindow,
    Route,
    TlsVersion,
    VerifyX509Name,
    parse_config,
)

IP = ipaddress.IPv4Address


def test_defaults_are_openvpn_26_defaults() -> None:
    o = client()
    assert (o.port, o.lport, o.rport, o.proto) == (1194, 1194, 1194, "udp")
    assert o.data_ciphers == DEFAULT_DATA_CIPHERS == (
        "AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305")
    assert (o.auth, o.cipher, o.data_ciphers_fallback) == ("SHA1", None, None)
    assert (o.hand_window, o.tls_timeout, o.reneg_sec, o.tran_window) == (60, 2, 3600, 3600)
    assert o.replay_window == ReplayWindow(64, 15)
    assert (o.max_packet_size, o.tun_mtu, o.mssfix) == (1250, 1500, Mssfix(1492, mtu=True))
    assert (o.max_clients, o.verb, o.topology, o.script_security) == (1024, 1, "net30", 1)
    assert o.connect_retry == ConnectRetry(1, 300)
    assert (o.connect_freq_initial, o.connect_freq) == (ConnectFreq(100, 10), None)
    assert o.resolv_retry is None
    assert o.tls_version_min == TlsVersion("1.2")
    assert (o.compression, o.allow_compression, o.explicit_exit_notify) == (None, "no", 0)


@pytest.mark.parametrize(
    ("extra", "proto", "family"),
    [
        ("proto udp", "udp", None),
        ("proto udp6", "udp", 6),
        ("proto tcp", "tcp-client", None),
        ("proto tcp4", "tcp-client", 4),
        ("proto tcp-client", "tcp-client", None),
        ("proto tcp6-client", "tcp-client", 6),
    ],
)
def test_client_proto(extra: str, proto: str, family: int | None) -> None:
    o = client(extra)
    assert (o.proto, o.family) == (proto, family)
    assert o.remotes[0].proto == proto


@pytest.mark.parametrize(("extra", "proto"), [("proto tcp", "tcp-server"),
                                              ("proto tcp4-server", "tcp-server"),
                                              ("proto udp4", "udp")])
def test_server_proto(extra: str, proto: str) -> None:
    assert server(extra).proto == proto


@pytest.mark.directive("port", "lport", "rport")
@pytest.mark.parametrize(("extra", "ports"), [
    ("lport 5000\nport 1195", (1195, 1195, 1195)),
    ("port 1195\nlport 5000\nrport 6000", (1195, 5000, 6000)),
])
def test_port_lport_rport_last_one_wins(extra: str, ports: tuple[int, int, int]) -> None:
    o = client(extra)
    assert (o.port, o.lport, o.rport) == ports


@pytest.mark.directive("rport", "proto")
def test_remote_defaults_come_from_rport_and_proto_wherever_written() -> None:
    o = client("remote b.example.com\nremote c.example.com 443 tcp\nrport 1300\nproto udp6")
    assert o.remotes == (
        Remote("vpn.example.com", 1194, "udp", 6, line=3),
        Remote("b.example.com", 1300, "udp", 6, line=8),
        Remote("c.example.com", 443, "tcp-client", None, line=9),
    )


@pytest.mark.directive("bind", "nobind", "lport", "local", "port")
def test_bind_local() -> None:
    """Whether the client's link socket binds (client.py binds ``lport`` only then)."""
    assert client().bind_local is True
    assert client("nobind").bind_local is False
    assert client("nobind\nbind").bind_local is True  # the last one wins
    assert client("proto tcp-client").bind_local is False
    assert client("proto tcp-client\nlport 5000").bind_local is True
    assert client("proto tcp-client\nport 5000").bind_local is True
    assert client("proto tcp-client\nlocal 198.18.0.2").bind_local is True
    # OpenVPN (options.c): 'bind' keeps a TCP client bound to its local port
    assert client("proto tcp-client\nbind").bind_local is True


@pytest.mark.parametrize(("extra", "expected"), [("resolv-retry infinite", None),
                                                 ("resolv-retry 30", 30)])
def test_resolv_retry(extra: str, expected: int | None) -> None:
    assert client(extra).resolv_retry == expected


def test_connect_retry() -> None:
    assert client("connect-retry 5").connect_retry == ConnectRetry(5, 300)
    assert client("connect-retry 5 60").connect_retry == ConnectRetry(5, 60)


def test_tls_auth_file_with_direction(tmp_path: Path) -> None:
    o = client("tls-auth ta.key 1")
    assert o.tls_auth is not None and o.tls_auth.path is not None
    assert (o.tls_auth.path.name, o.tls_auth.line, o.key_direction) == ("ta.key", 8, 1)


def test_key_direction_later_line_overrides() -> None:
    assert client("tls-auth ta.key 1\nkey-direction 0").key_direction == 0


def test_dh_none() -> None:
    assert server().dh == "none"


def test_verify_x509_name() -> None:
    assert client("verify-x509-name vpn.example.com name").verify_x509_name == VerifyX509Name(
        "vpn.example.com", "name")
    assert client("verify-x509-name 'C=DE, CN=vpn'").verify_x509_name == VerifyX509Name(
        "C=DE, CN=vpn", "subject")


def test_data_ciphers_are_normalized_and_optional_unknowns_dropped() -> None:
    o = client("data-ciphers aes-128-gcm:?Camellia-256-GCM:chacha20-poly1305:AES-128-GCM")
    assert o.data_ciphers == ("AES-128-GCM", "CHACHA20-POLY1305")


def test_cipher_and_fallback_are_normalized() -> None:
    o = client("data-ciphers-fallback aes-256-cbc\ncipher aes-256-gcm\nauth sha256")
    assert (o.data_ciphers_fallback, o.cipher, o.auth) == ("AES-256-CBC", "AES-256-GCM", "SHA256")


@pytest.mark.parametrize(("extra", "framing"), [
    ("comp-lzo no", "lzo-stub"), ("compress", "stub"), ("compress stub-v2", "stub-v2"),
    ("comp-lzo no\ncompress stub", "stub"),
])
def test_compression_stub_framings(extra: str, framing: str) -> None:
    assert client(extra).compression == framing


def test_comp_lzo_and_compress_views() -> None:
    assert (client("comp-lzo no").comp_lzo, client("comp-lzo no").compress) == ("no", None)
    assert (client("compress stub").comp_lzo, client("compress stub").compress) == (None, "stub")


def test_routes_and_redirect_gateway() -> None:
    o = client("route 192.0.2.0 255.255.255.0\nroute 198.51.100.7 default vpn_gateway 5\n"
               "route-gateway 198.18.8.1\nredirect-gateway def1 bypass-dhcp")
    assert o.routes == (
        Route("192.0.2.0", IP("255.255.255.0"), None, None, line=8),
        Route("198.51.100.7", IP("255.255.255.255"), "vpn_gateway", 5, line=9),
    )
    assert o.route_gateway == "198.18.8.1"
    assert o.redirect_gateway == ("def1", "bypass-dhcp")


def test_server_options() -> None:
    o = server('push "route 198.19.10.0 255.255.255.0"\npush "dhcp-option DNS 198.18.8.1"\n'
               "ifconfig-pool-persist ipp.txt\nstatus openvpn-status.log\nstatus-version 2\n"
               "client-to-client\nduplicate-cn\nmax-clients 10\nexplicit-exit-notify 2\n"
               "verify-client-cert require")
    assert o.pushes == ("route 198.19.10.0 255.255.255.0", "dhcp-option DNS 198.18.8.1")
    assert o.ifconfig_pool_persist == PeriodicFile(o.base_dir / "ipp.txt", 600)
    assert o.status == PeriodicFile(o.base_dir / "openvpn-status.log", 60)
    assert (o.status_version, o.client_to_client, o.duplicate_cn, o.max_clients) == (
        2, True, True, 10)
    assert (o.explicit_exit_notify, o.verify_client_cert) == (2, "require")


def test_connection_rate_limits() -> None:
    o = server("connect-freq-initial 5000 1\nconnect-freq 20 2\n")
    assert (o.connect_freq_initial, o.connect_freq) == (ConnectFreq(5000, 1), ConnectFreq(20, 2))


def test_connect_freq_with_zero_seconds_switches_the_limit_off() -> None:
    assert server("connect-freq 20 0\n").connect_freq is None


def test_connect_freq_initial_zero_warns_that_no_client_can_connect() -> None:
    o = server("connect-freq-initial 0 10\n")
    assert o.connect_freq_initial == ConnectFreq(0, 10)
    assert [(w.line, w.message) for w in o.warnings] == [
        (8, "'connect-freq-initial 0 ...' answers no client hard reset: no new client can "
            "connect over UDP")]


def test_management() -> None:
    assert server("management 127.0.0.1 7505 pw.txt").management == Management(
        "127.0.0.1", 7505, False, "pw.txt")
    assert server("management /run/ovpn.sock unix").management == Management(
        "/run/ovpn.sock", None, True, None)


def test_tls_settings_are_stored() -> None:
    o = client("tls-version-min 1.3 or-highest\ntls-cipher TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"
               "\ntls-ciphersuites TLS_AES_256_GCM_SHA384\ntls-groups X25519:prime256v1\n"
               "reneg-sec 600 300\nhand-window 30\ntran-window 120\nreplay-window 128 30")
    assert o.tls_version_min == TlsVersion("1.3", or_highest=True)
    assert (o.tls_cipher, o.tls_ciphersuites, o.tls_groups) == (
        "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384", "TLS_AES_256_GCM_SHA384", "X25519:prime256v1")
    assert (o.reneg_sec, o.reneg_sec_min, o.hand_window, o.tran_window) == (600, 300, 30, 120)
    assert o.replay_window == ReplayWindow(128, 30)


def test_misc_client_options() -> None:
    o = client("float\nremote-random\nauth-nocache\nmute-replay-warnings\nfast-io\n"
               "sndbuf 393216\nrcvbuf 393216\ntxqueuelen 1000\nmssfix 1400\ntun-mtu 1400\n"
               "dhcp-option DNS 198.18.8.1\nsetenv CLIENT_NAME laptop\nmute 20\n"
               "log-append /var/log/ovpn.log\nwritepid ovpn.pid\nping 10\nping-restart 60")
    assert (o.float_, o.remote_random, o.auth_nocache, o.mute_replay_warnings, o.fast_io) == (
        True, True, True, True, True)
    assert (o.sndbuf, o.rcvbuf, o.txqueuelen, o.tun_mtu) == (393216, 393216, 1000, 1400)
    assert o.mssfix == Mssfix(1400, mtu=False)
    assert o.dhcp_options == (("DNS", "198.18.8.1"),)
    assert o.setenv == (("CLIENT_NAME", "laptop"),)
    assert (o.mute, o.log, o.log_append) == (20, Path("/var/log/ovpn.log"), True)
    assert o.writepid == o.base_dir / "ovpn.pid"
    assert (o.ping, o.ping_restart) == (10, 60)


@pytest.mark.directive("ignore-unknown-option")
def test_ignore_unknown_option_turns_unknown_directives_into_warnings() -> None:
    o = client("ignore-unknown-option block-outside-dns\nblock-outside-dns")
    assert [(w.line, w.message) for w in o.warnings] == [
        (9, "ignoring unknown directive 'block-outside-dns'")]


@pytest.mark.directive("setenv")
def test_setenv_opt_applies_known_and_warns_about_unknown() -> None:
    o = client("setenv opt block-outside-dns\nsetenv opt verb 4")
    assert o.verb == 4
    assert [w.message for w in o.warnings] == ["ignoring unknown directive 'block-outside-dns'"]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("comp-lzo no", "'comp-lzo' is deprecated"),
        ("cipher BF-CBC", "BF-CBC has a 64-bit block size"),
        ("data-ciphers AES-256-GCM:BF-CBC", "BF-CBC has a 64-bit block size"),
        ("cipher AES-256-CBC", "'cipher AES-256-CBC' is not in data-ciphers"),
        ("auth MD5", "weak digest"),
        ("ns-cert-type server", "'ns-cert-type' is deprecated"),
        ("tls-crypt tc.key\nkey-direction 1", "no effect on tls-crypt"),
        ("ncp-ciphers AES-256-GCM", "renamed to 'data-ciphers'"),
        ("tun-ipv6", "obsolete and ignored"),
        ("tls-version-min 1.0", "obsolete TLS versions"),
    ],
)
def test_things_openvpn_only_warns_about_become_warnings(extra: str, fragment: str) -> None:
    o = client(extra)
    assert any(fragment in w.message for w in o.warnings), o.warnings
    assert all(w.path == Path("client.conf") for w in o.warnings)


def test_cipher_in_data_ciphers_is_not_warned_about() -> None:
    assert client("cipher AES-256-GCM").warnings == ()


def test_management_without_password_warns() -> None:
    assert any("without a password" in w.message
               for w in server("management 127.0.0.1 7505").warnings)


def test_server_with_subnet_topology_has_no_warnings() -> None:
    assert server().warnings == ()


def test_options_are_frozen() -> None:
    o = client()
    with pytest.raises(AttributeError):
        o.port = 1  # type: ignore[misc]


@pytest.mark.directive("pull-filter", "route-nopull")
def test_pull_filters_keep_config_order_and_route_nopull_is_a_flag() -> None:
    o = client('pull-filter ignore "route 198.18.9."\npull-filter accept route\n'
               'pull-filter reject "dhcp-option DNS"\nroute-nopull')
    assert o.pull_filters == (PullFilter("ignore", "route 198.18.9."),
                              PullFilter("accept", "route"),
                              PullFilter("reject", "dhcp-option DNS"))
    assert o.route_nopull is True
    assert client().pull_filters == () and client().route_nopull is False


@pytest.mark.directive("pull-filter")
@pytest.mark.parametrize("line", ['pull-filter drop "route"', "pull-filter ignore",
                                  'pull-filter ignore "route" extra'])
def test_bad_pull_filter_names_the_line(line: str) -> None:
    with pytest.raises(ConfigError) as info:
        client(line)
    assert info.value.line == 8


@pytest.mark.directive("client", "pull", "tls-client")
@pytest.mark.parametrize("roles", ["client", "pull\ntls-client", "tls-client\npull"])
def test_client_is_pull_and_tls_client_and_selects_the_pulling_client(roles: str) -> None:
    o = parse_config(CLIENT_BASE.replace("client\n", roles + "\n", 1), "c.conf")
    assert (o.role, o.tls_role, o.pull, o.mode) == ("client", "client", True, "p2p")


@pytest.mark.directive("tls-client", "pull")
def test_tls_client_without_pull_is_a_tls_peer_to_peer_client() -> None:
    o = parse_config(CLIENT_BASE.replace("client\n", "tls-client\n", 1), "c.conf")
    assert (o.role, o.tls_role, o.pull, o.mode) == ("client", "client", False, "p2p")


@pytest.mark.directive("tls-server", "mode")
def test_tls_server_without_mode_server_is_a_tls_peer_to_peer_server() -> None:
    """One peer, run by the one-peer runtime (role "client"), TLS server side."""
    text = ("tls-server\ndev tun\nifconfig 198.18.8.1 198.18.8.2\nca ca.crt\ncert s.crt\n"
            "key s.key\ndh none\n")
    o = parse_config(text, "s.conf")
    assert (o.role, o.tls_role, o.mode, o.pull) == ("client", "server", "p2p", False)


@pytest.mark.directive("tls-server", "proto")
def test_tls_peer_to_peer_server_with_tcp_client_is_refused() -> None:
    text = ("tls-server\ndev tun\nproto tcp-client\nremote 198.18.0.2\n"
            "ifconfig 198.18.8.1 198.18.8.2\nca ca.crt\ncert s.crt\nkey s.key\ndh none\n")
    with pytest.raises(ConfigError, match="peer-to-peer 'tls-server' with 'proto tcp-client'"):
        parse_config(text, "s.conf")


@pytest.mark.directive("tls-server", "client-config-dir")
def test_tls_peer_to_peer_server_refuses_multi_client_directives() -> None:
    text = ("tls-server\ndev tun\nclient-config-dir ccd\nifconfig 198.18.8.1 198.18.8.2\n"
            "ca ca.crt\ncert s.crt\nkey s.key\ndh none\n")
    with pytest.raises(ConfigError, match="'client-config-dir' requires 'mode server'"):
        parse_config(text, "s.conf")


@pytest.mark.directive("server", "mode", "tls-server")
@pytest.mark.parametrize("roles", ["", "mode server\ntls-server\n", "tls-server\nmode server\n"])
def test_server_implies_mode_server_and_tls_server(roles: str) -> None:
    o = server(roles)
    assert (o.role, o.tls_role, o.mode, o.pull) == ("server", "server", "server", False)


@pytest.mark.directive("mode", "tls-server")
@pytest.mark.parametrize(("text", "message"), [
    ("mode server\n", "no TLS role: add 'client' or 'server'"),
    ("mode server\ntls-client\npull\n", "'mode server' needs 'tls-server'"),
])
def test_mode_server_needs_the_tls_server_role(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(CLIENT_BASE.replace("client\n", text, 1), "c.conf")
