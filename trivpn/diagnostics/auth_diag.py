"""Authentication causes for ``tls.handshake``: what an ``AUTH_FAILED`` (or a server falling
silent after key method 2) means, said in the user's terms.

What an OpenVPN 2.6 server does, checked against the real binary in
tests/diagnostics/test_scenarios_auth.py:

- credentials missing while the server has ``auth-user-pass-verify``: it logs "TLS Error: Auth
  Username/Password was not provided by peer" and drops the client without a word — on the wire
  the same silence after key method 2 as a rejected client certificate under TLS 1.3. The doctor
  tells the two apart with a second handshake carrying placeholder credentials: a server that
  rejects the certificate stays silent, one that wants credentials answers AUTH_FAILED.
- wrong credentials: a bare ``AUTH_FAILED`` after key method 2 ("TLS Auth Error: Auth
  Username/Password verification failed for peer" in its log). A server that refuses the
  certificate's account (``ccd-exclusive`` without a file for its common name) sends the same
  bare ``AUTH_FAILED``, so both are named, with the log line that tells them apart.
- a reason the auth script wrote to ``auth_failed_reason_file``: ``AUTH_FAILED,<reason>``
  (OpenVPN src/openvpn/ssl_verify.c, auth_set_client_reason()); a CRV1 dynamic challenge is such
  a reason; an expired auth-gen-token gives ``AUTH_FAILED,SESSION: token expired``
  (src/openvpn/auth_token.c, verify_auth_token()).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trivpn.config import Options
from trivpn.diagnostics.probe import where
from trivpn.protocol.controlmsg import AuthFailed, parse_control_message

PLACEHOLDER_USER = "trivpn-doctor-probe"  # sent only to learn whether the server asks for one
PLACEHOLDER_PASSWORD = "not-a-password"
AUTH_CAUSES = ("auth_required", "auth_failed", "auth_refused_account", "auth_failed_reason",
               "auth_challenge", "auth_token_expired", "auth_temp", "auth_not_checked")
LOG_WRONG_CREDENTIALS = "TLS Auth Error: Auth Username/Password verification failed for peer"
LOG_NO_CREDENTIALS = "TLS Error: Auth Username/Password was not provided by peer"
LOG_CCD_EXCLUSIVE = "TLS Auth Error: --client-config-dir authentication failed"


@dataclass(frozen=True, slots=True)
class AuthDiagnosis:
    cause: str
    summary: str
    explanation: str
    fix: str
    evidence: dict[str, Any]


def parse_reason(reason: str | None) -> AuthFailed:
    """The parsed ``AUTH_FAILED[,reason]`` as the session received it."""
    text = "AUTH_FAILED" if not reason or reason == "AUTH_FAILED" else f"AUTH_FAILED,{reason}"
    msg = parse_control_message(text)
    assert isinstance(msg, AuthFailed)
    return msg


def _challenge_text(body: str) -> tuple[str, bool]:
    """(text shown to the user, echo) from ``flags:state_id:username_b64:text``."""
    parts = body.split(":", 3)
    if len(parts) < 4:
        return body, False
    return parts[3], "E" in parts[0].split(",")


def diagnose_auth_failed(o: Options, reason: str | None) -> AuthDiagnosis:
    """What an AUTH_FAILED received after key method 2 means for this config."""
    msg = parse_reason(reason)
    creds = o.auth_user_pass is not None
    aup = where(o, "auth-user-pass") if creds else "the config"
    wire = f"AUTH_FAILED{',' + msg.reason if msg.reason else ''}"
    evidence: dict[str, Any] = {"auth_failed": wire, "config_has_auth_user_pass": creds}
    if msg.challenge is not None:
        text, echo = _challenge_text(msg.challenge)
        evidence["challenge"] = text
        return AuthDiagnosis(
            "auth_challenge", f"the server asks a challenge (2FA): {text!r}",
            "The username/password was accepted as a first step, and the server answered "
            f"with a CRV1 dynamic challenge ({wire!r}): it wants a second factor, typically "
            "a one-time code. The client must reconnect with the answer to this challenge "
            f"(the response is{'' if echo else ' not'} to be echoed).",
            "Connect interactively (a client that answers CRV1 challenges, or the management "
            "interface with 'management-query-passwords'), type the code when asked; the "
            "doctor cannot answer it for you.", evidence)
    if msg.session:
        evidence["reason"] = msg.message.strip()
        return AuthDiagnosis(
            "auth_token_expired", f"the server says the session token expired ({wire!r})",
            "The password sent was an auth-token the server generated at an earlier login "
            "(auth-gen-token), and the server says it is no longer valid "
            f"({msg.message.strip()!r}): the token's lifetime ran out or the server's "
            "token secret changed. This is not a wrong password: the stored token is stale.",
            "Log in again with the real username/password (put them, not the token, in "
            f"'auth-user-pass' ({aup})); if it happens at every reconnect, the server's "
            "'auth-gen-token' lifetime is shorter than the time between reconnects.", evidence)
    if msg.temp:
        evidence["reason"] = msg.message
        return AuthDiagnosis(
            "auth_temp", f"the server refused the login for now: {msg.message or wire!r}",
            f"The server answered {wire!r}: a temporary failure (TEMP), not a wrong password; "
            "it asks to retry later"
            f"{f' (after {msg.backoff} s)' if msg.backoff is not None else ''}.",
            "Retry later; if it persists, ask the server's administrator (its authentication "
            "backend is failing).", evidence)
    if msg.reason:
        evidence["reason"] = msg.reason
        return AuthDiagnosis(
            "auth_failed_reason", f"the server refused the login: {msg.reason!r}",
            f"The TLS handshake and the certificate were fine; the server's authentication "
            f"refused this login and gave the reason {msg.reason!r} (sent as {wire!r}).",
            f"Act on the server's reason {msg.reason!r}: it comes from the server's "
            f"authentication script or plugin; check the account with its administrator"
            f"{f' and the credentials in auth-user-pass ({aup})' if creds else ''}.", evidence)
    if not creds:
        return AuthDiagnosis(
            "auth_refused_account", "the server refused this client (bare AUTH_FAILED, no "
            "username/password configured)",
            "The server accepted the TLS handshake, then answered a bare AUTH_FAILED although "
            "this config sends no username/password: it refuses the account behind this "
            "client's certificate (for example 'ccd-exclusive' without a file for its common "
            "name, or a script/plugin refusing it), not a password.",
            "Look in the server's log at the time of this probe for the line naming this "
            f"client ('{LOG_CCD_EXCLUSIVE} for common name ...', or a failing client-connect "
            "script or plugin) and let the administrator enable this certificate's account.",
            evidence)
    return AuthDiagnosis(
        "auth_failed", "the server refused the login: wrong username/password, or the server "
        "refuses this client's account (bare AUTH_FAILED)",
        "The TLS handshake succeeded and the server accepted this client's certificate, then "
        "answered the key exchange with a bare AUTH_FAILED. Most often the username or "
        f"password in 'auth-user-pass' ({aup}) is wrong. The wire cannot tell that apart from "
        "a server that refuses the account behind this certificate after the password check "
        "(for example 'ccd-exclusive' without a file for its common name): both send the same "
        "bare AUTH_FAILED. The server's log tells them apart: "
        f"'{LOG_WRONG_CREDENTIALS}' means the username/password, "
        f"'{LOG_CCD_EXCLUSIVE} for common name ...' means the certificate's account.",
        f"Check the username (line 1) and password (line 2) of 'auth-user-pass' ({aup}) "
        "against the server's account; if they are right, ask the administrator which of the "
        "two log lines the server wrote for this attempt.", evidence)


def diagnose_prompted(o: Options, reason: str | None) -> AuthDiagnosis:
    """``auth-user-pass`` without a file (asked at connect time): the doctor logged in with a
    placeholder username, and the server answered AUTH_FAILED[,reason]."""
    wire = f"AUTH_FAILED{',' + reason if reason else ''}"
    return AuthDiagnosis(
        "auth_not_checked", "TLS and this client's certificate are accepted; the username/"
        "password was not checked (auth-user-pass asks for it at connect time)",
        "The server completed the TLS handshake, accepted this client's certificate and "
        f"answered the key exchange with {wire!r} to the doctor's placeholder username "
        f"({PLACEHOLDER_USER!r}): the server checks a username/password, as this config "
        "expects. 'auth-user-pass' has no file here, so the doctor had no real credentials "
        "and could not check them.",
        f"Nothing to fix before the login. To let the doctor check the credentials too, run "
        f"it with a copy of {o.config_path.name} whose 'auth-user-pass' "
        f"({where(o, 'auth-user-pass')}) names a file with the username on line 1 and the "
        "password on line 2.",
        {"auth_failed": wire, "credentials": "placeholder (auth-user-pass has no file)"})


def diagnose_auth_required(o: Options, second: dict[str, Any]) -> AuthDiagnosis:
    """The server went silent after key method 2 without credentials, and a second handshake
    with placeholder credentials got past that point (``second``: its evidence)."""
    return AuthDiagnosis(
        "auth_required", "the server requires a username/password and this config has no "
        "'auth-user-pass'",
        "The server accepted the TLS handshake and our certificate, but went silent once it "
        "received our key exchange without a username/password (the OpenVPN server logs "
        f"'{LOG_NO_CREDENTIALS}' and drops the client). OpenVPN as a client would only "
        "report 'TLS key negotiation failed to occur within 60 seconds', which looks like a "
        "rejected certificate. A second handshake with placeholder credentials "
        f"({PLACEHOLDER_USER!r}) was answered with {second.get('answer', 'a reply')}, which "
        "shows the certificate is accepted and the server asks for a username/password.",
        f"Add 'auth-user-pass' to {o.config_path.name} (alone, to be asked, or "
        "'auth-user-pass FILE' with the username on line 1 and the password on line 2) and "
        "use the account the server's administrator gave you.",
        {"credential_probe": second})


__all__ = ["AUTH_CAUSES", "PLACEHOLDER_PASSWORD", "PLACEHOLDER_USER", "AuthDiagnosis",
           "diagnose_auth_failed", "diagnose_auth_required", "diagnose_prompted",
           "parse_reason"]
