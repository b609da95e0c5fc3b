"""``doctor --log`` on the survey's lines that the interop tests cannot make openvpn 2.6 write
here (tests/interop/test_doctor_log_survey.py makes the others for real). Each line is quoted
from the OpenVPN source that prints it, named next to it."""

from __future__ import annotations

import pytest

from trivpn.diagnostics.logscan import scan_lines
from trivpn.diagnostics.watch import Interpreter

TS = "2026-12-04 14:00:00 "


def only(line: str, check_id: str) -> tuple[str, str, str]:
    results = {r.id: r for r in scan_lines([TS + line])}
    assert set(results) == {check_id}, results
    r = results[check_id]
    assert r.explanation and r.fix
    return r.summary, r.explanation, r.fix


def test_a_replay_window_backtrack_at_verb_4_is_reordering() -> None:
    # OpenVPN src/openvpn/packet_id.c, packet_id_test(): packet_id_debug(D_PID_DEBUG_LOW, ...,
    # "PID_ERR replay-window backtrack occurred", ...) with packet_id_debug_print()'s tail
    _, explanation, fix = only("PID_ERR replay-window backtrack occurred [5] [SSL-0] "
                               "[0_00000000000000000000000000000000000000000000000000000000000"
                               "00] 0:12 0:7 t=1796395197[0] r=[0,64,15,5,1] sl=[52,64,64,528]",
                               "log.replay")
    assert "reorder" in explanation and "replay-window" in fix


def test_the_iproute2_route_exists_line_of_openvpn_2_4_is_named() -> None:
    # OpenVPN 2.4 runs 'ip route add' (src/openvpn/route.c, add_route(), openvpn_execve_check
    # with "ERROR: Linux route add command failed"); iproute2 prints the RTNETLINK line
    results = {r.id for r in scan_lines([
        TS + "/sbin/ip route add 198.18.50.0/24 via 198.18.8.1",
        TS + "RTNETLINK answers: File exists",
        TS + "ERROR: Linux route add command failed: external program exited with error "
             "status: 2"])}
    assert results == {"log.route_exists", "log.route_failed"}


def test_all_tap_adapters_in_use_is_a_windows_adapter_problem() -> None:
    # OpenVPN src/openvpn/tun.c, tun_open_device(): "All %s adapters on this system are
    # currently in use or disabled." (the driver's name: TAP-Windows6, wintun, ovpn-dco)
    _, explanation, fix = only("All TAP-Windows6 adapters on this system are currently in use "
                               "or disabled.", "log.tap_adapters_in_use")
    assert "Windows" in explanation and "windows-driver" in fix


def test_dh_parameters_too_small_name_dh_none() -> None:
    # OpenSSL's SSL_R_DH_KEY_TOO_SMALL reason, as OpenVPN prints OpenSSL errors
    # (src/openvpn/crypto_openssl.c, crypto_print_openssl_errors(): "OpenSSL: %s:%s")
    summary, _, fix = only("OpenSSL: error:0A00018A:SSL routines::dh key too small:",
                           "log.weak_certificate")
    assert "DH parameters" in summary and "'dh none'" in fix


def test_a_data_channel_decrypt_error_is_not_blamed_on_tls_auth() -> None:
    # OpenVPN src/openvpn/crypto.c, openvpn_decrypt_aead(): CRYPT_ERROR("cipher final failed")
    # (the interop watch test makes openvpn print it for real)
    _, explanation, _ = only("AEAD Decrypt error: cipher final failed", "log.decrypt_error")
    assert "same certificate" in explanation


@pytest.mark.parametrize(("line", "check_id"), [
    ("MULTI: bad source address from client [198.18.9.5], packet dropped",
     "log.bad_source_address"),
    ("Bad LZO decompression header byte: 69", "log.lzo_mismatch"),
    ("TLS Error: Auth Username/Password was not provided by peer", "log.no_credentials"),
    ("Connection reset, restarting [0]", "log.connection_reset"),
])
def test_survey_lines_reach_the_watcher_too(line: str, check_id: str) -> None:
    [event] = Interpreter().feed(f">LOG:1796395197,W,{line}")
    assert event.id == f"watch.{check_id}"


def test_a_revoked_alert_from_the_peer_says_the_certificate_was_revoked() -> None:
    # OpenSSL's reason text for TLS alert 44 (SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED), as
    # OpenVPN prints OpenSSL errors (src/openvpn/crypto_openssl.c,
    # crypto_print_openssl_errors())
    summary, _, fix = only("OpenSSL: error:0A000414:SSL routines::sslv3 alert certificate "
                           "revoked:SSL alert number 44", "log.peer_rejected_cert")
    assert "revoked" in summary and "new certificate" in fix
