"""compat.versions and compat.occ against a real openvpn 2.6 server in namespaces: a healthy
setup, and the server's configuration disagreeing with the client's (compression not pushed,
tun-mtu, a cipher-only client). The server's options string comes from the real server through
tls.handshake's evidence."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import require_netns, require_openvpn
from tests.diagnostics.scenariokit import Scenario, client_lines, scenario, server_lines
from trivpn.diagnostics import (
    checks_compat,
    checks_mtu,
    checks_nat,
    checks_port,
    checks_tls,
    checks_tunnel,
)
from trivpn.diagnostics.checks_compat import expected_remote, parse_options_string
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext
from trivpn.diagnostics.runner import run_checks
from trivpn.diagnostics.tunnel_session import TunnelBroker

pytestmark = pytest.mark.integration

CHECKS: tuple[Check, ...] = (*checks_port.CHECKS, *checks_nat.CHECKS, *checks_tls.CHECKS,
                             *checks_mtu.CHECKS, *checks_tunnel.CHECKS, *checks_compat.CHECKS)
OCC_MISMATCH = "is used inconsistently"
HANDSHAKE = next(c for c in checks_tls.CHECKS if c.id == "tls.handshake")


@pytest.fixture
def sc(tmp_path: Path) -> Iterator[Scenario]:
    require_netns()
    require_openvpn()
    with scenario(tmp_path) as made:
        yield made


def _start_server(sc: Scenario, lines: list[str]) -> None:
    proc = sc.start_openvpn(lines)
    assert proc.wait_for("Initialization Sequence Completed"), proc.text()


async def _report(ctx: DoctorContext) -> dict[str, CheckResult]:
    # one shared session, as 'trivpn doctor' runs them: without it every check that needs
    # the data channel makes its own handshake and the server drops the previous one
    async with TunnelBroker() as broker:
        report = await run_checks(CHECKS, replace(ctx, tunnel=broker))
    return {r.id: r for r in report.checks}


async def test_healthy_openvpn_server_gives_no_compat_warning(sc: Scenario):
    _start_server(sc, server_lines("tls-crypt"))
    ctx = sc.context(sc.client_config(client_lines("tls-crypt")))
    results = await _report(ctx)

    assert {i: r.status for i, r in results.items()} == {c.id: "ok" for c in CHECKS}, \
        {i: r.summary for i, r in results.items()}
    occ = results["compat.occ"].evidence
    # trivpn's options string is what a 2.6 client sends: the server's is its mirror image
    assert parse_options_string(occ["server_options"]) == expected_remote(
        parse_options_string(occ["our_options"]))
    assert occ["mismatches"] == []
    assert OCC_MISMATCH not in sc.server_log()


@pytest.mark.parametrize(("compression", "status"), [("compress lz4-v2", "warn"),
                                                     ("comp-lzo", "fail")])
async def test_server_compression_without_push_is_named_with_the_fix(sc: Scenario,
                                                                      compression: str,
                                                                      status: str):
    # verb 7: OpenVPN 2.6 logs option-string differences only at that level (D_SHOW_OCC)
    _start_server(sc, server_lines("tls-crypt", extra=[compression, "verb 7"]))
    ctx = sc.context(sc.client_config(client_lines("tls-crypt")))
    results = await _report(ctx)

    occ = results["compat.occ"]
    # lz4-v2 frames only compressed packets (none here): traffic flows; comp-lzo frames all
    assert occ.status == status, occ.summary
    assert results["tunnel.traffic"].status == ("ok" if status == "warn" else "fail")
    assert "comp-lzo (server present, ours absent)" in occ.summary
    [mismatch] = [m for m in occ.evidence["mismatches"] if m["severity"] != "note"]
    assert (mismatch["item"], mismatch["server"], mismatch["ours"]) == ("comp-lzo", "", None)
    assert "comp-lzo" in occ.evidence["server_options"].split(",")
    assert "did not push it" in occ.explanation
    assert "remove 'compress'/'comp-lzo' from the server" in occ.fix
    assert "verb 7" in occ.explanation
    # what the explanation says OpenVPN logs, the real server logged (at verb 7)
    assert ("WARNING: 'comp-lzo' is present in local config but missing in remote config"
            in sc.servers[0].text()), sc.server_log()
    if compression == "comp-lzo":  # the server drops our packets, as the explanation says
        assert "Bad LZO decompression header byte" in sc.servers[0].text()
        assert "Bad LZO decompression header byte" in occ.explanation
        assert "which is why tunnel.traffic failed" in occ.explanation


async def test_server_tun_mtu_above_the_clients_limit_is_named_with_tun_mtu_max(sc: Scenario):
    # a 2.6 server pushes its tun-mtu to 2.6 clients; one above tun-mtu-max (1600) is capped
    _start_server(sc, server_lines("tls-crypt", extra=["tun-mtu 1700"]))
    ctx = sc.context(sc.client_config(client_lines("tls-crypt")))
    results = await _report(ctx)

    occ = results["compat.occ"]
    found = {m["item"]: m for m in occ.evidence["mismatches"]}
    assert occ.status == "warn", occ.summary
    assert (found["tun-mtu"]["server"], found["tun-mtu"]["ours"]) == ("1700", "1500")
    assert found["tun-mtu"]["severity"] == "warn"
    assert found["link-mtu"]["severity"] == "note"
    assert "Add 'tun-mtu-max 1700'" in occ.fix
    assert results["tls.handshake"].evidence["occ"]["pushed_tun_mtu"] == 1700  # pushed
    # what the explanation quotes from the server, the real server logged (at verb 4)
    log = sc.servers[0].text()
    assert ("reported maximum MTU from client (1600) is lower than MTU used on the server "
            "(1700)") in log, log[-3000:]
    assert "reported maximum MTU from client ... is lower than MTU used on the server" in \
        occ.explanation
    assert OCC_MISMATCH not in log  # the options-string difference itself: only at verb 7


async def test_cipher_only_client_is_told_its_cipher_is_not_used(sc: Scenario):
    _start_server(sc, server_lines("tls-crypt", extra=["data-ciphers AES-256-GCM"]))
    ctx = sc.context(sc.client_config(client_lines("tls-crypt", extra=["cipher AES-128-CBC"])))
    results = await _report(ctx)

    assert results["tls.handshake"].status == "ok"
    assert results["tls.handshake"].evidence["cipher"] == "AES-256-GCM"
    occ = results["compat.occ"]
    assert occ.status == "warn", occ.summary
    assert occ.evidence["cipher_directive"] == {
        "configured": "AES-128-CBC", "negotiated": "AES-256-GCM",
        "where": f"{ctx.config_path}:11", "in_data_ciphers": False}
    assert "'cipher AES-128-CBC' is not used: the server negotiated AES-256-GCM" in occ.summary
    assert "Data channel cipher negotiation failed (no shared cipher)" in occ.explanation
    versions = results["compat.versions"]
    assert versions.status == "warn"
    assert "v26.cipher_ignored" in {f["rule"] for f in versions.evidence["findings"]}


@pytest.mark.parametrize(("server_extra", "item", "server_value", "ours"), [
    (["dev tap"], "dev-type", "tap", "tun"),
    (["fragment 1300"], "mtu-dynamic", "", None)])
async def test_server_framing_the_client_does_not_share_fails(
        sc: Scenario, server_extra: list[str], item: str, server_value: str,
        ours: str | None):
    lines = [line for line in server_lines("tls-crypt")
             if not (line == "dev tun" and "dev tap" in server_extra)]
    _start_server(sc, [*lines, *server_extra])
    ctx = sc.context(sc.client_config(client_lines("tls-crypt")))
    results = await _report(ctx)

    occ = results["compat.occ"]
    assert occ.status == "fail", occ.summary
    found = {m["item"]: m for m in occ.evidence["mismatches"]}
    assert (found[item]["server"], found[item]["ours"]) == (server_value, ours)
    assert results["tunnel.traffic"].status != "ok"


async def test_auth_mismatch_under_a_cbc_cipher_fails_and_the_server_rejects_our_packets(
        sc: Scenario):
    _start_server(sc, server_lines("tls-crypt", extra=["data-ciphers AES-256-CBC",
                                                       "auth SHA256"]))
    ctx = sc.context(sc.client_config(client_lines("tls-crypt",
                                                   extra=["data-ciphers AES-256-CBC"])))
    results = await _report(ctx)

    assert results["tls.handshake"].evidence["cipher"] == "AES-256-CBC"
    occ = results["compat.occ"]
    found = {m["item"]: m for m in occ.evidence["mismatches"]}
    assert occ.status == "fail", occ.summary
    assert (found["auth"]["server"], found["auth"]["ours"]) == ("SHA256", "SHA1")
    assert "Set 'auth SHA256'" in occ.fix
    assert results["tunnel.traffic"].status == "fail"
    # "each side rejects the other's packets": the real server does
    assert "packet HMAC authentication failed" in sc.servers[0].text(), sc.server_log()


async def test_openvpn_2_6_applies_tls_cipher_to_tls_1_2_only(sc: Scenario):
    """compat_rules v26.tls_cipher_tls12_only: a 2.6 server whose tls-cipher allows only
    RSA-authenticated TLS 1.2 suites (its certificate is EC) still completes TLS 1.3, and
    refuses TLS 1.2."""
    _start_server(sc, server_lines(
        "tls-crypt", extra=["tls-cipher TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"]))
    tls13 = sc.context(sc.client_config(client_lines("tls-crypt")))
    handshake = await HANDSHAKE.run(tls13)
    assert handshake.status == "ok", handshake.summary
    assert "TLSv1.3" in handshake.evidence["tls"]
    tls12 = sc.context(sc.client_config(client_lines("tls-crypt",
                                                     extra=["tls-version-max 1.2"]),
                                        name="tls12.conf"), timeout=5.0)
    refused = await HANDSHAKE.run(tls12)
    assert refused.status == "fail", refused.summary
    assert "TLSv1.3" not in str(refused.evidence.get("tls"))
    assert refused.evidence["cause"] == "tls_alert", refused.summary
    assert "no shared cipher" in sc.servers[0].text()


def test_openvpn_2_6_client_does_not_offer_a_cipher_missing_from_data_ciphers(sc: Scenario):
    """compat_rules v26.cipher_ignored and compat.occ's cipher note: a real 2.6 client with
    'cipher AES-128-CBC' (not in its data-ciphers) does not offer it, so a 2.6 server that has
    only that cipher refuses it with the reason compat.occ quotes."""
    _start_server(sc, server_lines("tls-crypt", extra=["data-ciphers AES-128-CBC"]))
    client = sc.start_openvpn_in(sc.client, [*client_lines("tls-crypt"), "cipher AES-128-CBC",
                                             "dev null", "verb 3"], name="ovpn-cipher")
    try:
        assert client.wait_for("AUTH_FAILED", timeout=10), client.text()
        assert "OpenVPN ignores --cipher for cipher negotiations" in client.text()
        assert sc.servers[0].wait_for(
            "Data channel cipher negotiation failed (no shared cipher)", timeout=5), \
            sc.server_log()
    finally:
        os.kill(client.pid, signal.SIGTERM)  # the lab also kills it at teardown


async def test_comp_lzo_no_against_compress_stub_is_suspected_when_traffic_fails(
        sc: Scenario):
    """Both options strings say 'comp-lzo', but 'comp-lzo no' and 'compress' (stub) frame
    packets differently: traffic fails, and compat.occ names the compression lines."""
    _start_server(sc, server_lines("tls-crypt", extra=["comp-lzo no"]))
    ctx = sc.context(sc.client_config(client_lines("tls-crypt", extra=["compress"])))
    results = await _report(ctx)

    assert results["tunnel.traffic"].status == "fail"
    occ = results["compat.occ"]
    assert occ.status == "warn", occ.summary
    [m] = occ.evidence["mismatches"]
    assert (m["item"], m["server"], m["ours"]) == ("comp-lzo", "", "")
    assert "not compatible with 'comp-lzo no'" in occ.explanation
    assert "comp-lzo (both sides, in forms that may differ)" in occ.summary
