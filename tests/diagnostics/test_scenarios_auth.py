"""``tls.handshake`` against a real openvpn 2.6 server that authenticates clients with
``auth-user-pass-verify``: missing, wrong and refused credentials, a reason, a CRV1 challenge,
and a certificate the server rejects, each named for what it is.

One lab for the module: server namespace 198.18.0.1 runs two servers — port 1194 with a verify
script (alice/secret passes; user ``locked`` gets a reason, user ``otp`` a CRV1 challenge,
anyone else a bare refusal), port 1195 that also has ``ccd-exclusive`` with an empty
client-config-dir (refuses every certificate's account after the password check), and port
1196 that hands out auth-tokens valid for one second (``auth-gen-token 1``); port 1197 has
``ccd-exclusive`` and no password check at all.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
import trio

from tests.conftest import require_netns, require_openvpn
from tests.diagnostics.scenariokit import Scenario, client_lines, scenario, server_lines
from trivpn.diagnostics import checks_tls
from trivpn.diagnostics.auth_diag import (
    LOG_CCD_EXCLUSIVE,
    LOG_NO_CREDENTIALS,
    LOG_WRONG_CREDENTIALS,
    PLACEHOLDER_USER,
)
from trivpn.diagnostics.model import CheckResult, DoctorContext
from trivpn.diagnostics.probe import resolve_targets
from trivpn.diagnostics.probe_session import probe_config
from trivpn.pki.certs import certificate_pem, create_ca, issue_cert
from trivpn.pki.keys import private_key_pem

pytestmark = pytest.mark.integration

CHALLENGE = "CRV1:R,E:c3RhdGUtMQ==:b3Rw:Enter your one-time code"
VERIFY = f"""#!/bin/sh
user=$(sed -n 1p "$1"); pass=$(sed -n 2p "$1")
[ "$user" = {PLACEHOLDER_USER} ] && sleep 2.5  # a slow backend: longer than SILENT_AFTER
[ "$user" = alice ] && [ "$pass" = secret ] && exit 0
case "$user" in
  locked) echo "account locked until Monday" > "$auth_failed_reason_file" ;;
  otp) echo "{CHALLENGE}" > "$auth_failed_reason_file" ;;
