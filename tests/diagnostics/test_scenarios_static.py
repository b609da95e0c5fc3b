"""`trivpn doctor` on static-key configs (``secret FILE [direction]``, no TLS), against the real
openvpn 2.6 ``--secret`` peer in namespaces: ``srv`` (198.18.0.1, the waiting side) and
``cli`` (198.18.0.2, where the doctor probes from). Tunnel 198.18.9.1 <-> 198.18.9.2."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from tests.conftest import require_netns, require_openvpn
from tests.diagnostics.scenariokit import SERVER_IP, Scenario, scenario
from trivpn.commands.doctor import build_context
from trivpn.diagnostics.model import CheckResult, DoctorContext
from trivpn.diagnostics.registry import all_checks
from trivpn.diagnostics.runner import run_checks
from trivpn.diagnostics.tunnel_session import TunnelBroker
from trivpn.protocol.statickey import StaticKey, format_static_key

pytestmark = pytest.mark.integration

WAIT_TUN, CONNECT_TUN = "198.18.9.1", "198.18.9.2"
TLS_ONLY = ("pki.chain", "pki.validity", "pki.key_match", "pki.eku", "tls.keys",
            "tls.handshake", "tls.server_cert", "compat.occ", "pki.crl", "pki.policy")


@pytest.fixture
def sc(tmp_path: Path) -> Iterator[Scenario]:
    require_netns()
    require_openvpn()
    with scenario(tmp_path) as made:
        _write_key(made.workdir / "static.key")
        yield made


def _write_key(path: Path) -> None:
    path.write_text(format_static_key(StaticKey(os.urandom(256))))
    path.chmod(0o600)


def _waiting(direction: str = "0", *extra: str, key: str = "static.key") -> list[str]:
    return ["dev tun", "proto udp", f"local {SERVER_IP}", "lport 1194",
            f"secret {key} {direction}".strip(), "cipher AES-256-CBC",
            f"ifconfig {WAIT_TUN} {CONNECT_TUN}", "verb 4", *extra]


def _connecting(direction: str = "1", *extra: str) -> list[str]:
    return ["dev tun", "proto udp", f"remote {SERVER_IP} 1194", "nobind",
            f"secret static.key {direction}".strip(), "cipher AES-256-CBC",
            f"ifconfig {CONNECT_TUN} {WAIT_TUN}", "verb 4", *extra]


def _start_peer(sc: Scenario, lines: list[str]) -> None:
    proc = sc.start_openvpn(lines, "peer")
    ready = ("Listening for incoming TCP connection" if "proto tcp-server" in lines
             else "link remote")
    assert proc.wait_for(ready, 10), proc.text()[-3000:]


async def _doctor(ctx: DoctorContext) -> dict[str, CheckResult]:
    """As 'trivpn doctor CONFIG' runs: every registered check for the context's role."""
    async with TunnelBroker() as broker:
        report = await run_checks(all_checks(), replace(ctx, tunnel=broker))
    return {r.id: r for r in report.checks}


def _client_ctx(sc: Scenario, lines: list[str]) -> DoctorContext:
    return build_context(sc.client_config(lines), 10.0, sc.client.name)


def _summaries(results: dict[str, CheckResult]) -> dict[str, str]:
    return {i: f"{r.status}: {r.summary}" for i, r in results.items()}


async def test_healthy_static_key_peer_gives_no_warning(sc: Scenario):
    _start_peer(sc, _waiting("0"))
    start = trio.current_time()
    results = await _doctor(_client_ctx(sc, _connecting("1")))
    assert trio.current_time() - start < 15

    bad = {i: r.summary for i, r in results.items() if r.status in ("warn", "fail", "error")}
    assert not bad, bad
    assert results["port.reachable"].status == "ok"
    peer = results["static.peer"]
    assert peer.status == "ok", peer.summary
    assert peer.evidence["answered_by"] == {"direction": 1, "cipher": "AES-256-CBC",
                                            "auth": "SHA1"}
    assert "secret" in peer.evidence["peer_options"].split(",")
    # OpenVPN's string carries the peer's ifconfig written from our side: it matches ours
    assert f"ifconfig {CONNECT_TUN} {WAIT_TUN}" in peer.evidence["peer_options"].split(",")
    assert "ifconfig" not in {m["item"] for m in peer.evidence["mismatches"]}
    for check_id in TLS_ONLY:
        assert results[check_id].status == "skip"
        assert "static-key mode" in results[check_id].summary
    assert "static-key mode" in results["tunnel.traffic"].summary


