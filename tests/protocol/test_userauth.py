"""The pure decisions of server-side username/password authentication
(trivpn/protocol/userauth.py), following OpenVPN src/openvpn/ssl_verify.c."""

from __future__ import annotations

import pytest

from trivpn.protocol import userauth as ua
from trivpn.protocol.peerinfo import parse_peer_info


@pytest.mark.parametrize(("code", "verdict"), [
    (0, ua.Verdict.ACCEPT), (2, ua.Verdict.DEFERRED), (1, ua.Verdict.REJECT),
    (3, ua.Verdict.REJECT), (127, ua.Verdict.REJECT), (None, ua.Verdict.REJECT)])
def test_script_exit_code_0_accepts_2_defers_anything_else_rejects(
        code: int | None, verdict: ua.Verdict) -> None:
    assert ua.script_verdict(code) is verdict


@pytest.mark.parametrize(("content", "verdict"), [
    (b"1", ua.Verdict.ACCEPT), (b"1\n", ua.Verdict.ACCEPT), (b"0\n", ua.Verdict.REJECT),
    (b"", ua.Verdict.DEFERRED), (b"x", ua.Verdict.DEFERRED), (b" 1", ua.Verdict.DEFERRED)])
def test_control_file_first_byte_decides(content: bytes, verdict: ua.Verdict) -> None:
    assert ua.control_file_verdict(content) is verdict


def test_failed_reason_is_the_first_line_or_none() -> None:
    assert ua.failed_reason(b"bad password\nmore\n") == "bad password"
    assert ua.failed_reason(b"") is None


def test_pending_file_has_timeout_method_and_extra() -> None:
    assert ua.parse_pending_file(b"30\nwebauth\nWEB_AUTH::https://sso\n") == ua.PendingAuth(
        30, "webauth", "WEB_AUTH::https://sso")
    assert ua.parse_pending_file(b"") is None


@pytest.mark.parametrize("content", [b"30\nwebauth\n", b"0\nwebauth\nx\n", b"soon\ncrtext\nx\n"])
def test_malformed_pending_file_is_an_error(content: bytes) -> None:
    with pytest.raises(ua.PendingFileError):
        ua.parse_pending_file(content)


def test_pending_method_must_be_listed_in_iv_sso() -> None:
    info = parse_peer_info("IV_VER=2.6.14\nIV_SSO=openurl,crtext\n")
    assert ua.pending_method_supported(info, "crtext")
    assert not ua.pending_method_supported(info, "webauth")
    assert not ua.pending_method_supported(parse_peer_info("IV_VER=2.6.14\n"), "crtext")


def test_pending_messages_carry_the_timeout_when_the_client_understands_keywords() -> None:
    pending = ua.PendingAuth(300, "crtext", "CR_TEXT:R,E:code")
    kw = parse_peer_info("IV_PROTO=990\n")  # includes IV_PROTO_AUTH_PENDING_KW (16)
    out = ua.pending_messages(pending, kw, elapsed=10, max_timeout=60)
    assert out == (["AUTH_PENDING,timeout 50", "INFO_PRE,CR_TEXT:R,E:code"], 50)
    plain = ua.pending_messages(pending, parse_peer_info("IV_PROTO=2\n"), elapsed=0,
                                max_timeout=60)
    assert plain is not None and plain[0][0] == "AUTH_PENDING"
    assert ua.pending_messages(pending, kw, elapsed=60, max_timeout=60) is None


def test_username_and_password_are_cleaned_as_openvpn_does() -> None:
    assert ua.clean_username("al ice$@example.com") == "al_ice_@example.com"
    assert ua.clean_password("pa ss\nword") == "pa ss_word"


def test_via_file_holds_username_then_password() -> None:
    assert ua.credentials_file("alice", "s3cret") == b"alice\ns3cret\n"


def test_username_as_common_name_is_limited_to_64_bytes() -> None:
    assert ua.username_as_common_name_ok("a" * 64)
    assert not ua.username_as_common_name_ok("a" * 65)


def test_script_environment_has_openvpns_names_and_no_password_unless_given() -> None:
    info = parse_peer_info("IV_VER=2.6.14\nIV_PLAT=linux\nUV_X=1\nbad-name=1\n")
    env = ua.user_pass_env(username="alice", password=None, common_name="client1",
                           untrusted_ip="198.18.10.2", untrusted_port=4000, info=info,
                           control_files={"auth_control_file": "/tmp/acf"})
    assert env["script_type"] == "user-pass-verify"
    assert (env["username"], env["common_name"]) == ("alice", "client1")
    assert (env["untrusted_ip"], env["untrusted_port"]) == ("198.18.10.2", "4000")
    assert env["IV_VER"] == "2.6.14" and env["UV_X"] == "1" and "bad-name" not in env
    assert env["auth_control_file"] == "/tmp/acf"
    assert "password" not in env
    with_pw = ua.user_pass_env(username="a", password="p", common_name="c", untrusted_ip="x",
                               untrusted_port=1, info=info, control_files={})
    assert with_pw["password"] == "p"


def test_a_client_without_certificate_has_no_common_name_in_the_script_environment() -> None:
    assert ua.script_common_name("", ua.UNDEF_COMMON_NAME) is None
    assert ua.script_common_name("CN=client1", "client1") == "client1"
    env = ua.user_pass_env(username="a", password=None, common_name=None, untrusted_ip="x",
                           untrusted_port=1, info=parse_peer_info(None), control_files={})
    assert "common_name" not in env
