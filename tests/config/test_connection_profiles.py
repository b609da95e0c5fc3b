"""<connection> blocks and the proxy/reconnect directives, as OpenVPN 2.6 reads them
(options.c add_option(), options_postprocess_mutate(), options_postprocess_verify_ce())."""

from __future__ import annotations

import pytest

from tests.config.helpers import CLIENT_BASE
from trivpn.config import ConfigError, parse_config

# CLIENT_BASE is 7 lines long: appended directives start on line 8.
BLOCKS = """proto udp
connect-timeout 7
<connection>
remote 198.18.0.8 2222 udp
</connection>
<connection>
remote 198.18.0.9 3333
proto tcp-client
http-proxy 198.18.0.5 8080
http-proxy-option AGENT trivpn-test
connect-timeout 3
explicit-exit-notify 2
</connection>
"""


@pytest.mark.directive("connection")
def test_blocks_become_profiles_in_order_with_their_own_settings() -> None:
    o = parse_config(CLIENT_BASE + BLOCKS, "client.conf")
    first, second = o.remotes
    assert (first.host, first.port, first.proto) == ("198.18.0.8", 2222, "udp")
    assert first.server_poll_timeout == 7  # the global connect-timeout before the block
    assert first.http_proxy is None
    assert (second.host, second.port, second.proto) == ("198.18.0.9", 3333, "tcp-client")
    assert second.server_poll_timeout == 3 and second.explicit_exit_notify == 2
    assert second.http_proxy is not None and second.http_proxy.host == "198.18.0.5"
    assert second.http_proxy.agent == "trivpn-test"
    assert o.connection_blocks


@pytest.mark.directive("connection")
def test_remote_outside_blocks_is_not_a_profile_when_blocks_exist() -> None:
    # CLIENT_BASE has `remote vpn.example.com 1194`: OpenVPN builds its profile list from
    # the blocks alone
    o = parse_config(CLIENT_BASE + BLOCKS, "client.conf")
    assert [r.host for r in o.remotes] == ["198.18.0.8", "198.18.0.9"]


@pytest.mark.directive("connection")
def test_connection_option_after_blocks_is_ignored_with_openvpns_warning() -> None:
    o = parse_config(CLIENT_BASE + BLOCKS + "port 9999\n", "client.conf")
    assert [r.port for r in o.remotes] == [2222, 3333]
    assert any("Option 'port' is ignored by previous <connection> blocks" in str(w)
               and ":21:" in str(w) for w in o.warnings)


@pytest.mark.directive("connection")
def test_global_port_before_a_block_is_its_default() -> None:
    o = parse_config(CLIENT_BASE + "port 4444\n<connection>\nremote 198.18.0.8\n"
                     "</connection>\n", "client.conf")
    assert o.remotes[0].port == 4444


def test_non_connection_option_inside_a_block_is_an_error_with_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(CLIENT_BASE + "<connection>\nremote 198.18.0.8\nverb 4\n</connection>\n",
                     "client.conf")
    assert str(info.value).startswith("client.conf:10: 'verb' is not allowed inside a "
                                      "<connection> block")


def test_block_without_remote_is_an_error() -> None:
    with pytest.raises(ConfigError, match="must contain a 'remote'"):
        parse_config(CLIENT_BASE + "<connection>\nport 1\n</connection>\n", "client.conf")


def test_blocks_must_agree_on_options_trivpn_applies_to_the_whole_client() -> None:
    text = (CLIENT_BASE + "<connection>\nremote 198.18.0.8\ntun-mtu 1400\n</connection>\n"
            "<connection>\nremote 198.18.0.9\ntun-mtu 1300\n</connection>\n")
    with pytest.raises(ConfigError, match="'tun-mtu' differs between <connection> blocks"):
        parse_config(text, "client.conf")
    same = text.replace("1300", "1400")
    assert parse_config(same, "client.conf").tun_mtu == 1400


