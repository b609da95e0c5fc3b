"""PUSH_REPLY building, continuation and pushed-option policy (docs/protocol.md §8.3)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv6Address, IPv6Network
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trivpn.protocol.controlmsg import PushReply, parse_control_message
from trivpn.protocol.dns import DnsAddress, DnsOptions, DnsServer
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.push import (
    NOT_PUSHABLE,
    DhcpOption,
    Ifconfig,
    Ifconfig6,
    PullFilter,
    PullPolicy,
    PushAccumulator,
    PushedOptions,
    Route,
    RouteIPv6,
    build_push_replies,
    parse_pushed_options,
    pushed_cipher_allowed,
)

# Live captures and the addresses they carry (parsed only, never used on the network).
LIVE = json.loads((Path(__file__).parent / "fixtures" / "live_push_replies.json").read_text())
FLAGS = ("cc-exit", "tls-ekm", "dyn-tls-crypt")


def _accumulate(*messages: str) -> PushedOptions | None:
    acc = PushAccumulator()
    result = None
    for message in messages:
        result = acc.feed(message)
    return result


def _addresses(*texts: str) -> list[IPv4Address]:
    return [IPv4Address(t) for t in texts]


def test_live_subnet_push_reply():
    live = LIVE["subnet"]
    network, mask = _addresses(*live["route"])
    local, netmask = _addresses(*live["ifconfig"])
    assert _accumulate(live["message"]) == PushedOptions(
        routes=(Route(network, mask),), route_gateway=IPv4Address(live["route_gateway"]),
        topology="subnet", ping=3, ping_restart=30, ifconfig=Ifconfig(local, netmask),
        peer_id=0, cipher="AES-256-GCM", protocol_flags=FLAGS, tun_mtu=1500)


def test_live_net30_push_reply():
    live = LIVE["net30"]
    (gateway,) = _addresses(*live["route"])
    local, remote = _addresses(*live["ifconfig"])
    assert _accumulate(live["message"]) == PushedOptions(
        routes=(Route(gateway),), topology="net30", ping=3, ping_restart=30,
        ifconfig=Ifconfig(local, remote), peer_id=0,
        cipher="AES-256-GCM", protocol_flags=FLAGS, tun_mtu=1500)


def test_bare_push_reply_gives_empty_options():
    assert _accumulate("PUSH_REPLY") == PushedOptions()


# --- building and splitting ------------------------------------------------------------------


def test_options_that_fit_make_one_message_without_continuation():
    options = ["route 198.18.7.0 255.255.255.0", "topology subnet", "ping 10"]
    assert build_push_replies(options) == ["PUSH_REPLY," + ",".join(options)]


def test_no_options_still_make_a_bare_push_reply():
    assert build_push_replies([]) == ["PUSH_REPLY"]


def _many_routes(n: int) -> list[str]:
    return [f"route 198.18.{i // 256}.{i % 256} 255.255.255.255" for i in range(n)]


def test_long_push_is_split_with_continuation_markers():
    options = _many_routes(60)
    messages = build_push_replies(options)
    assert len(messages) == 3
    assert all(m.endswith(",push-continuation 2") for m in messages[:-1])
    assert messages[-1].endswith(",push-continuation 1")
    assert all(len(m) < 1024 for m in messages)
    carried = [o for m in messages for o in m.split(",")[1:] if not o.startswith("push-cont")]
    assert carried == options


def test_split_happens_where_2_6_splits():
    # 2.6 closes a message before an option when len(message) + len(option) >= 1024 - 84.
    options = _many_routes(60)
    messages = build_push_replies(options)
    used = 0
    for message in messages[:-1]:
        body = message.removesuffix(",push-continuation 2")
        used += body.count(",")
        assert len(body) < 940
        assert len(body) + len(options[used]) >= 940


def test_split_messages_accumulate_back_to_the_options():
    options = [*_many_routes(60), "topology subnet", "ping 10"]
    acc = PushAccumulator()
    messages = build_push_replies(options)
    results = [acc.feed(m) for m in messages]
    assert results[:-1] == [None] * (len(messages) - 1)
    final = results[-1]
    assert final is not None
    assert len(final.routes) == 60 and final.topology == "subnet" and final.ping == 10
    assert acc.parts == 0


def test_accumulator_starts_over_after_a_complete_push():
    acc = PushAccumulator()
    assert acc.feed("PUSH_REPLY,ping 5,push-continuation 2") is None
    assert acc.parts == 1
    assert acc.feed("PUSH_REPLY,ping-restart 60,push-continuation 1") == PushedOptions(
        ping=5, ping_restart=60)
    assert acc.feed("PUSH_REPLY,ping 7") == PushedOptions(ping=7)


def test_accumulator_accepts_parsed_replies():
    assert PushAccumulator().feed(PushReply(("ping 4",), None)) == PushedOptions(ping=4)


def test_accumulator_rejects_other_messages():
    with pytest.raises(ProtocolError):
        PushAccumulator().feed("AUTH_FAILED")


def test_accumulator_bounds_the_number_of_options():
    acc = PushAccumulator(max_options=3)
    acc.feed("PUSH_REPLY,ping 1,ping 2,push-continuation 2")
    with pytest.raises(ProtocolError):
        acc.feed("PUSH_REPLY,ping 3,ping 4,push-continuation 2")


@pytest.mark.parametrize("options", [["x" * 1000], ["a,b"], [""]])
def test_build_rejects_options_that_cannot_be_pushed(options):
    with pytest.raises(ProtocolError):
        build_push_replies(options)


# --- option interpretation -------------------------------------------------------------------


PARSED = {
    "ifconfig-ipv6 2001:db8::1000/64 2001:db8::1": PushedOptions(ifconfig_ipv6=Ifconfig6(
        IPv6Address("2001:db8::1000"), 64, IPv6Address("2001:db8::1"))),
    "route-ipv6 2001:db8:1::/48": PushedOptions(route_ipv6=(
        RouteIPv6(IPv6Network("2001:db8:1::/48")),)),
    "route-ipv6 2001:db8:1::/48 2001:db8::1 5": PushedOptions(route_ipv6=(
        RouteIPv6(IPv6Network("2001:db8:1::/48"), IPv6Address("2001:db8::1"), 5),)),
    "route 198.18.5.0 255.255.255.0 vpn_gateway 10": PushedOptions(routes=(Route(
        IPv4Address("198.18.5.0"), IPv4Address("255.255.255.0"), "vpn_gateway", 10),)),
    "route remote_host 255.255.255.255 net_gateway": PushedOptions(routes=(Route(
        "remote_host", IPv4Address("255.255.255.255"), "net_gateway"),)),
    "route 198.18.5.0 default default 7": PushedOptions(routes=(Route(
        IPv4Address("198.18.5.0"), None, None, 7),)),
    "route-gateway dhcp": PushedOptions(route_gateway="dhcp"),
    "redirect-gateway def1 bypass-dhcp": PushedOptions(redirect_gateway=("def1", "bypass-dhcp")),
    "redirect-gateway": PushedOptions(redirect_gateway=()),
    "dhcp-option DNS 198.18.0.53": PushedOptions(dhcp_options=(DhcpOption("DNS",
                                                                          "198.18.0.53"),)),
    "dhcp-option DISABLE-NBT": PushedOptions(dhcp_options=(DhcpOption("DISABLE-NBT"),)),
    "dns server 0 address 198.18.0.53": PushedOptions(dns=DnsOptions((DnsServer(0, (
        DnsAddress(IPv4Address("198.18.0.53")),)),))),
    "dns search-domains example.org": PushedOptions(dns=DnsOptions(
        search_domains=("example.org",))),
    "key-derivation tls-ekm": PushedOptions(key_derivation="tls-ekm"),
    "auth-token-user dXNlcg==": PushedOptions(auth_token_user="dXNlcg=="),
    "explicit-exit-notify": PushedOptions(explicit_exit_notify=1),
    "explicit-exit-notify 3": PushedOptions(explicit_exit_notify=3),
    "comp-lzo no": PushedOptions(compression="lzo-stub"),
    "compress": PushedOptions(compression="stub"),
    "compress stub-v2": PushedOptions(compression="stub-v2"),
    "inactive 600": PushedOptions(inactive=600),
    "inactive 600 100000": PushedOptions(inactive=600, inactive_bytes=100000),
    "session-timeout 3600": PushedOptions(session_timeout=3600),
    "route-metric 50": PushedOptions(route_metric=50),
    "block-ipv6": PushedOptions(block_ipv6=True),
    "echo hello world": PushedOptions(echo=("hello world",)),
    "setenv-safe FOO bar": PushedOptions(setenv_safe=(("FOO", "bar"),)),
    "tun-ipv6": PushedOptions(),
    "route-delay 2": PushedOptions(unknown=("route-delay 2",)),
    "block-outside-dns": PushedOptions(unknown=("block-outside-dns",)),
    "frobnicate yes": PushedOptions(unknown=("frobnicate yes",)),
    "   ": PushedOptions(),
}


@pytest.mark.parametrize("option", sorted(PARSED))
def test_pushed_option_is_interpreted(option):
    assert parse_pushed_options([option]) == PARSED[option]


def test_auth_token_is_kept_but_not_shown_in_repr():
    options = parse_pushed_options(["auth-token SESS_ID_AT_0123456789abcdef"])
    assert options.auth_token == "SESS_ID_AT_0123456789abcdef"
    assert "SESS_ID" not in repr(options)


def test_scalars_take_the_last_value_and_lists_keep_order():
    options = parse_pushed_options(["ping 1", "route 198.18.0.1", "ping 2", "route 198.18.0.2"])
    assert options.ping == 2
    assert [r.network for r in options.routes] == [IPv4Address("198.18.0.1"),
                                                   IPv4Address("198.18.0.2")]


def test_options_are_tokenized_with_config_quoting():
    options = parse_pushed_options(['echo "quoted text" more'])
    assert options.echo == ("quoted text more",)


MALFORMED = [
    "ifconfig 198.18.0.2", "ifconfig 198.18.0.2 mask", "ifconfig 198.18.0.2 198.18.0.1 x",
    "ifconfig-ipv6 2001:db8::1/48 2001:db8::2", "ifconfig-ipv6 2001:db8::1/64",
    "ifconfig-ipv6 nonsense/64 2001:db8::1", "topology star", "route", "route example.org",
    "route 198.18.0.0 255.255.0.0 198.18.0.1 999", "route 1 2 3 4 5", "route-ipv6 zz::/x",
    "route-gateway", "redirect-gateway def2", "dhcp-option", "dns", "dns server x address y",
    "dns search-domains", "dns server -1 address 198.18.0.53", "dns server 0 dnssec yes",
    "dhcp-option DNS resolver.example", "dhcp-option DOMAIN", "ping", "ping -1", "ping 1 2",
    "ping-restart abc", "peer-id 16777216",
    "cipher", "cipher A B", "protocol-flags", "key-derivation prf", "tun-mtu 99999",
    "block-ipv6 yes", 'echo "unterminated', "comp-lzo maybe", "compress zstd",
]


@pytest.mark.parametrize("option", MALFORMED)
def test_malformed_known_option_is_rejected_naming_it(option):
    with pytest.raises(ProtocolError) as info:
        parse_pushed_options([option])
    assert option.split()[0] in info.value.where


@pytest.mark.parametrize(("option", "value"), [
    ("comp-lzo", "lzo-adaptive"), ("comp-lzo yes", "lzo"), ("comp-lzo adaptive", "lzo-adaptive"),
    ("comp-lzo no", "lzo-stub"), ("compress lz4", "lz4"), ("compress lz4-v2", "lz4-v2"),
    ("compress lzo", "lzo"), ("compress", "stub"), ("compress stub-v2", "stub-v2")])
def test_pushed_compression_is_parsed_for_the_session_to_allow_or_refuse(option, value):
    assert parse_pushed_options([option]).compression == value


def test_pushed_comp_noadapt_is_parsed():
    assert parse_pushed_options(["comp-lzo", "comp-noadapt"]).comp_noadapt


@pytest.mark.parametrize("option", ["script-security 2", "up /bin/sh", "dev tap0",
                                    "remote 198.18.0.1 1194", "tls-auth ta.key 1",
                                    "plugin evil.so", "route-up /tmp/x", "setenv FOO bar",
                                    "keepalive 10 60", "management 127.0.0.1 7505"])
def test_non_pushable_options_are_rejected(option):
    with pytest.raises(ProtocolError) as info:
        parse_pushed_options([option])
    assert info.value.reason == "option_not_pushable"


def test_pushable_options_are_not_in_the_non_pushable_set():
    understood = {"ifconfig", "ifconfig-ipv6", "route", "route-ipv6", "route-gateway",
                  "topology", "redirect-gateway", "dhcp-option", "dns", "block-ipv6", "ping",
                  "ping-restart", "peer-id", "cipher", "protocol-flags", "key-derivation",
                  "tun-mtu", "auth-token", "auth-token-user", "explicit-exit-notify",
                  "comp-lzo", "compress", "inactive", "session-timeout", "route-metric",
                  "tun-ipv6", "echo", "setenv-safe", "push-continuation", "route-delay",
                  "sndbuf", "rcvbuf", "persist-tun", "ping-exit", "block-outside-dns"}
    assert not understood & NOT_PUSHABLE


@pytest.mark.parametrize(("cipher", "allowed"), [("AES-256-GCM", True), ("BF-CBC", False)])
def test_pushed_cipher_allowed(cipher, allowed):
    assert pushed_cipher_allowed(cipher, ["AES-256-GCM", "AES-128-GCM"]) is allowed


_PRINTABLE = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


@given(st.lists(st.text(alphabet=_PRINTABLE, max_size=120), max_size=5))
def test_accumulator_on_garbage_raises_only_protocol_errors(messages):
    acc = PushAccumulator()
    for message in messages:
        try:
            acc.feed("PUSH_REPLY," + message)
        except ProtocolError:
            acc.reset()


@given(st.lists(st.sampled_from(["route", "ifconfig", "ifconfig-ipv6", "dns", "ping", "peer-id",
                                 "route-ipv6", "redirect-gateway", "inactive", "compress",
                                 "tun-mtu", "dhcp-option", "echo", "x"]), min_size=1,
                max_size=4),
       st.lists(st.text(alphabet=_PRINTABLE.filter(lambda c: c != ","), max_size=20),
                max_size=5))
def test_known_options_with_garbage_arguments_raise_only_protocol_errors(names, args):
    line = " ".join([names[0], *args])
    try:
        result = parse_control_message("PUSH_REPLY," + line)
        if isinstance(result, PushReply):
            PushAccumulator().feed(result)
    except ProtocolError:
        pass


# --------------------------------------------------------------------------------------------
# The client's own rules: pull-filter and route-nopull (OpenVPN options.c apply_pull_filter,
# init.c pull_permission_mask)

SPLIT_PUSH = ("route-gateway 198.18.8.1", "topology subnet", "ping 1", "ping-restart 4",
              "route 198.18.9.0 255.255.255.0", "route 198.18.10.0 255.255.255.0",
              "route-ipv6 2001:2:0:9::/64", "redirect-gateway def1", "route-metric 7",
              "dhcp-option DNS 198.18.8.1", "dns server 0 address 198.18.8.1", "block-ipv6",
              "ifconfig 198.18.8.2 255.255.255.0", "peer-id 0", "cipher AES-256-GCM")


def _policy(*rules: tuple[str, str], route_nopull: bool = False) -> PullPolicy:
    return PullPolicy(tuple(PullFilter(a, t) for a, t in rules),  # type: ignore[arg-type]
                      route_nopull)


@pytest.mark.directive("route-nopull")
def test_route_nopull_drops_routes_and_dns_but_keeps_the_address_and_route_gateway():
    pushed = parse_pushed_options(SPLIT_PUSH, _policy(route_nopull=True))
    assert pushed.routes == () and pushed.route_ipv6 == ()
    assert pushed.redirect_gateway is None and pushed.route_metric is None
    assert pushed.dhcp_options == () and pushed.dns == DnsOptions() and pushed.block_ipv6 is False
    assert pushed.ifconfig == Ifconfig(IPv4Address("198.18.8.2"), IPv4Address("255.255.255.0"))
    assert pushed.route_gateway == IPv4Address("198.18.8.1")
    assert pushed.topology == "subnet" and pushed.ping == 1 and pushed.peer_id == 0
    assert [f.text for f in pushed.filtered] == [
        "route 198.18.9.0 255.255.255.0", "route 198.18.10.0 255.255.255.0",
        "route-ipv6 2001:2:0:9::/64", "redirect-gateway def1", "route-metric 7",
        "dhcp-option DNS 198.18.8.1", "dns server 0 address 198.18.8.1", "block-ipv6"]
    assert {f.by for f in pushed.filtered} == {"route-nopull"}


@pytest.mark.directive("route-nopull")
def test_route_nopull_drops_a_malformed_route_without_complaining():
    pushed = parse_pushed_options(("route not-an-address", "ifconfig 198.18.8.2 255.255.255.0"),
                                  _policy(route_nopull=True))
    assert pushed.routes == () and pushed.ifconfig is not None


@pytest.mark.directive("pull-filter")
def test_pull_filter_first_matching_prefix_wins():
    policy = _policy(("accept", "route 198.18.9."), ("ignore", "route "),
                     ("ignore", "dhcp-option"))
    pushed = parse_pushed_options(SPLIT_PUSH, policy)
    assert [str(r.network) for r in pushed.routes] == ["198.18.9.0"]
    # "route " does not match "route-ipv6" nor "route-gateway": plain prefix matching
    assert len(pushed.route_ipv6) == 1 and pushed.route_gateway is not None
    assert pushed.dhcp_options == ()
    assert [(f.text, f.by) for f in pushed.filtered] == [
        ("route 198.18.10.0 255.255.255.0", "pull-filter"),
        ("dhcp-option DNS 198.18.8.1", "pull-filter")]


@pytest.mark.directive("pull-filter")
def test_pull_filter_matches_after_leading_blanks_and_is_case_sensitive():
    policy = _policy(("ignore", "route"))
    pushed = parse_pushed_options(("  route 198.18.9.0 255.255.255.0", "ROUTE 198.18.10.0"),
                                  policy)
    assert pushed.filtered[0].text == "route 198.18.9.0 255.255.255.0"
    assert pushed.routes == () and pushed.unknown == ("ROUTE 198.18.10.0",)


@pytest.mark.directive("pull-filter")
def test_pull_filter_reject_fails_the_whole_push():
    acc = PushAccumulator(policy=_policy(("reject", "redirect-gateway")))
    with pytest.raises(ProtocolError) as info:
        acc.feed("PUSH_REPLY," + ",".join(SPLIT_PUSH))
    assert info.value.reason == "pull_filter_rejected"
    assert "rejected by pull-filter: 'redirect-gateway def1'" in str(info.value)


@pytest.mark.directive("pull-filter")
def test_pull_filter_accept_before_route_nopull_does_not_override_it():
    # OpenVPN: accept only ends the filter list; the permission mask still refuses the route
    pushed = parse_pushed_options(SPLIT_PUSH, _policy(("accept", "route"), route_nopull=True))
    assert pushed.routes == ()


@pytest.mark.directive("pull-filter")
def test_filtered_auth_token_is_not_shown():
    policy = _policy(("ignore", "auth-token"))
    pushed = parse_pushed_options(("auth-token SECRET123",), policy)
    assert pushed.auth_token is None
    assert pushed.filtered[0].text == "auth-token <hidden>"
    with pytest.raises(ProtocolError) as info:
        parse_pushed_options(("auth-token SECRET123",), _policy(("reject", "auth")))
    assert "SECRET123" not in str(info.value)
