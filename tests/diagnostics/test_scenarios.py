"""``trivpn doctor``'s network checks against injected faults, in namespaces made by each test.

The server namespace (198.18.0.1) runs a real ``openvpn`` 2.6 (or nothing, or trivpn); the
checks probe from the client namespace (198.18.0.2). Each scenario asserts the check that must
fail, its status and the evidence that names the fault.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from tests.conftest import require_netns, require_openvpn
from tests.diagnostics.scenariokit import (
    SERVER_IP,
    Scenario,
    client_lines,
    scenario,
    server_lines,
)
from trivpn.diagnostics import (
    checks_compat,
    checks_dnsafter,
    checks_mtu,
    checks_nat,
    checks_netbeh,
    checks_port,
    checks_tls,
    checks_tunnel,
)
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext
from trivpn.diagnostics.probe import REPROBE_ATTEMPTS
from trivpn.diagnostics.runner import run_checks
from trivpn.diagnostics.tunnel_session import TunnelBroker
from trivpn.pki.certs import Credential, certificate_pem, create_ca, issue_cert
from trivpn.pki.keys import private_key_pem
from trivpn.protocol.statickey import StaticKey, format_static_key

pytestmark = pytest.mark.integration

NETWORK_CHECKS: tuple[Check, ...] = (*checks_port.CHECKS, *checks_nat.CHECKS, *checks_tls.CHECKS,
                                     *checks_mtu.CHECKS, *checks_tunnel.CHECKS,
                                     *checks_compat.CHECKS, *checks_dnsafter.CHECKS,
                                     *(c for c in checks_netbeh.CHECKS if not c.opt_in))
# No DNS pushed in these labs: nothing to compare with the host's resolver.
NOTHING_BEYOND = {"dns.tunnel_resolver": "skip", "dns.leak": "skip", "dns.tunnel_lookup": "skip"}
PHASES = ["reset_sent", "reset_received", "tls_started", "tls_complete", "key_method_sent",
          "key_method_received", "push_request_sent", "push_reply_received",
          "data_channel_ready"]


@pytest.fixture
def sc(tmp_path: Path) -> Iterator[Scenario]:
    require_netns()
    require_openvpn()
    with scenario(tmp_path) as made:
        yield made


def _write_credential(directory: Path, name: str, cred: Credential) -> None:
    (directory / f"{name}.crt").write_bytes(certificate_pem(cred.cert))
    key = directory / f"{name}.key"
    key.write_bytes(private_key_pem(cred.key))
    key.chmod(0o600)


def _start_server(sc: Scenario, lines: list[str]) -> None:
    proc = sc.start_openvpn(lines)
    assert proc.wait_for("Initialization Sequence Completed"), proc.text()


async def _run(check_id: str, ctx: DoctorContext) -> CheckResult:
    check = next(c for c in NETWORK_CHECKS if c.id == check_id)
    return await check.run(ctx)


async def _report(ctx: DoctorContext) -> dict[str, CheckResult]:
    # As 'trivpn doctor' runs them: one shared tunnel session for the data-channel checks.
    async with TunnelBroker() as broker:
        report = await run_checks(NETWORK_CHECKS, replace(ctx, tunnel=broker))
    assert broker.handshakes <= 1
    return {r.id: r for r in report.checks}


async def test_healthy_openvpn_server_passes_every_network_check(sc: Scenario):
    _start_server(sc, server_lines("tls-crypt"))
    ctx = sc.context(sc.client_config(client_lines("tls-crypt")))
    start = trio.current_time()
    results = await _report(ctx)
    elapsed = trio.current_time() - start

    assert {i: r.status for i, r in results.items()} == {**{c.id: "ok" for c in NETWORK_CHECKS},
                                                         **NOTHING_BEYOND}, \
        {i: r.summary for i, r in results.items()}
    assert elapsed < 15
    assert results["port.reachable"].evidence["state"] == "open"
    handshake = results["tls.handshake"].evidence
    assert [p["phase"] for p in handshake["timeline"]] == PHASES
    times = [p["t"] for p in handshake["timeline"]]
    assert times == sorted(times)
    assert results["nat.reply_source"].evidence["reply_from"] == f"{SERVER_IP}:1194"
    assert results["tunnel.traffic"].evidence["echo_received"] >= 1
    assert results["mtu.path"].evidence["path_mtu"] == 1500


async def test_healthy_openvpn_tcp_server_passes_every_network_check(sc: Scenario):
    _start_server(sc, server_lines("tls-auth", proto="tcp-server"))
    ctx = sc.context(sc.client_config(client_lines("tls-auth", proto="tcp-client")))
    results = await _report(ctx)

    statuses = {i: r.status for i, r in results.items()}
    assert statuses == {**{c.id: "ok" for c in NETWORK_CHECKS}, "nat.reply_source": "skip",
                        **NOTHING_BEYOND}, \
        {i: r.summary for i, r in results.items()}
    assert results["port.reachable"].evidence["tcp"] == "connected"


async def test_udp_port_dropped_by_nftables_is_filtered(sc: Scenario):
    _start_server(sc, server_lines("none"))
    sc.server.nft("table inet doctortest {\n chain input {\n"
                  "  type filter hook input priority 0; policy accept;\n"
                  "  udp dport 1194 drop\n }\n}\n")
    ctx = sc.context(sc.client_config(client_lines("none")))

    result = await _run("port.reachable", ctx)

    assert result.status == "fail"
    assert result.evidence["state"] == "filtered"
    assert result.evidence["attempts"] == 3 + REPROBE_ATTEMPTS  # re-probed before "filtered"
    assert "reprobe" in [step["step"] for step in result.evidence["timeline"]]
    assert result.evidence["reply_from"] is None
    assert "firewall" in result.explanation
    assert "udp dport 1194 accept" in result.fix


async def test_nothing_listening_is_closed(sc: Scenario):
    ctx = sc.context(sc.client_config(client_lines("tls-crypt")))

    result = await _run("port.reachable", ctx)

    assert result.status == "fail"
    assert result.evidence["state"] == "closed"
    assert result.evidence["icmp"] == "port_unreachable"
    assert "no program listens" in result.explanation


async def test_nothing_listening_on_tcp_is_closed(sc: Scenario):
    ctx = sc.context(sc.client_config(client_lines("none", proto="tcp-client")))

    result = await _run("port.reachable", ctx)

    assert result.status == "fail"
    assert result.evidence["state"] == "closed"
    assert result.evidence["tcp"] == "refused"


async def test_something_else_answering_is_open_not_openvpn(sc: Scenario):
    from tests.diagnostics.scenariokit import udp_responder

    ctx = sc.context(sc.client_config(client_lines("none")))
    with udp_responder(sc.server, (SERVER_IP, 1194), reply=b"HTTP/1.0 400 Bad Request\r\n"):
        result = await _run("port.reachable", ctx)

    assert result.status == "fail"
    assert result.evidence["state"] == "open_not_openvpn"
    assert result.evidence["reply_kind"] == "not_openvpn"


async def test_wrong_tls_crypt_key_is_reported_by_tls_keys_not_as_a_dead_port(sc: Scenario):
    _start_server(sc, server_lines("tls-crypt"))
    other = StaticKey(bytes((i * 11 + 5) % 256 for i in range(256)))
    (sc.workdir / "other.key").write_text(format_static_key(other))
    ctx = sc.context(sc.client_config(client_lines("tls-crypt", tls_key="other.key")))

    keys = await _run("tls.keys", ctx)

    assert keys.status == "fail"
    assert keys.evidence["cause"] == "key_mismatch_or_filtered"
    assert keys.evidence["answered_variants"] == []
    assert "tls-crypt key" in keys.summary
    assert "tls-crypt" in keys.fix and "client.conf line" in keys.fix
    assert "tls-crypt unwrap error" in keys.explanation
    port = await _run("port.reachable", ctx)
    assert port.evidence["state"] == "filtered"
    assert "tls.keys" in port.explanation


async def test_tls_auth_key_direction_mismatch_names_the_direction_the_server_wants(
        sc: Scenario):
    _start_server(sc, server_lines("tls-auth"))
    lines = [line.replace("tls-auth static.key 1", "tls-auth static.key 0")
             for line in client_lines("tls-auth")]
    ctx = sc.context(sc.client_config(lines))

    keys = await _run("tls.keys", ctx)

    assert keys.status == "fail"
    assert keys.evidence["cause"] == "key_direction_mismatch"
    assert "tls_auth_dir1" in keys.evidence["answered_variants"]
    assert "key-direction 1" in keys.fix


async def test_client_certificate_from_another_ca_is_rejected_by_the_server(sc: Scenario):
    _start_server(sc, server_lines("tls-crypt"))
    other_ca = create_ca("other CA")
    _write_credential(sc.workdir, "foreign", issue_cert(other_ca, "client", "client1"))
    ctx = sc.context(sc.client_config(client_lines("tls-crypt", cert="foreign.crt",
                                                   key="foreign.key")))

    result = await _run("tls.handshake", ctx)

    assert result.status == "fail", result.summary
    assert result.evidence["cause"] == "peer_rejected_cert"
    assert result.evidence["client_cert_issuer"] == "CN=other CA"
    assert "60 seconds" in result.explanation
    assert "signed by the server's CA" in result.fix


async def test_expired_client_certificate_is_rejected_and_explained_as_expired(sc: Scenario):
    _start_server(sc, server_lines("tls-crypt"))
    now = datetime.now(UTC)
    _write_credential(sc.workdir, "expired",
                      issue_cert(sc.pki.ca, "client", "client1",
                                 not_before=now - timedelta(days=30),
                                 not_after=now - timedelta(days=1)))
    ctx = sc.context(sc.client_config(client_lines("tls-crypt", cert="expired.crt",
                                                   key="expired.key")))

    result = await _run("tls.handshake", ctx)

    assert result.status == "fail", result.summary
    assert result.evidence["cause"] == "peer_rejected_cert"
    assert result.evidence["client_cert_expired"] is True
    assert "expired" in result.explanation


async def test_server_certificate_from_another_ca_fails_verification(sc: Scenario):
    other_ca = create_ca("rogue CA")
    _write_credential(sc.workdir, "rogue", issue_cert(other_ca, "server", "server"))
    lines = [line.replace("server.crt", "rogue.crt").replace("server.key", "rogue.key")
             for line in server_lines("tls-crypt")]
    _start_server(sc, lines)
    ctx = sc.context(sc.client_config(client_lines("tls-crypt")))

    result = await _run("tls.handshake", ctx)

    assert result.status == "fail", result.summary
    assert result.evidence["cause"] == "cert_verify_failed"
    assert result.evidence["stalled_phase"] == "tls_started"
    assert "client.conf line 6" in result.fix and "'ca'" in result.fix


async def test_multihomed_server_answering_from_its_other_address_fails_nat_reply_source(
        sc: Scenario):
    # The server has a second address and prefers it as the source on the shared link; an
    # openvpn without 'local' or 'multihome' then answers from it.
    ifname = "veth0"
    sc.server.add_address(ifname, "198.18.0.9/24")
    sc.server.ip("route", "replace", "198.18.0.0/24", "dev", ifname, "src", "198.18.0.9")
    _start_server(sc, server_lines("tls-crypt", local=None))
    ctx = sc.context(sc.client_config(client_lines("tls-crypt")))

    nat = await _run("nat.reply_source", ctx)
    port = await _run("port.reachable", ctx)

    assert nat.status == "fail"
    assert nat.evidence["sent_to"] == f"{SERVER_IP}:1194"
    assert nat.evidence["reply_from"] == "198.18.0.9:1194"
    assert f"local {SERVER_IP}" in nat.fix
    assert port.status == "fail"
    assert port.evidence["reply_from_other_address"] is True


async def test_nat_reply_source_server_role_warns_for_udp_without_local_on_two_addresses(
        sc: Scenario):
    sc.server.add_address("veth0", "198.18.0.9/24")
    conf = sc.workdir / "server.conf"
    conf.write_text("\n".join(server_lines("tls-crypt", local=None)) + "\n")
    base = sc.context(conf)
    ctx = DoctorContext(base.config_path, base.options, "server", base.timeout,
                        netns=sc.server.name)

    result = await _run("nat.reply_source", ctx)

    assert result.status == "warn"
    assert {a["address"] for a in result.evidence["host_addresses"]} == {SERVER_IP,
                                                                        "198.18.0.9"}
    assert "local" in result.fix


async def test_path_mtu_below_the_tunnel_packets_warns_with_mssfix(sc: Scenario):
    # A router namespace between client and server whose link to the server has MTU 1400.
    lab = sc.lab
    router = lab.add("rtr")
    server, client = lab.add("srv"), lab.add("cli")
    lab.veth(client, router, "198.18.1.2/24", "198.18.1.1/24")
    lab.veth(router, server, "198.18.2.1/24", "198.18.2.2/24", mtu=1400)
    router.enable_forwarding()
    client.add_route("198.18.2.0/24", via="198.18.1.1")
    server.add_route("198.18.1.0/24", via="198.18.2.1")
    proc = sc.start_openvpn_in(server, server_lines("none", local="198.18.2.2"))
    assert proc.wait_for("Initialization Sequence Completed"), proc.text()
    conf = sc.client_config(client_lines("none", remote="198.18.2.2"))
    base = sc.context(conf)
    ctx = DoctorContext(base.config_path, base.options, "client", base.timeout,
                        netns=client.name)

    result = await _run("mtu.path", ctx)

    assert result.status == "warn", result.summary
    assert result.evidence["path_mtu"] == 1400
    assert result.evidence["route_mtu"] == 1500
    assert "mssfix 1400 mtu" in result.fix


async def test_trivpn_server_passes_the_handshake_and_traffic_checks(sc: Scenario):
    from tests.interop.trivpnproc import start_trivpn

    proc = start_trivpn(sc.server, sc.workdir, "tserver", server_lines("tls-crypt"))
    assert proc.wait_event("link_open", timeout=15) is not None, proc.text()[-3000:]
    ctx = sc.context(sc.client_config(client_lines("tls-crypt")))

    results = await _report(ctx)

    assert {i: r.status for i, r in results.items()} == {**{c.id: "ok" for c in NETWORK_CHECKS},
                                                         **NOTHING_BEYOND}, \
        ({i: r.summary for i, r in results.items()}, proc.text()[-3000:])


def test_doctor_json_end_to_end_reports_a_filtered_port(
        sc: Scenario, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    from trivpn.commands import doctor

    sc.server.nft("table inet doctortest {\n chain input {\n"
                  "  type filter hook input priority 0; policy accept;\n"
                  "  udp dport 1194 drop\n }\n}\n")
    conf = sc.client_config(client_lines("tls-crypt"))
    monkeypatch.setenv(doctor.NETNS_ENV, sc.client.name)
    parser = argparse.ArgumentParser()
    doctor.register(parser.add_subparsers())
    args = parser.parse_args(["doctor", str(conf), "--json", "--check", "port.reachable",
                              "tls.handshake", "tls.keys"])

    code = args.handler(args)

    report = json.loads(capsys.readouterr().out)
    by_id = {c["id"]: c for c in report["checks"]}
    assert code == 1
    assert report["verdict"] == "fail"
    assert by_id["port.reachable"]["evidence"]["state"] == "filtered"
    assert by_id["tls.handshake"]["status"] == "skip"
    assert by_id["tls.keys"]["status"] == "fail"
    assert by_id["dns.remote"]["status"] == "ok"
    assert report["duration_s"] < 15


async def test_pushed_route_overlapping_a_local_network_is_reported(sc: Scenario):
    from trivpn.diagnostics import checks_config, checks_dns, checks_route

    _start_server(sc, server_lines("tls-crypt", extra=['push "route 198.18.60.0 255.255.255.0"']))
    sc.client.ip("link", "add", "lan0", "type", "veth", "peer", "name", "lan1")
    sc.client.add_address("lan0", "198.18.60.10/24")
    sc.client.ip("link", "set", "lan0", "up")
    ctx = sc.context(sc.client_config(client_lines("tls-crypt")))

    checks = (*checks_config.CHECKS, *checks_dns.CHECKS, *NETWORK_CHECKS, *checks_route.CHECKS)
    report = await run_checks(checks, ctx, only=["route.overlap"])
    results = {r.id: r for r in report.checks}

    assert results["tls.handshake"].status == "ok"
    assert "198.18.60.0 255.255.255.0" in results["tls.handshake"].evidence["pushed_routes"]
    overlap = results["route.overlap"]
    assert overlap.status in ("warn", "fail"), overlap
    text = json.dumps(overlap.evidence)
    assert "198.18.60.0/24" in text and "lan0" in text
    assert overlap.fix


async def test_server_compression_not_pushed_is_named_by_tunnel_traffic_not_a_firewall(
        sc: Scenario):
    # The server frames every data packet for LZO ('comp-lzo') and does not push it.
    _start_server(sc, server_lines("tls-crypt", extra=["comp-lzo"]))
    ctx = sc.context(sc.client_config(client_lines("tls-crypt")))
    results = await _report(ctx)

    traffic = results["tunnel.traffic"]
    assert traffic.status == "fail", traffic.summary
    assert traffic.evidence["cause"] == "compression_mismatch"
    assert "frame data for compression differently" in traffic.summary
    assert "without pushing it" in traffic.explanation  # from the options strings
    assert "comp-lzo" in results["tls.handshake"].evidence["occ"]["server"].split(",")
    # the server's keepalive pings came back with the LZO framing byte in front
    assert traffic.evidence["non_ip_received"].get("0xfa", 0) >= 1, traffic.evidence
    assert "0xFA" in traffic.explanation
    assert "rp_filter" not in traffic.explanation and "nft" not in traffic.fix
    assert "remove 'compress'/'comp-lzo' from the server" in traffic.fix
    # what the explanation says the server logs, the real server logged
    assert "Bad LZO decompression header byte" in traffic.explanation
    assert "Bad LZO decompression header byte" in sc.servers[0].text()


async def test_tun_firewall_on_the_server_is_named_when_nothing_else_explains_it(
        sc: Scenario):
    _start_server(sc, server_lines("tls-crypt"))
    sc.server.nft("table inet doctortun {\n chain input {\n"
                  "  type filter hook input priority 0; policy accept;\n"
                  '  iifname "tun*" icmp type echo-request drop\n }\n}\n')
    ctx = sc.context(sc.client_config(client_lines("tls-crypt")))
    results = await _report(ctx)

    traffic = results["tunnel.traffic"]
    assert traffic.status == "fail", traffic.summary
    assert traffic.evidence["cause"] == "no_reply"
    assert "non_ip_received" not in traffic.evidence
    assert "firewall on the tun interface" in traffic.explanation
    assert "nft list ruleset" in traffic.fix
    assert results["compat.occ"].status == "ok"