@pytest.mark.directive("http-proxy")
def test_global_http_proxy_applies_to_every_remote() -> None:
    o = parse_config(CLIENT_BASE + "proto tcp-client\nremote 198.18.0.9 443\n"
                     "http-proxy 198.18.0.5 3128 creds.txt\n", "client.conf")
    assert all(r.http_proxy is not None and r.http_proxy.auth == "basic" for r in o.remotes)
    proxy = o.remotes[0].http_proxy
    assert proxy is not None and proxy.credentials is not None
    assert proxy.credentials.path is not None and proxy.credentials.path.name == "creds.txt"


@pytest.mark.parametrize(("extra", "message"), [
    ("http-proxy 198.18.0.5 8080", "client.conf:8: --http-proxy MUST be used in TCP Client "
                                   "mode (i.e. --proto tcp-client)"),
    ("http-proxy 198.18.0.5", "client.conf:8: http-proxy port number not defined"),
    ("proto tcp-client\nhttp-proxy-option AGENT x",
     "client.conf:9: --http-proxy not specified but other http proxy options present"),
    ("proto tcp-client\nhttp-proxy 198.18.0.5 80\nsocks-proxy 198.18.0.5",
     "client.conf:9: --http-proxy can not be used together with --socks-proxy"),
    ("http-proxy-option FOO 1", "client.conf:8: Bad http-proxy-option or missing or extra "
                                "parameter: 'FOO'"),
    ("proto tcp-client\nhttp-proxy 198.18.0.5 80 a.txt digest",
     "client.conf:9: http-proxy authentication method 'digest' is not supported by trivpn "
     "(only 'none', 'basic', 'ntlm' and 'ntlm2' are)"),
])
def test_bad_proxy_configs_are_refused(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(CLIENT_BASE + extra + "\n", "client.conf")
    assert str(info.value) == message


def test_inline_http_proxy_user_pass() -> None:
    o = parse_config(CLIENT_BASE + "proto tcp-client\nhttp-proxy 198.18.0.5 80 auto\n"
                     "<http-proxy-user-pass>\nu\np\n</http-proxy-user-pass>\n", "client.conf")
    proxy = o.remotes[0].http_proxy
    assert proxy is not None and proxy.auth == "auto"
    assert proxy.credentials is not None and proxy.credentials.inline == "u\np\n"


def test_socks_proxy_defaults_to_port_1080() -> None:
    o = parse_config(CLIENT_BASE + "socks-proxy 198.18.0.5\n", "client.conf")
    assert o.remotes[0].socks_proxy is not None and o.remotes[0].socks_proxy.port == 1080


def test_route_delay_without_window_waits_30_seconds_at_most() -> None:
    assert parse_config(CLIENT_BASE + "route-delay 5\n", "c.conf").route_delay == (5, 30)
    assert parse_config(CLIENT_BASE + "route-delay\n", "c.conf").route_delay == (0, 30)


def test_deprecated_proxy_retry_options_warn() -> None:
    o = parse_config(CLIENT_BASE + "http-proxy-retry\n", "client.conf")
    assert any("deprecated" in str(w) for w in o.warnings)


def test_mark_is_a_decimal_number() -> None:
    assert parse_config(CLIENT_BASE + "mark 16\n", "c.conf").mark == 16
    with pytest.raises(ConfigError, match="'mark' expects a number"):
        parse_config(CLIENT_BASE + "mark lots\n", "c.conf")


def test_connect_retry_max_in_one_block_limits_the_whole_client() -> None:
    o = parse_config(CLIENT_BASE + "<connection>\nremote 198.18.0.8\nconnect-retry-max 2\n"
                     "</connection>\n<connection>\nremote 198.18.0.9\n</connection>\n",
                     "client.conf")
    assert o.connect_retry_max == 2


def test_socks_proxy_over_udp_uses_ipv4() -> None:
    o = parse_config(CLIENT_BASE.replace("remote vpn.example.com 1194",
                                         "remote vpn.example.com 1194 udp6")
                     + "socks-proxy 198.18.0.5\n", "client.conf")
    assert o.remotes[0].family == 4
    assert any("IPv4 only" in str(w) for w in o.warnings)
