"""``dns`` and ``dhcp-option`` in a config file (trivpn/config/dns.py; applied by the client,
docs/dns.md)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from tests.config.helpers import client, server
from trivpn.config import ConfigError
from trivpn.protocol.dns import DnsAddress


@pytest.mark.directive("dns")
def test_dns_lines_build_servers_and_search_domains():
    o = client("dns server 0 address 198.18.0.53\ndns server 0 dnssec optional\n"
               "dns search-domains example.test corp.test\n")
    assert o.dns.servers[0].addresses == (DnsAddress(IPv4Address("198.18.0.53")),)
    assert o.dns.servers[0].dnssec == "optional"
    assert o.dns.search_domains == ("example.test", "corp.test")


@pytest.mark.directive("dns")
def test_a_malformed_dns_line_names_the_file_and_line():
    with pytest.raises(ConfigError) as info:
        client("dns server 0 transport carrier-pigeon\n")
    assert info.value.line == 8 and "transport" in str(info.value)


@pytest.mark.directive("dns")
def test_a_dns_server_without_an_address_is_refused():
    with pytest.raises(ConfigError, match="does not have an address"):
        client("dns server 3 resolve-domains corp.test\n")


@pytest.mark.directive("dhcp-option")
def test_dhcp_option_lines_are_kept_in_order():
    o = client("dhcp-option DNS 198.18.0.53\ndhcp-option DOMAIN example.test\n"
               "dhcp-option DISABLE-NBT\n")
    assert o.dhcp_options == (("DNS", "198.18.0.53"), ("DOMAIN", "example.test"),
                              ("DISABLE-NBT",))


@pytest.mark.directive("dhcp-option")
@pytest.mark.parametrize("line", ["dhcp-option DNS resolver.example",
                                  "dhcp-option DOMAIN", "dhcp-option DOMAIN-SEARCH -bad-"])
def test_a_dhcp_option_trivpn_would_apply_must_be_well_formed(line):
    with pytest.raises(ConfigError) as info:
        client(line + "\n")
    assert info.value.line == 8


@pytest.mark.directive("dns", "dhcp-option")
@pytest.mark.parametrize("line", ["dns server 0 address 198.18.0.53",
                                  "dhcp-option DNS 198.18.0.53"])
def test_dns_settings_in_a_server_config_are_refused(line):
    with pytest.raises(ConfigError, match="clients only"):
        server(line + "\n")