async def test_healthy_static_key_peer_over_tcp_gives_no_warning(sc: Scenario):
    _start_peer(sc, [ln.replace("proto udp", "proto tcp-server") for ln in _waiting("0")])
    results = await _doctor(_client_ctx(
        sc, [ln.replace("proto udp", "proto tcp-client") for ln in _connecting("1")]))

    bad = {i: r.summary for i, r in results.items() if r.status in ("warn", "fail", "error")}
    assert not bad, bad
    assert results["port.reachable"].evidence["tcp"] == "connected"
    assert results["static.peer"].status == "ok"


async def test_peer_with_another_key_is_named_with_the_filter_it_looks_like(sc: Scenario):
    _write_key(sc.workdir / "other.key")
    _start_peer(sc, _waiting("0", key="other.key"))
    results = await _doctor(_client_ctx(sc, _connecting("1")))

    port = results["port.reachable"]
    assert port.status == "fail"
    assert port.evidence["state"] == "filtered"
    assert "another static key" in port.summary
    assert "filtered" in port.summary
    assert "Authenticate/Decrypt packet error" in port.explanation
    assert "same key file" in port.fix
    # the claim that tells the two apart, checked against the real peer's log
    assert "Authenticate/Decrypt packet error: packet HMAC authentication failed" in \
        sc.servers[0].text()
    assert results["static.peer"].status == "skip"


async def test_swapped_key_direction_is_named_as_the_direction(sc: Scenario):
    _start_peer(sc, _waiting("0"))
    results = await _doctor(_client_ctx(sc, _connecting("0")))  # both sides 0

    assert results["port.reachable"].status == "warn"
    peer = results["static.peer"]
    assert peer.status == "fail", peer.summary
    assert peer.evidence["differs"] == ["direction"]
    assert peer.evidence["answered_by"]["direction"] == 1
    assert "direction" in peer.summary
    assert "'secret FILE 1'" in peer.fix
    assert "client.conf line 5" in peer.fix


async def test_another_auth_digest_is_named(sc: Scenario):
    _start_peer(sc, _waiting("0", "auth SHA256"))
    results = await _doctor(_client_ctx(sc, _connecting("1")))

    peer = results["static.peer"]
    assert peer.status == "fail", peer.summary
    assert peer.evidence["differs"] == ["auth"]
    assert "auth SHA256" in peer.summary
    assert "'auth SHA256'" in peer.fix


async def test_another_cipher_is_named(sc: Scenario):
    _start_peer(sc, [*(ln for ln in _waiting("0") if not ln.startswith("cipher")),
                     "cipher AES-128-CBC"])
    results = await _doctor(_client_ctx(sc, _connecting("1")))

    peer = results["static.peer"]
    assert peer.status == "fail", peer.summary
    assert peer.evidence["differs"] == ["cipher"]
    assert "'cipher AES-128-CBC'" in peer.fix


async def test_tunnel_addresses_that_do_not_mirror_the_peers_are_named(sc: Scenario):
    _start_peer(sc, [*(ln for ln in _waiting("0") if not ln.startswith("ifconfig")),
                     f"ifconfig {WAIT_TUN} 198.18.9.3"])
    results = await _doctor(_client_ctx(sc, _connecting("1")))

    peer = results["static.peer"]
    assert peer.status == "warn", peer.summary
    assert "ifconfig (peer 198.18.9.3 198.18.9.1" in peer.summary
    assert "client.conf line 7" in peer.fix


async def test_peer_behind_a_dropping_firewall_is_filtered_or_another_key(sc: Scenario):
    _start_peer(sc, _waiting("0"))
    sc.server.nft("table inet doctortest {\n chain input {\n"
                  "  type filter hook input priority 0; policy accept;\n"
                  "  udp dport 1194 drop\n }\n}\n")
    results = await _doctor(_client_ctx(sc, _connecting("1")))

    port = results["port.reachable"]
    assert port.status == "fail"
    assert port.evidence["state"] == "filtered"
    assert "filtered, or a peer with another static key" in port.summary
    assert "nft add rule inet filter input udp dport 1194 accept" in port.fix
    assert "Authenticate/Decrypt packet error" not in sc.servers[0].text()


