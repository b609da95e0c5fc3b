"""server.listen, server.forwarding and server.firewall in namespaces the tests build."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

import pytest

from tests.conftest import require_openvpn
from tests.diagnostics.doctorkit import SERVER, by_id, context, write_config, write_pki
from tests.interop.openvpn import start_openvpn
from tests.netns import Netns, NetnsLab
from trivpn.diagnostics.checks_server import (
    CHECKS,
    Packet,
    iptables_forward_hits,
    iptables_input_hits,
    nat_rules_for,
    nat_verdict,
    parse_nat_rules,
    socket_inodes,
)
from trivpn.diagnostics.model import DoctorContext

LISTEN, FORWARDING, FIREWALL = (by_id(CHECKS, i) for i in
                                ("server.listen", "server.forwarding", "server.firewall"))


@pytest.fixture
def server_ns(netns_lab: NetnsLab) -> Netns:
    s, c = netns_lab.add("s"), netns_lab.add("c")
    netns_lab.veth(s, c, "198.18.0.2/24", "198.18.0.1/24")
    return s


def ctx_for(tmp_path: Path, ns: Netns, text: str = SERVER) -> DoctorContext:
    write_pki(tmp_path)
    return context(write_config(tmp_path, text), netns=ns.name)


# --- server.listen ----------------------------------------------------------------------------

async def test_free_port_is_ok(server_ns: Netns, tmp_path: Path) -> None:
    result = await LISTEN.run(ctx_for(tmp_path, server_ns))
    assert result.status == "ok"
    assert result.evidence == {"address": "0.0.0.0", "port": 1194, "proto": "udp"}


async def test_port_in_use_fails_naming_the_process(server_ns: Netns, tmp_path: Path) -> None:
    with server_ns.enter():
        holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with holder:
        holder.bind(("0.0.0.0", 1194))
        result = await LISTEN.run(ctx_for(tmp_path, server_ns))
    assert result.status == "fail"
    assert result.evidence["state"] == "in_use"
    assert [h["pid"] for h in result.evidence["held_by"]] == [os.getpid()]
    assert "ss -lunp" in result.fix


async def test_tcp_listener_in_use_fails(server_ns: Netns, tmp_path: Path) -> None:
    with server_ns.enter():
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with holder:
        holder.bind(("198.18.0.2", 4443))
        holder.listen()
        text = SERVER.replace("proto udp", "proto tcp-server").replace("port 1194", "port 4443")
        result = await LISTEN.run(ctx_for(tmp_path, server_ns, text))
    assert result.status == "fail"
    assert result.evidence["proto"] == "tcp"


async def test_port_held_by_running_openvpn_is_ok(server_ns: Netns, tmp_path: Path) -> None:
    require_openvpn()
    ctx = ctx_for(tmp_path, server_ns)
    proc = start_openvpn(server_ns, tmp_path, "running", SERVER.splitlines())
    assert proc.wait_for("Initialization Sequence Completed", timeout=10), proc.text()
    result = await LISTEN.run(ctx)
    assert result.status == "ok"
    assert result.evidence["held_by"][0]["pid"] == proc.pid


async def test_local_address_not_on_this_host_fails(server_ns: Netns, tmp_path: Path) -> None:
    result = await LISTEN.run(ctx_for(tmp_path, server_ns, SERVER + "local 198.18.9.9\n"))
    assert result.status == "fail"
    assert result.evidence["state"] == "address_not_local"
    assert "ip -brief addr" in result.fix


def test_socket_inodes_match_port_and_listen_state() -> None:
    text = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
            "timeout inode\n"
            "   0: 00000000:04AA 00000000:0000 07 00000000:00000000 00:00000000 00000000     0 "
            "0 4242 2 0000000000000000 0\n"
            "   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
            "0 777 1 0000000000000000 100 0 0 10 0\n")
    assert socket_inodes(text, 1194, listening_only=False) == {4242}
    assert socket_inodes(text, 80, listening_only=True) == {777}
    assert socket_inodes(text, 1194, listening_only=True) == set()


# --- server.firewall --------------------------------------------------------------------------

INPUT_CHAIN = """table inet filter {{
    chain input {{
        type filter hook input priority 0; policy {policy};
        {rules}
    }}
}}
"""


async def firewall(ns: Netns, tmp_path: Path, rules: str, policy: str = "accept",
                   text: str = SERVER) -> dict[str, object]:
    ns.nft(INPUT_CHAIN.format(policy=policy, rules=rules))
    result = await FIREWALL.run(ctx_for(tmp_path, ns, text))
    return {"status": result.status, "evidence": dict(result.evidence), "fix": result.fix}


async def test_nftables_drop_rule_for_the_port_fails(server_ns: Netns, tmp_path: Path) -> None:
    got = await firewall(server_ns, tmp_path, "udp dport 1194 drop;")
    assert got["status"] == "fail"
    evidence = got["evidence"]
    assert isinstance(evidence, dict)
    assert evidence["state"] == "blocked"
    (rule,) = evidence["rules"]
    assert rule["chain"] == "inet filter input"
    assert rule["verdict"] == "drop"
    assert "udp dport 1194" in rule["rule"]
    assert "nft add rule inet filter input udp dport 1194 accept" in str(got["fix"])


async def test_reject_of_a_port_set_fails(server_ns: Netns, tmp_path: Path) -> None:
    got = await firewall(server_ns, tmp_path, "udp dport { 53, 1194 } reject;")
    assert got["status"] == "fail"


async def test_drop_policy_without_accept_fails(server_ns: Netns, tmp_path: Path) -> None:
    got = await firewall(server_ns, tmp_path, "tcp dport 22 accept;", policy="drop")
    assert got["status"] == "fail"


async def test_accept_before_drop_policy_is_ok(server_ns: Netns, tmp_path: Path) -> None:
    got = await firewall(server_ns, tmp_path, "udp dport 1194 accept;", policy="drop")
    assert got["status"] == "ok"


async def test_drop_of_other_port_or_protocol_is_ok(server_ns: Netns, tmp_path: Path) -> None:
    got = await firewall(server_ns, tmp_path, "udp dport 53 drop; tcp dport 1194 drop;")
    assert got["status"] == "ok"


async def test_drop_limited_to_some_sources_warns(server_ns: Netns, tmp_path: Path) -> None:
    got = await firewall(server_ns, tmp_path, "ip saddr 198.18.5.0/24 udp dport 1194 drop;")
    assert got["status"] == "warn"


async def test_no_firewall_rules_is_ok(server_ns: Netns, tmp_path: Path) -> None:
    result = await FIREWALL.run(ctx_for(tmp_path, server_ns))
    assert result.status == "ok"


@pytest.mark.parametrize(("rules", "expected"), [
    ("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p udp -m udp --dport 1194 -j DROP\nCOMMIT\n",
     [("drop", False)]),
    ("*filter\n:INPUT DROP [0:0]\n-A INPUT -p udp -m udp --dport 1194 -j ACCEPT\nCOMMIT\n", []),
    ("*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n",
     [("drop", False)]),
    ("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 198.18.5.0/24 -p udp --dport 1190:1200 "
     "-j REJECT\nCOMMIT\n", [("reject", True)]),
    ("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p udp --dport 53 -j DROP\nCOMMIT\n", []),
])
def test_iptables_save_input_rules(rules: str, expected: list[tuple[str, bool]]) -> None:
    hits = iptables_input_hits(rules, "udp", 1194)
    assert [(h.verdict, h.conditional) for h in hits] == expected


# --- server.forwarding ------------------------------------------------------------------------

REDIRECT = SERVER + 'push "redirect-gateway def1"\n'


async def test_forwarding_off_with_redirect_gateway_fails(server_ns: Netns,
                                                          tmp_path: Path) -> None:
    server_ns.sysctl("net.ipv4.ip_forward", "0")
    result = await FORWARDING.run(ctx_for(tmp_path, server_ns, REDIRECT))
    assert result.status == "fail"
    assert result.evidence["ip_forward"] == "0"
    assert "sysctl -w net.ipv4.ip_forward=1" in result.fix


async def test_forwarding_on_without_nat_warns(server_ns: Netns, tmp_path: Path) -> None:
    server_ns.enable_forwarding()
    result = await FORWARDING.run(ctx_for(tmp_path, server_ns, REDIRECT))
    assert result.status == "warn"
    assert "198.19.0.0/24" in result.fix


async def test_forwarding_on_with_masquerade_is_ok(server_ns: Netns, tmp_path: Path) -> None:
    server_ns.enable_forwarding()
    server_ns.nft("table ip nat {\n chain postrouting {\n"
                  "  type nat hook postrouting priority 100;\n"
                  "  ip saddr 198.19.0.0/24 oifname \"veth0\" masquerade\n }\n}\n")
    result = await FORWARDING.run(ctx_for(tmp_path, server_ns, REDIRECT))
    assert result.status == "ok"
    assert any("masquerade" in r for r in result.evidence["nat_rules"])


async def test_no_pushes_need_no_forwarding(server_ns: Netns, tmp_path: Path) -> None:
    server_ns.sysctl("net.ipv4.ip_forward", "0")
    assert (await FORWARDING.run(ctx_for(tmp_path, server_ns))).status == "ok"


def test_nat_rule_for_another_network_does_not_count() -> None:
    import ipaddress
    pool = ipaddress.IPv4Network("198.19.0.0/24")
    other = "-A POSTROUTING -s 198.18.7.0/24 -o eth0 -j MASQUERADE\n"
    mine = "-A POSTROUTING -s 198.19.0.0/24 -o eth0 -j MASQUERADE\n"
    assert nat_rules_for(pool, "", other) == []
    assert nat_rules_for(pool, "", mine) == ["iptables: " + mine.strip()]


# --- FORWARD rules and NAT rules against the VPN subnet (legacy iptables-save text) -----------

def _pkt(ct: str = "new") -> Packet:
    if ct == "new":
        return Packet(ipaddress.IPv4Address("198.19.0.2"), None, "tun0", "wan0", "new")
    return Packet(None, ipaddress.IPv4Address("198.19.0.2"), "wan0", "tun0", "established")


@pytest.mark.parametrize(("rules", "new", "reply"), [
    (":FORWARD DROP [0:0]\n", [("drop", False)], [("drop", False)]),
    (":FORWARD DROP [0:0]\n-A FORWARD -i tun0 -o wan0 -s 198.19.0.0/24 -j ACCEPT\n"
     "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n", [], []),
    (":FORWARD DROP [0:0]\n-A FORWARD -i tun+ -j ACCEPT\n", [], [("drop", False)]),
    # the reply's source (a host beyond the uplink) is unknown: the rule may match it
    (":FORWARD ACCEPT [0:0]\n-A FORWARD -s 198.19.0.0/16 -j REJECT\n", [("reject", False)],
     [("reject", True)]),
    (":FORWARD ACCEPT [0:0]\n-A FORWARD -i eth7 -j DROP\n", [], []),
    (":FORWARD ACCEPT [0:0]\n-A FORWARD -p tcp --dport 25 -j DROP\n", [("drop", True)],
     [("drop", True)]),
])
def test_iptables_forward_rules_for_the_pool(rules: str, new: list[tuple[str, bool]],
                                              reply: list[tuple[str, bool]]) -> None:
    text = "# Generated by iptables-save v1.8.9 (legacy)\n*filter\n" + rules + "COMMIT\n"
    assert [(h.verdict, h.conditional) for h in iptables_forward_hits(text, _pkt())] == new
    assert [(h.verdict, h.conditional)
            for h in iptables_forward_hits(text, _pkt("reply"))] == reply


@pytest.mark.parametrize(("line", "fits"), [
    ("-A POSTROUTING -s 198.19.0.0/24 -o wan0 -j MASQUERADE", True),
    ("-A POSTROUTING -o wan0 -j MASQUERADE", True),
    ("-A POSTROUTING -s 198.19.0.0/16 -j SNAT --to-source 198.18.2.1", True),
    ("-A POSTROUTING -s 198.19.0.0/24 -o eth+ -j MASQUERADE", False),
    ("-A POSTROUTING -s 198.19.0.0/25 -o wan0 -j MASQUERADE", False),
    ("-A POSTROUTING -s 198.19.0.0/24 ! -o wan0 -j MASQUERADE", False),
])
def test_iptables_nat_rule_must_match_pool_and_uplink(line: str, fits: bool) -> None:
    (rule,) = parse_nat_rules("", line + "\n")
    ok_, why = nat_verdict(rule, ipaddress.IPv4Network("198.19.0.0/24"), "wan0")
    assert ok_ is fits, why
    assert (why is None) is fits
