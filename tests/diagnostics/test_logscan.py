"""``trivpn doctor --log``: every known OpenVPN 2.6 error line is explained.

The fixtures are real logs captured from openvpn 2.6.14 in test namespaces (noise lines
removed). Lines no fixture holds come from docs/protocol.md §12, word for word.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import require_openvpn
from tests.interop.openvpn import start_openvpn, write_pki
from tests.netns import NetnsLab
from trivpn.diagnostics.logscan import PATTERNS, guess_log_role, scan_lines, scan_log_file

FIXTURES = Path(__file__).parent / "fixtures"
TS = "2026-11-26 08:59:31 "


@pytest.mark.parametrize(("name", "expected"), [
    ("client-no-server.log", {"log.tls_timeout": "fail", "log.connection_refused": "fail"}),
    ("server-tls-auth-mismatch.log", {"log.hmac_auth_failed": "fail", "log.connected": "ok"}),
    ("server-tls-crypt-mismatch.log", {"log.tls_crypt_unwrap": "fail", "log.connected": "ok"}),
    ("client-wrong-ca.log", {"log.cert_verify_failed": "fail",
                             "log.tls_certificate_rejected": "fail"}),
    ("client-eku.log", {"log.cert_verify_failed": "fail",
                        "log.tls_certificate_rejected": "fail"}),
    ("client-x509name.log", {"log.verify_x509name": "fail",
                             "log.tls_certificate_rejected": "fail"}),
    ("client-resolve.log", {"log.resolve_failed": "fail"}),
    ("client-no-common-cipher.log", {"log.cipher_negotiation": "fail"}),
    ("server-no-common-cipher.log", {"log.cipher_negotiation": "fail",
                                     "log.peer_port_closed": "warn", "log.connected": "ok"}),
    ("client-auth-failed.log", {"log.auth_failed": "fail"}),
    ("server-auth-failed.log", {"log.auth_failed": "fail", "log.peer_port_closed": "warn",
                                "log.connected": "ok"}),
    ("client-connected.log", {"log.connected": "ok"}),
])
def test_real_openvpn_logs(name: str, expected: dict[str, str]) -> None:
    results = scan_log_file(FIXTURES / name).results
    assert {r.id: r.status for r in results} == expected
    for r in results:
        if r.status != "ok":
            assert r.explanation and r.fix


@pytest.mark.parametrize(("line", "check_id", "status"), [
    ("No reply from server to push requests in 30s", "log.no_push_reply", "fail"),
    ("TLS Error: local/remote TLS keys are out of sync: [AF_INET]198.18.0.1:1194 (received "
     "key id: 1, known key ids: [key#0 state=S_ACTIVE auth=KS_AUTH_TRUE id=0])",
     "log.keys_out_of_sync", "warn"),
    ("AEAD Decrypt error: bad packet ID (may be a replay): [ #17 ] -- see the man page entry "
     "for --no-replay and --replay-window for more info or silence this warning with "
     "--mute-replay-warnings", "log.replay", "warn"),
    ("WARNING: Bad encapsulated packet length from peer (17526), which must be > 0 and <= "
     "1627 -- please ensure that --tun-mtu or --link-mtu is equal on both peers -- this "
     "condition could also indicate a possible active attack on the TCP link -- "
     "[Attempting restart...]", "log.bad_tcp_length", "fail"),
    ("WARNING: 'link-mtu' is used inconsistently, local='link-mtu 1549', remote='link-mtu "
     "1550'", "log.mtu", "warn"),
    ("WARNING: 'comp-lzo' is present in local config but missing in remote config, "
     "local='comp-lzo'", "log.option_mismatch", "warn"),
    ("Error: negotiated cipher not allowed - AES-128-CBC not in AES-256-GCM:AES-128-GCM",
     "log.cipher_negotiation", "fail"),
    ("OPTIONS ERROR: failed to negotiate cipher with server.  Add the server's cipher "
     "('AES-128-CBC') to --data-ciphers (currently 'AES-256-GCM') if you want to connect to "
     "this server.", "log.cipher_negotiation", "fail"),
    ("[server] Inactivity timeout (--ping-restart), restarting", "log.ping_restart", "warn"),
    ("TLS Error: Unroutable control packet received from [AF_INET]198.18.0.2:1194 (si=3 "
     "op=P_ACK_V1)", "log.unroutable_control", "warn"),
    ("VERIFY EKU ERROR", "log.verify_eku", "fail"),
    ("VERIFY KU ERROR", "log.verify_eku", "fail"),
    ("Certificate does not have key usage extension", "log.verify_eku", "fail"),
    ("TLS Error: cannot locate HMAC in incoming packet from [AF_INET]198.18.0.1:40000",
     "log.hmac_auth_failed", "fail"),
    ("TCP: connect to [AF_INET]198.18.0.2:1194 failed: Connection refused",
     "log.connection_refused", "fail"),
    ("write UDPv4 []: No route to host (fd=3,code=113)", "log.no_route", "fail"),
    ("OpenSSL: error:0A000418:SSL routines::tlsv1 alert unknown ca:SSL alert number 48",
     "log.peer_rejected_cert", "fail"),
    ("read UDPv4 [EMSGSIZE Path-MTU=1400]: Message too long (fd=3,code=90)", "log.mtu", "warn"),
    ("TCP/UDP: Socket bind failed on local address [AF_INET][undef]:1194: Address already in "
     "use (errno=98)", "log.bind_failed", "fail"),
    ("ERROR: Cannot ioctl TUNSETIFF tun: Operation not permitted (errno=1)",
     "log.tun_open_failed", "fail"),
])
def test_documented_lines(line: str, check_id: str, status: str) -> None:
    (result,) = scan_lines([TS + line])
    assert (result.id, result.status) == (check_id, status)
    assert result.evidence["example"] == TS + line
    assert result.explanation and result.fix


def test_every_pattern_is_exercised_by_some_test() -> None:
    # keeps the tables above honest when patterns are added
    covered = {"log.tls_timeout", "log.hmac_auth_failed", "log.tls_crypt_unwrap",
               "log.cert_verify_failed", "log.tls_certificate_rejected",
               "log.peer_rejected_cert", "log.verify_eku", "log.verify_x509name",
               "log.cipher_negotiation", "log.auth_failed", "log.resolve_failed",
               "log.replay", "log.mtu", "log.option_mismatch", "log.bad_tcp_length",
               "log.keys_out_of_sync", "log.ping_restart", "log.peer_port_closed",
               "log.connection_refused", "log.no_route", "log.unroutable_control",
               "log.no_push_reply", "log.bind_failed", "log.tun_open_failed",
               "log.key_mismatch", "log.connected",
               # tests/interop/test_doctor_log_survey.py (real openvpn) and
               # tests/diagnostics/test_logscan_survey.py (lines cited from OpenVPN's source)
               "log.decrypt_error", "log.weak_certificate", "log.tls_version_mismatch",
               "log.unknown_option", "log.lzo_mismatch", "log.bad_source_address",
               "log.route_exists", "log.route_failed", "log.no_tty", "log.no_credentials",
               "log.connection_reset", "log.tap_adapters_in_use", "log.ccd_exclusive"}
    assert {p.id for p in PATTERNS} == covered


def test_expired_certificate_verify_error_says_renew() -> None:
    (result,) = scan_lines([TS + "VERIFY ERROR: depth=0, error=certificate has expired: "
                                  "CN=server, serial=1"])
    assert "expired" in result.explanation
    assert "renew" in result.fix


def test_eku_purpose_verify_error_explains_remote_cert_tls() -> None:
    results = scan_log_file(FIXTURES / "client-eku.log").results
    verify = next(r for r in results if r.id == "log.cert_verify_failed")
    assert "remote-cert-tls server" in verify.explanation
    assert verify.evidence["count"] == 2


def test_tls_timeout_reports_count_lines_and_window() -> None:
    results = scan_log_file(FIXTURES / "client-no-server.log").results
    timeout = next(r for r in results if r.id == "log.tls_timeout")
    assert timeout.evidence["count"] == 2
    assert timeout.evidence["lines"] == [5, 11]
    assert timeout.evidence["first_line"] == 5
    assert "6 seconds" in timeout.summary
    assert "firewall" in timeout.explanation


def test_auth_failed_reason_is_shown() -> None:
    (result,) = scan_lines([TS + "AUTH: Received control message: AUTH_FAILED,account locked"])
    assert result.summary.startswith("authentication failed (account locked)")


def test_unknown_lines_are_ignored() -> None:
    results = scan_lines([TS + "Some line nobody knows", "", TS + "Data Channel: cipher "
                          "'AES-256-GCM', peer-id: 0"])
    assert [(r.id, r.status) for r in results] == [("log.scan", "ok")]
    assert results[0].evidence == {"lines": 3}


def test_trivpn_json_lines_are_matched_on_their_values() -> None:
    line = json.dumps({"event": "peer_error", "level": "error",
                       "message": "TLS Error: tls-crypt unwrapping failed from 198.18.0.1"})
    (result,) = scan_lines([line])
    assert result.id == "log.tls_crypt_unwrap"


def test_udp_connection_refused_on_a_server_is_a_peer_that_went_away() -> None:
    lines = [TS + "MULTI: multi_init called, r=256 v=256",
             TS + "read UDPv4 [ECONNREFUSED]: Connection refused (fd=4,code=111)"]
    assert guess_log_role(lines) == "server"
    assert [r.id for r in scan_lines(lines)] == ["log.peer_port_closed"]


def test_line_numbers_are_capped_but_counted() -> None:
    lines = [TS + "VERIFY KU ERROR"] * 30
    (result,) = scan_lines(lines)
    assert result.evidence["count"] == 30
    assert len(result.evidence["lines"]) == 20
    assert result.evidence["lines_truncated"] is True


def test_live_openvpn_client_without_server_logs_the_tls_timeout(
        netns_lab: NetnsLab, tmp_path: Path) -> None:
    require_openvpn()
    client, server = netns_lab.add("c"), netns_lab.add("s")
    netns_lab.veth(client, server)
    write_pki(tmp_path)
    proc = start_openvpn(client, tmp_path, "client", [
        "client", "dev tun", "proto udp", "remote 198.18.0.2 1194", "nobind", "ca ca.crt",
        "cert client.crt", "key client.key", "remote-cert-tls server", "verb 3",
        "hand-window 3", "tls-timeout 1"])
    assert proc.wait_for("TLS key negotiation failed", timeout=10), proc.text()
    results = scan_log_file(proc.log).results
    timeout = next(r for r in results if r.id == "log.tls_timeout")
    assert timeout.status == "fail"
    assert "within 3 seconds" in timeout.summary
    assert "TLS Error: TLS key negotiation failed to occur within 3 seconds" in \
        timeout.evidence["example"]
