"""tunnel.traffic's cause when no echo reply comes: what the evidence shows (compression
framing, other data-channel options, decryption drops), the server's firewall only when
nothing else explains it. Against a real server: tests/diagnostics/test_scenarios.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trivpn.diagnostics.checks_tunnel import explain_no_reply
from trivpn.diagnostics.model import CheckResult, DoctorContext

OURS = ("V4,dev-type tun,link-mtu 1559,tun-mtu 1500,proto UDPv4,cipher AES-256-GCM,"
        "auth [null-cipher],keysize 256,key-method 2,tls-client")
SERVER = OURS.replace("tls-client", "tls-server")


def _ctx(server: str | None = SERVER, **occ: Any) -> DoctorContext:
    evidence = {"occ": {"local": OURS, "server": server, "negotiated_cipher": "AES-256-GCM",
                        "pushed_cipher": "AES-256-GCM", "pushed_compression": None,
                        "pushed_tun_mtu": None, **occ}}
    handshake = CheckResult("tls.handshake", "ok", "handshake complete", evidence)
    return DoctorContext(Path("client.conf"), None, "client", 10.0,
                         {"tls.handshake": handshake})


def test_server_compression_in_the_options_string_is_the_cause():
    cause, why, fix = explain_no_reply(_ctx(SERVER.replace(",key-method", ",comp-lzo,key-method")),
                                    {}, {}, "198.18.8.1")
    assert cause == "compression_mismatch"
    assert "without pushing it" in why and "firewall" not in fix


def test_packets_framed_for_compression_are_the_cause_without_options_strings():
    cause, why, _fix = explain_no_reply(_ctx(server=None), {}, {0xFA: 2}, "198.18.8.1")
    assert cause == "compression_mismatch"
    assert "2 starting with 0xFA" in why
    assert "options strings" not in why


def test_a_device_type_difference_is_named_before_any_firewall():
    cause, why, fix = explain_no_reply(_ctx(SERVER.replace("dev-type tun", "dev-type tap")), {},
                                    {}, "198.18.8.1")
    assert cause == "options_mismatch"
    assert "Ethernet frames (tap)" in why and "'dev tap'" in fix


def test_decryption_drops_point_at_keys_or_cipher():
    cause, why, _fix = explain_no_reply(_ctx(), {"auth_failed": 3}, {}, "198.18.8.1")
    assert cause == "keys_or_cipher"
    assert "auth_failed: 3" in why and "keys or cipher" in why


def test_the_firewall_is_named_only_when_nothing_else_explains_the_silence():
    cause, why, fix = explain_no_reply(_ctx(), {}, {}, "198.18.8.1")
    assert cause == "no_reply"
    assert "firewall on the tun interface" in why and "rp_filter" in why
    assert "198.18.8.1 is configured on its tun device" in fix