esac
exit 1
"""


@pytest.fixture(scope="module")
def sc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    require_netns()
    require_openvpn()
    tmp = tmp_path_factory.mktemp("auth")
    with scenario(tmp) as made:
        script = tmp / "verify.sh"
        script.write_text(VERIFY)
        script.chmod(0o755)
        (tmp / "ccd").mkdir()
        auth = ["script-security 2", f"auth-user-pass-verify {script} via-file"]
        first = made.start_openvpn(server_lines(extra=auth), name="auth")
        second = made.start_openvpn(
            [line.replace("port 1194", "port 1195").replace("198.18.8.0", "198.18.9.0")
             for line in server_lines(extra=[*auth, f"client-config-dir {tmp / 'ccd'}",
                                              "ccd-exclusive"])], name="ccd")
        third = made.start_openvpn(
            [line.replace("port 1194", "port 1196").replace("198.18.8.0", "198.18.10.0")
             for line in server_lines(extra=[*auth, "auth-gen-token 1"])], name="token")
        fourth = made.start_openvpn(
            [line.replace("port 1194", "port 1197").replace("198.18.8.0", "198.18.11.0")
             for line in server_lines(extra=[f"client-config-dir {tmp / 'ccd'}",
                                             "ccd-exclusive"])], name="ccdonly")
        for proc in (first, second, third, fourth):
            assert proc.wait_for("Initialization Sequence Completed"), proc.text()
        foreign = issue_cert(create_ca("other CA"), "client", "client1")
        (tmp / "foreign.crt").write_bytes(certificate_pem(foreign.cert))
        (tmp / "foreign.key").write_bytes(private_key_pem(foreign.key))
        (tmp / "foreign.key").chmod(0o600)
        yield made


def _context(sc: Scenario, name: str, creds: str | None, *, port: int = 1194,
             cert: str = "client.crt", key: str = "client.key") -> DoctorContext:
    extra = []
    if creds is not None:
        (sc.workdir / f"{name}.pass").write_text(creds)
        extra.append(f"auth-user-pass {name}.pass")
    return sc.context(sc.client_config(client_lines(port=port, cert=cert, key=key,
                                                    extra=extra), name=f"{name}.conf"))


async def _handshake(ctx: DoctorContext) -> CheckResult:
    return await checks_tls.run_handshake(ctx)


def _log(sc: Scenario, index: int = 0) -> str:
    """The whole log of the auth server (0) or the ccd-exclusive server (1)."""
    return sc.servers[index].text()


async def test_server_requiring_a_password_is_not_reported_as_a_rejected_certificate(
        sc: Scenario) -> None:
    result = await _handshake(_context(sc, "nocreds", None))

    assert result.status == "fail"
    assert result.evidence["cause"] == "auth_required", result.summary
    assert "requires a username/password" in result.summary
    assert "certificate" not in result.summary
    assert result.evidence["credential_probe"]["answer"] == "AUTH_FAILED"
    assert "add 'auth-user-pass'" in result.fix.lower()
    assert LOG_NO_CREDENTIALS in _log(sc)  # what the explanation says the server logs
    assert PLACEHOLDER_USER in result.explanation


async def test_certificate_rejected_stays_a_rejected_certificate_without_credentials(
        sc: Scenario) -> None:
    result = await _handshake(_context(sc, "foreign", None, cert="foreign.crt",
                                       key="foreign.key"))

    assert result.status == "fail"
    assert result.evidence["cause"] == "peer_rejected_cert", result.summary
    assert result.evidence["credential_probe"]["answer"] is None
    assert "not a missing 'auth-user-pass'" in result.explanation
    assert "signed by the server's CA" in result.fix


async def test_wrong_password_names_the_credentials_and_the_account_alternative(
        sc: Scenario) -> None:
    result = await _handshake(_context(sc, "wrong", "alice\nwrong\n"))

    assert result.status == "fail"
    assert result.evidence["cause"] == "auth_failed"
    assert result.evidence["auth_failed"] == "AUTH_FAILED"
    assert "wrong username/password" in result.summary
    assert "rejected our certificate" not in result.summary
    assert LOG_WRONG_CREDENTIALS in result.explanation
    assert LOG_CCD_EXCLUSIVE in result.explanation
    assert LOG_WRONG_CREDENTIALS in _log(sc)


async def test_refused_account_sends_the_same_bare_auth_failed_as_a_wrong_password(
        sc: Scenario) -> None:
    """The claim the wrong-password explanation rests on: right credentials, account refused
    by ccd-exclusive, same bare AUTH_FAILED on the wire, a different server log line."""
    result = await _handshake(_context(sc, "ccd", "alice\nsecret\n", port=1195))

    assert result.evidence["cause"] == "auth_failed"
    assert result.evidence["auth_failed"] == "AUTH_FAILED"
    assert LOG_CCD_EXCLUSIVE + " for common name 'client1'" in _log(sc, 1)
    assert LOG_WRONG_CREDENTIALS not in _log(sc, 1)


async def test_bare_auth_failed_without_credentials_blames_the_account_not_a_password(
        sc: Scenario) -> None:
    result = await _handshake(_context(sc, "ccdonly", None, port=1197))

    assert result.evidence["cause"] == "auth_refused_account", result.summary
    assert result.evidence["auth_failed"] == "AUTH_FAILED"
    assert "password" not in result.fix
    assert LOG_CCD_EXCLUSIVE + " for common name 'client1'" in _log(sc, 3)


async def test_auth_failed_reason_is_quoted(sc: Scenario) -> None:
    result = await _handshake(_context(sc, "locked", "locked\nx\n"))

    assert result.evidence["cause"] == "auth_failed_reason"
    assert result.evidence["reason"] == "account locked until Monday"
    assert "'account locked until Monday'" in result.summary
    assert "account locked until Monday" in result.fix


async def test_crv1_challenge_is_reported_as_a_second_factor(sc: Scenario) -> None:
    result = await _handshake(_context(sc, "otp", "otp\nx\n"))

    assert result.evidence["cause"] == "auth_challenge"
    assert result.evidence["challenge"] == "Enter your one-time code"
    assert "2FA" in result.summary
    assert "one-time code" in result.summary


async def test_prompted_credentials_are_probed_with_a_placeholder_and_not_blamed(
        sc: Scenario) -> None:
    ctx = sc.context(sc.client_config(client_lines(extra=["auth-user-pass"]),
                                      name="prompt.conf"))

    result = await _handshake(ctx)

    assert result.status == "skip", result.summary
    assert result.evidence["cause"] == "auth_not_checked"
    assert result.evidence["auth_failed"] == "AUTH_FAILED"
    assert "certificate are accepted" in result.summary


async def test_right_credentials_complete_the_handshake(sc: Scenario) -> None:
    result = await _handshake(_context(sc, "good", "alice\nsecret\n"))

    assert result.status == "ok", result.summary


async def test_expired_auth_token_is_explained_as_a_stale_token(sc: Scenario) -> None:
    login = _context(sc, "tokenlogin", "alice\nsecret\n", port=1196)
    assert login.options is not None
    target = (await resolve_targets(login.options))[0][0]
    first = await checks_tls._run_probe(probe_config(login.options, hand_window=5.0), target,
                                        login.netns, 5.0)
    assert first.session is not None and first.session.pushed is not None
    token = first.session.pushed.auth_token
    assert token is not None
    await trio.sleep(2.5)  # past the token's one-second lifetime

    result = await _handshake(_context(sc, "tokenreuse", f"alice\n{token}\n", port=1196))

    assert result.evidence["cause"] == "auth_token_expired", result.summary
    assert result.evidence["auth_failed"] == "AUTH_FAILED,SESSION: token expired"
    assert "not a wrong password" in result.explanation
    assert "--auth-gen-token: auth-token from client expired" in _log(sc, 2)


def test_openvpn_client_without_credentials_only_reports_a_tls_timeout(sc: Scenario) -> None:
    """The claim in the auth_required explanation: OpenVPN as a client, missing
    auth-user-pass, says only that TLS key negotiation timed out (hand-window shortened)."""
    client = sc.start_openvpn_in(sc.client, [*client_lines(), "hand-window 3", "verb 3"],
                                 name="ovpn-nocreds")
    try:
        assert client.wait_for("TLS key negotiation failed to occur within 3 seconds",
                               timeout=10), client.text()
        assert "AUTH_FAILED" not in client.text()
    finally:
        os.kill(client.pid, signal.SIGTERM)  # the lab also kills it at teardown