async def test_peer_answering_from_its_other_address_is_named(sc: Scenario):
    # The peer prefers its second address as the source on the shared link; an openvpn
    # without 'local' or 'multihome' answers from it.
    sc.server.add_address("veth0", "198.18.0.9/24")
    sc.server.ip("route", "replace", "198.18.0.0/24", "dev", "veth0", "src", "198.18.0.9")
    _start_peer(sc, [ln for ln in _waiting("0") if not ln.startswith("local ")])
    results = await _doctor(_client_ctx(sc, _connecting("1")))

    port = results["port.reachable"]
    assert port.status == "fail", port.summary
    assert port.evidence["reply_from"] == "198.18.0.9:1194"
    assert f"local {SERVER_IP}" in port.fix
    assert results["nat.reply_source"].status == "skip"
    assert "static-key mode" in results["nat.reply_source"].summary


async def test_peer_not_running_is_closed(sc: Scenario):
    results = await _doctor(_client_ctx(sc, _connecting("1")))

    port = results["port.reachable"]
    assert port.status == "fail"
    assert port.evidence["state"] == "closed"
    assert "nothing listens" in port.summary
    assert results["static.peer"].status == "skip"
    assert "state=closed" in results["static.peer"].summary


async def test_waiting_side_gets_the_server_side_checks_only(sc: Scenario):
    lines = _waiting("0")
    _start_peer(sc, lines)
    config = sc.workdir / "wait.conf"
    config.write_text("\n".join(lines) + "\n")
    ctx = build_context(config, 10.0, sc.server.name)
    results = await _doctor(ctx)

    assert ctx.role == "server"
    bad = {i: r.summary for i, r in results.items() if r.status in ("warn", "fail", "error")}
    assert not bad, bad
    assert "port.reachable" not in results and "static.peer" not in results
    assert results["server.listen"].status == "ok"
    assert "run the doctor on the peer's config" in results["pki.chain"].summary


# --- TLS peer-to-peer mode: tls-client without pull against 'openvpn --tls-server' (p2p) ---

def _p2p_server(*extra: str) -> list[str]:
    return ["tls-server", "dev tun", "proto udp", f"local {SERVER_IP}", "lport 1194",
            "ca ca.crt", "cert server.crt", "key server.key", "dh none",
            f"ifconfig {WAIT_TUN} {CONNECT_TUN}", "keepalive 2 10", "verb 4", *extra]


def _p2p_client(*extra: str) -> list[str]:
    return ["tls-client", "dev tun", "proto udp", f"remote {SERVER_IP} 1194", "nobind",
            "ca ca.crt", "cert client.crt", "key client.key", "remote-cert-tls server",
            f"ifconfig {CONNECT_TUN} {WAIT_TUN}", "keepalive 2 10", *extra]


async def test_healthy_p2p_tls_server_gives_no_warning(sc: Scenario):
    _start_peer(sc, _p2p_server())
    start = trio.current_time()
    results = await _doctor(_client_ctx(sc, _p2p_client()))
    assert trio.current_time() - start < 15

    bad = {i: r.summary for i, r in results.items() if r.status in ("warn", "fail", "error")}
    assert not bad, bad
    assert "static.peer" not in results
    assert results["tls.handshake"].status == "ok"
    phases = [p["phase"] for p in results["tls.handshake"].evidence["timeline"]]
    assert "push_request_sent" not in phases
    assert results["tunnel.traffic"].status == "ok", results["tunnel.traffic"]


async def test_p2p_tls_server_config_is_diagnosed_as_a_server(sc: Scenario):
    lines = _p2p_server()
    _start_peer(sc, lines)
    config = sc.workdir / "p2p-server.conf"
    config.write_text("\n".join(lines) + "\n")
    ctx = build_context(config, 10.0, sc.server.name)
    results = await _doctor(ctx)

    assert ctx.role == "server"
    bad = {i: r.summary for i, r in results.items() if r.status in ("warn", "fail", "error")}
    assert not bad, bad
    assert results["server.listen"].status == "ok"
