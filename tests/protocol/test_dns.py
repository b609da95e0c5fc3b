"""The DNS plan: what a client applies from OpenVPN 2.6's ``dns`` and ``dhcp-option`` lines
(trivpn/protocol/dns.py, docs/dns.md)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from trivpn.protocol.dns import (
    DnsAddress,
    DnsOptionError,
    DnsOptions,
    DnsPlan,
    parse_dns_address,
    plan_dns,
)


def dns(*lines: str, pulled: bool = False) -> DnsOptions:
    opts = DnsOptions()
    for line in lines:
        opts = opts.with_line(line.split()[1:], pulled=pulled)
    return opts


def servers(plan: DnsPlan) -> list[str]:
    return [str(a) for a in plan.servers]


@pytest.mark.parametrize(("text", "expected"), [
    ("198.18.0.53", DnsAddress(IPv4Address("198.18.0.53"))),
    ("198.18.0.53:5353", DnsAddress(IPv4Address("198.18.0.53"), 5353)),
    ("2001:2::53", DnsAddress(IPv6Address("2001:2::53"))),
    ("[2001:2::53]:853", DnsAddress(IPv6Address("2001:2::53"), 853)),
])
def test_server_addresses_take_an_optional_port(text, expected):
    assert parse_dns_address(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("text", ["resolver.example", "198.18.0.53:0", "198.18.0.53:70000",
                                  "[198.18.0.53]:53", "[2001:2::53]", "2001:2::53]:53", ":53"])
def test_malformed_server_addresses_are_refused(text):
    with pytest.raises(DnsOptionError):
        parse_dns_address(text)


def test_lines_of_one_priority_build_one_server_sorted_by_priority():
    opts = dns("dns server 5 address 198.18.0.5", "dns server -3 address 198.18.0.3",
               "dns server 5 resolve-domains corp.test", "dns server 5 dnssec optional",
               "dns server 5 transport DoT", "dns server 5 sni dns.corp.test")
    assert [s.priority for s in opts.servers] == [-3, 5]
    five = opts.servers[1]
    assert (five.resolve_domains, five.dnssec, five.transport, five.sni) == (
        ("corp.test",), "optional", "DoT", "dns.corp.test")


def test_a_pushed_priority_cannot_be_negative():
    dns("dns server -1 address 198.18.0.1")
    with pytest.raises(DnsOptionError, match="priority"):
        dns("dns server -1 address 198.18.0.1", pulled=True)


@pytest.mark.parametrize("line", [
    "dns server 128 address 198.18.0.1", "dns server x address 198.18.0.1",
    "dns server 0 dnssec maybe", "dns server 0 transport https", "dns server 0 sni",
    "dns server 0 frobnicate yes", "dns server 0 dnssec yes no", "dns search-domains",
    "dns search-domains bad..name", "dns servers 0 address 198.18.0.1",
    "dns server 0 address " + " ".join(f"198.18.0.{i}" for i in range(1, 10)),
])
def test_malformed_dns_lines_are_refused(line):
    with pytest.raises(DnsOptionError):
        dns(line)


def test_a_server_without_an_address_fails_the_check():
    with pytest.raises(DnsOptionError, match="does not have an address"):
        dns("dns server 1 dnssec yes").check()


def test_pulled_servers_replace_config_servers_of_the_same_priority_and_merge_by_priority():
    config = dns("dns server 0 address 198.18.1.0", "dns server 2 address 198.18.1.2",
                 "dns search-domains local.test")
    pulled = dns("dns server 0 address 198.18.2.0", "dns server 1 address 198.18.2.1",
                 "dns search-domains corp.test", pulled=True)
    merged = config.merged_with_pulled(pulled)
    assert [str(s.addresses[0]) for s in merged.servers] == [
        "198.18.2.0", "198.18.2.1", "198.18.1.2"]
    assert merged.search_domains == ("local.test", "corp.test")


def test_dhcp_option_dns_and_domains_make_a_split_dns_plan():
    plan = plan_dns(DnsOptions(), [("DNS", "198.18.0.53"), ("DNS6", "2001:2::53"),
                                   ("DOMAIN", "example.test"),
                                   ("DOMAIN-SEARCH", "corp.test")], None)
    assert servers(plan) == ["198.18.0.53", "2001:2::53"]
    assert plan.search_domains == ("example.test", "corp.test")
    assert plan.routing_domains == ()
    assert plan.default_route is False  # only the named domains go to the tunnel
    assert plan.source == "dhcp-option"


def test_adapter_domain_suffix_is_a_domain():
    plan = plan_dns(DnsOptions(), [("DNS", "198.18.0.53"),
                                   ("ADAPTER_DOMAIN_SUFFIX", "example.test")], None)
    assert plan.search_domains == ("example.test",)


def test_servers_without_domains_take_the_default_route():
    plan = plan_dns(DnsOptions(), [("DNS", "198.18.0.53")], None)
    assert plan.default_route is True
    assert plan.routing_domains == ()


@pytest.mark.parametrize("flags", [("def1",), (), ("def1", "bypass-dhcp"), ("!ipv4", "ipv6")])
def test_redirect_gateway_sends_every_name_to_the_tunnel(flags):
    plan = plan_dns(DnsOptions(), [("DNS", "198.18.0.53"), ("DOMAIN", "example.test")], flags)
    assert plan.routing_domains == (".",)
    assert plan.default_route is True
    assert plan.search_domains == ("example.test",)


def test_redirect_gateway_without_ipv4_or_ipv6_redirects_no_dns():
    plan = plan_dns(DnsOptions(), [("DNS", "198.18.0.53"), ("DOMAIN", "example.test")],
                    ("!ipv4",))
    assert plan.routing_domains == ()
    assert plan.default_route is False


def test_dns_servers_replace_dhcp_option_dns_but_keep_domain():
    plan = plan_dns(dns("dns server 1 address 198.18.0.2", "dns server 0 address 198.18.0.1"),
                    [("DNS", "198.18.9.9"), ("DOMAIN", "example.test"),
                     ("DOMAIN-SEARCH", "dhcp.test")], None)
    assert servers(plan) == ["198.18.0.1", "198.18.0.2"]
    assert plan.search_domains == ("example.test", "dhcp.test")
    assert plan.source == "dns"


def test_dns_search_domains_replace_dhcp_option_domain_search():
    plan = plan_dns(dns("dns search-domains corp.test"),
                    [("DNS", "198.18.9.9"), ("DOMAIN-SEARCH", "dhcp.test")], None)
    assert servers(plan) == ["198.18.9.9"]  # no dns server: dhcp-option DNS stays
    assert plan.search_domains == ("corp.test",)


def test_the_best_servers_resolve_domains_dnssec_and_dot_apply():
    plan = plan_dns(dns("dns server 0 address 198.18.0.1:853",
                        "dns server 0 resolve-domains corp.test lab.test",
                        "dns server 0 dnssec yes", "dns server 0 transport DoT",
                        "dns server 0 sni dns.corp.test",
                        "dns server 1 address 198.18.0.2", "dns server 1 dnssec no"), [], None)
    assert plan.routing_domains == ("corp.test", "lab.test")
    assert plan.default_route is False
    assert (plan.dnssec, plan.transport, plan.sni) == ("yes", "DoT", "dns.corp.test")
    assert servers(plan) == ["198.18.0.1:853", "198.18.0.2"]
    assert any("dns server 1" in note for note in plan.notes)


def test_doh_is_noted_and_not_applied():
    plan = plan_dns(dns("dns server 0 address 198.18.0.1", "dns server 0 transport DoH"),
                    [], None)
    assert plan.transport is None
    assert any("DoH" in note for note in plan.notes)


def test_windows_only_dhcp_options_are_noted_not_applied():
    plan = plan_dns(DnsOptions(), [("WINS", "198.18.0.9"), ("DISABLE-NBT", None)], None)
    assert plan.empty
    assert len(plan.notes) == 2 and "WINS 198.18.0.9" in plan.notes[0]


def test_nothing_given_is_an_empty_plan():
    plan = plan_dns(DnsOptions(), [], ("def1",))
    assert plan.empty and plan.default_route is False and plan.source == "none"


def test_resolv_conf_fragment_lists_servers_and_one_search_line():
    plan = plan_dns(dns("dns server 0 address 198.18.0.1:5353 2001:2::53",
                        "dns server 0 resolve-domains corp.test"),
                    [("DOMAIN", "example.test")], ("def1",))
    assert plan.resolv_conf() == ("nameserver 198.18.0.1\nnameserver 2001:2::53\n"
                                  "search example.test corp.test\n")


def test_foreign_options_are_the_dhcp_options_with_dns_replacing_dns_and_domain_search():
    from trivpn.protocol.dns import foreign_options
    opts = dns("dns server 1 address 198.18.0.2 2001:2::2", "dns search-domains corp.test")
    assert foreign_options(opts, [("DNS", "198.18.9.9"), ("DOMAIN", "example.test"),
                                  ("DOMAIN-SEARCH", "old.test"), ("DISABLE-NBT", None)]) == [
        "dhcp-option DOMAIN example.test", "dhcp-option DISABLE-NBT",
        "dhcp-option DNS 198.18.0.2", "dhcp-option DNS6 2001:2::2",
        "dhcp-option DOMAIN-SEARCH corp.test"]
    assert foreign_options(DnsOptions(), [("DNS", "198.18.9.9")]) == [
        "dhcp-option DNS 198.18.9.9"]


def test_script_env_numbers_servers_by_position():
    opts = dns("dns server 7 address 198.18.0.7:5353", "dns server 7 resolve-domains corp.test",
               "dns server 7 dnssec yes", "dns server 7 transport DoT", "dns server 7 sni s.test",
               "dns server -2 address 198.18.0.1", "dns search-domains a.test b.test")
    assert opts.script_env() == {
        "dns_search_domain_1": "a.test", "dns_search_domain_2": "b.test",
        "dns_server_1_address_1": "198.18.0.1",
        "dns_server_2_address_1": "198.18.0.7", "dns_server_2_port_1": "5353",
        "dns_server_2_resolve_domain_1": "corp.test", "dns_server_2_dnssec": "yes",
        "dns_server_2_transport": "DoT", "dns_server_2_sni": "s.test"}
