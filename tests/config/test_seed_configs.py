"""The classic OpenVPN sample server.conf/client.conf and an inline .ovpn parse unchanged.

The classic sample must parse unchanged, so its private network stays in the fixture as config
text: parsed only, never assigned or sent to. The expected addresses below are offsets into the
network the fixture's ``server`` line names (read from the file, independently of the parser).
"""

from __future__ import annotations

import ipaddress

from tests.config.helpers import FIXTURES
from trivpn.config import (
    Ifconfig,
    Keepalive,
    Remote,
    address_pool,
    load_config,
    parse_config,
    ping_settings,
    server_push_options,
    server_tun_ifconfig,
)

IP = ipaddress.IPv4Address


def _fixture_network(name: str = "server.conf") -> ipaddress.IPv4Network:
    """The network of a fixture's ``server NET MASK`` line, read as plain text."""
    for line in (FIXTURES / name).read_text().splitlines():
        words = line.split()
        if words[:1] == ["server"]:
            return ipaddress.IPv4Network(f"{words[1]}/{words[2]}")
    raise AssertionError("the seed server.conf has no server line")


NET = _fixture_network()


def _at(offset: int) -> ipaddress.IPv4Address:
    return NET.network_address + offset


def test_seed_server_conf_roles_and_transport() -> None:
    o = load_config(FIXTURES / "server.conf")
    assert (o.role, o.tls_role, o.mode, o.pull) == ("server", "server", "server", False)
    assert (o.proto, o.port, o.lport, o.dev, o.dev_type) == ("udp", 1194, 1194, "tun", "tun")
    assert o.topology == "net30"
    assert o.server is not None
    assert o.server.network == NET and NET.prefixlen == 24
    assert o.server.nopool is False
    assert o.keepalive == Keepalive(10, 120, line=10)
    assert (o.user, o.group, o.persist_key, o.persist_tun, o.verb) == (
        "nobody", "nogroup", True, True, 3)


def test_seed_server_conf_reads_referenced_files() -> None:
    o = load_config(FIXTURES / "server.conf")
    assert o.ca is not None and o.ca.path == FIXTURES / "ca.crt"
    assert o.ca.text == (FIXTURES / "ca.crt").read_text()
    assert o.key is not None and o.key.text is not None
    assert o.key.text.startswith("-----BEGIN PRIVATE KEY-----\n")
    assert o.dh is not None and o.dh != "none" and o.dh.path == FIXTURES / "dh1024.pem"
    assert o.dh.text == (FIXTURES / "dh1024.pem").read_text()


def test_seed_server_conf_push_list_and_keepalive_expansion() -> None:
    o = load_config(FIXTURES / "server.conf")
    assert server_push_options(o) == (f"route {_at(1)}", "topology net30", "ping 10",
                                      "ping-restart 120")
    own = ping_settings(o)
    assert (own.ping, own.ping_restart) == (10, 240)


def test_seed_server_conf_tun_address_and_net30_pool() -> None:
    o = load_config(FIXTURES / "server.conf")
    assert server_tun_ifconfig(o) == Ifconfig(_at(1), _at(2))
    pool = address_pool(o)
    assert pool is not None
    assert (pool.start, pool.end, len(pool)) == (_at(4), _at(251), 62)
    assert pool.entry(0).ifconfig_option() == f"ifconfig {_at(6)} {_at(5)}"
    assert pool.entry(1).ifconfig_option() == f"ifconfig {_at(10)} {_at(9)}"
    assert pool.entry(61).ifconfig_option() == f"ifconfig {_at(250)} {_at(249)}"


def test_seed_server_conf_warns_about_net30() -> None:
    o = load_config(FIXTURES / "server.conf")
    assert [(w.line, "net30" in w.message) for w in o.warnings] == [(9, True)]


def test_seed_server_conf_records_directive_lines() -> None:
    o = load_config(FIXTURES / "server.conf")
    assert o.directive_lines["server"] == 9
    assert o.location("keepalive") == (FIXTURES / "server.conf", 10)
    assert o.location("tls-auth") is None


def test_seed_client_conf() -> None:
    o = load_config(FIXTURES / "client.conf")
    assert (o.role, o.tls_role, o.mode, o.pull) == ("client", "client", "p2p", True)
    assert (o.proto, o.dev_type) == ("udp", "tun")
    assert o.remotes == (Remote("my-server-1", 1194, "udp", None, line=7),)
    assert o.cert is not None and o.cert.text == (FIXTURES / "client.crt").read_text()
    assert (o.user, o.group, o.persist_key, o.persist_tun, o.verb) == (
        "nobody", "nogroup", True, True, 3)
    assert o.keepalive is None
    assert server_push_options(o) == ()
    assert address_pool(o) is None


def test_seed_client_conf_warns_about_missing_server_verification() -> None:
    o = load_config(FIXTURES / "client.conf")
    assert len(o.warnings) == 1
    assert "remote-cert-tls server" in o.warnings[0].message


def test_inline_ovpn_blocks_are_kept_verbatim() -> None:
    text = (FIXTURES / "inline.ovpn").read_text()
    o = load_config(FIXTURES / "inline.ovpn")
    assert o.ca is not None and o.ca.path is None and o.ca.line == 10
    assert o.ca.read_text() == (FIXTURES / "ca.crt").read_text()
    assert o.cert is not None and o.cert.read_text() == (FIXTURES / "client.crt").read_text()
    assert o.key is not None and o.key.read_text() == (FIXTURES / "client.key").read_text()
    assert o.tls_auth is not None
    tls_auth = o.tls_auth.read_text()
    assert tls_auth.startswith("#\n# 2048 bit OpenVPN static key")
    assert tls_auth.endswith("-----END OpenVPN Static key V1-----\n")
    assert tls_auth in text


def test_inline_ovpn_options() -> None:
    o = load_config(FIXTURES / "inline.ovpn")
    assert o.key_direction == 1
    assert o.remotes == (
        Remote("vpn.example.com", 1194, "udp", None, line=4),
        Remote("backup.example.com", 443, "tcp-client", None, line=5),
    )
    assert (o.nobind, o.resolv_retry, o.remote_cert_tls, o.verb) == (True, None, "server", 3)
    assert o.warnings == ()
    assert o.directive_lines["verb"] == 51


def test_inline_contents_never_appear_in_repr() -> None:
    o = load_config(FIXTURES / "inline.ovpn")
    assert "PRIVATE KEY" not in repr(o)
    assert "Static key" not in repr(o)


DOC_SERVER = (FIXTURES / "server-26-docs.conf").read_text()  # verbatim from the 2.6 docs

DOC_CLIENT = """client
dev tun
proto udp
remote vpn.example.com 1194
resolv-retry infinite
nobind
persist-key
persist-tun
remote-cert-tls server
<ca>
ca
</ca>
<cert>
cert
</cert>
<key>
key
</key>
<tls-crypt>
tls-crypt key
</tls-crypt>
verb 3
"""


def test_minimal_26_server_from_the_docs() -> None:
    o = parse_config(DOC_SERVER, "server.conf")
    assert (o.role, o.topology, o.dh, o.explicit_exit_notify) == ("server", "subnet", "none", 1)
    assert o.tls_crypt is not None and o.tls_crypt.path is not None
    assert o.tls_crypt.path.name == "ta.key"
    net = _fixture_network("server-26-docs.conf")
    gateway = net.network_address + 1
    assert server_push_options(o) == (f"route-gateway {gateway}", "topology subnet", "ping 10",
                                      "ping-restart 120")
    assert server_tun_ifconfig(o) == Ifconfig(gateway, net.netmask)
    assert o.warnings == ()


def test_minimal_26_client_from_the_docs() -> None:
    o = parse_config(DOC_CLIENT, "client.ovpn")
    assert o.tls_crypt is not None and o.tls_crypt.read_text() == "tls-crypt key\n"
    assert (o.nobind, o.bind_local, o.key_direction) == (True, False, None)
    assert o.warnings == ()
