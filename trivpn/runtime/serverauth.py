"""The server's username/password check: runs the ``auth-user-pass-verify`` script without
blocking other peers, and follows its deferred decision through the control files.

OpenVPN (src/openvpn/ssl_verify.c, verify_user_pass_script()) runs the script synchronously and
then polls the auth_control_file; trivpn runs the script as a trio subprocess in the peer's own
task, so other clients keep handshaking while one script (or its deferred decision) is slow.
The decisions themselves are pure: trivpn/protocol/userauth.py.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import pam
import trio

from trivpn.config.errors import ConfigError
from trivpn.config.options import FileSource
from trivpn.protocol import authtoken as at
from trivpn.protocol import userauth as ua
from trivpn.protocol.peerinfo import PeerInfo

POLL_INTERVALS = (0.05, 0.05, 0.1, 0.1, 0.2, 0.2, 0.5)  # then every POLL_INTERVALS[-1] s
TMP_PREFIX = "openvpn_"


@dataclass(frozen=True, slots=True)
class ScriptAuth:
    """How to run the auth-user-pass-verify script."""

    argv: tuple[str, ...]
    via_file: bool
    script_security: int
    setenv: tuple[tuple[str, str], ...] = ()
    tmp_dir: str | None = None  # default: $TMPDIR or /tmp (OpenVPN --tmp-dir's default)


@dataclass(frozen=True, slots=True)
class AuthResult:
    verdict: ua.Verdict  # ACCEPT or REJECT
    reason: str | None = None  # for AUTH_FAILED,<reason>
    detail: str = ""  # for the log (never the password)


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = ""

    def __repr__(self) -> str:
        return f"Credentials({self.username!r}, password=***)"


def _temp_file(tmp_dir: str | None, kind: str) -> str:
    fd, path = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{kind}_", suffix=".tmp", dir=tmp_dir)
    os.close(fd)
    return path


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(4096)
    except OSError:
        return b""


class _ControlFiles:
    """auth_control_file, auth_pending_file, auth_failed_reason_file: created empty before the
    script runs, removed when the decision is known."""

    def __init__(self, tmp_dir: str | None) -> None:
        self.paths: dict[str, str] = {}
        for name, kind in (("auth_control_file", "acf"), ("auth_pending_file", "apf"),
                           ("auth_failed_reason_file", "afr")):
            self.paths[name] = _temp_file(tmp_dir, kind)

    def read(self, name: str) -> bytes:
        return _read(self.paths[name])

    def remove(self) -> None:
        for path in self.paths.values():
            with suppress(FileNotFoundError):
                os.unlink(path)


def load_token_key(secret: FileSource | None) -> bytes:
    """The auth-gen-token HMAC key: from ``auth-gen-token-secret`` (tokens then survive a
    restart), else a random key for this run (OpenVPN: generate_ephemeral_key())."""
    if secret is None:
        return at.hmac_key(os.urandom(at.KEY_LEN))
    try:
        return at.hmac_key(at.parse_secret_pem(secret.read_text()))
    except at.TokenKeyError as exc:
        raise ConfigError(f"auth-gen-token-secret {secret.describe()}: {exc} (make one with "
                          "'trivpn pki genkey auth-token FILE' or 'openvpn --genkey "
                          "auth-token FILE')", secret.config_path, secret.line) from None


async def run_script_auth(script: ScriptAuth, creds: Credentials, *, common_name: str | None,
                          address: tuple[str, int], info: PeerInfo, deadline: float,
                          max_pending: float, started: float,
                          on_pending: Callable[[list[str], float], None],
                          extra_env: Mapping[str, str] = {},
                          leftover_env: dict[str, str] | None = None) -> AuthResult:
    """Run the script for one client and wait for its (possibly deferred) decision until
    ``deadline`` (trio time). ``on_pending(messages, new_deadline)`` sends AUTH_PENDING /
    INFO_PRE when the script asks for a pending authentication. ``leftover_env`` receives
    the control files' variables, which OpenVPN leaves in the client's environment after
    removing the files (ssl_verify.c, key_state_gen_auth_control_files())."""
    if script.script_security < 2:
        # OpenVPN: "WARNING: External program may not be called unless '--script-security 2'
        # or higher is enabled", and the authentication fails
        return AuthResult(ua.Verdict.REJECT, None, "script_security_below_2")
    files = _ControlFiles(script.tmp_dir)
    if leftover_env is not None:
        leftover_env.update(files.paths)
    creds_file: str | None = None
    try:
        argv = list(script.argv)
        password: str | None = None
        if script.via_file:
            creds_file = _temp_file(script.tmp_dir, "up")
            Path(creds_file).write_bytes(ua.credentials_file(creds.username, creds.password))
            argv.append(creds_file)
        elif script.script_security >= 3:
            password = creds.password
        env = ua.user_pass_env(username=creds.username, password=password,
                               common_name=common_name, untrusted_ip=address[0],
                               untrusted_port=address[1], info=info,
                               control_files=files.paths,
                               extra={**dict(script.setenv), **extra_env})
        code: int | None = None
        with trio.move_on_at(deadline) as scope:
            proc = await trio.run_process(argv, env=_string_env(env), check=False,
                                          stdin=subprocess.DEVNULL)
            code = proc.returncode
        if scope.cancelled_caught:
            return AuthResult(ua.Verdict.REJECT, None, "script_timeout")
        if creds_file is not None:  # the password file lives only while the script runs
            with suppress(FileNotFoundError):
                os.unlink(creds_file)
            creds_file = None
        verdict = ua.script_verdict(code if code is not None and code >= 0 else None)
        if verdict is ua.Verdict.ACCEPT:
            return AuthResult(verdict, None, "script_accepted")
        if verdict is ua.Verdict.REJECT:
            return AuthResult(verdict, ua.failed_reason(files.read("auth_failed_reason_file")),
                              f"script_exit_{code}")
        return await _deferred(files, info, deadline=deadline, max_pending=max_pending,
                               started=started, on_pending=on_pending)
    finally:
        if creds_file is not None:
            with suppress(FileNotFoundError):
                os.unlink(creds_file)
        files.remove()


async def _deferred(files: _ControlFiles, info: PeerInfo, *, deadline: float,
                    max_pending: float, started: float,
                    on_pending: Callable[[list[str], float], None]) -> AuthResult:
    """Exit code 2: maybe a pending request, then poll auth_control_file until it says 1/0."""
    try:
        pending = ua.parse_pending_file(files.read("auth_pending_file"))
    except ua.PendingFileError as exc:
        return AuthResult(ua.Verdict.REJECT, None, f"pending_file_invalid: {exc}")
    if pending is not None:
        if not ua.pending_method_supported(info, pending.method):
            return AuthResult(ua.Verdict.REJECT, ua.unsupported_method_reason(pending.method),
                              "pending_method_unsupported")
        now = trio.current_time()
        out = ua.pending_messages(pending, info, elapsed=now - started,
                                  max_timeout=max_pending)
        if out is None:
            return AuthResult(ua.Verdict.REJECT, None, "pending_too_late")
        messages, timeout = out
        deadline = now + timeout
        on_pending(messages, deadline)
    polls = 0
    while True:
        verdict = ua.control_file_verdict(files.read("auth_control_file"))
        if verdict is ua.Verdict.ACCEPT:
            return AuthResult(verdict, None, "deferred_accepted")
        if verdict is ua.Verdict.REJECT:
            return AuthResult(verdict, ua.failed_reason(files.read("auth_failed_reason_file")),
                              "deferred_rejected")
        now = trio.current_time()
        if now >= deadline:
            return AuthResult(ua.Verdict.REJECT, None, "deferred_timeout")
        await trio.sleep(min(POLL_INTERVALS[min(polls, len(POLL_INTERVALS) - 1)],
                             deadline - now))
        polls += 1


def _string_env(env: Mapping[str, str]) -> dict[str, str]:
    """Drop what execve cannot carry (NUL bytes) rather than fail the whole run."""
    return {k: v for k, v in env.items() if "\0" not in k and "\0" not in v and "=" not in k}


# --- PAM (the line 'plugin .../openvpn-plugin-auth-pam.so SERVICE') ---------------------------

PAM_THREADS = 4  # PAM checks at once; the others wait (a slow PAM stack never blocks the loop)


def _pam_check(service: str, username: str, password: str) -> tuple[bool, str]:
    """pam_authenticate then pam_acct_mgmt, as OpenVPN's auth-pam plugin does (no
    pam_setcred). python-pam's authenticator is per call: it is not thread-safe."""
    checker = pam.PamAuthenticator()
    try:
        ok = checker.authenticate(username, password, service=service, resetcreds=False)
    except ValueError:  # a NUL in a name
        return False, "invalid characters"
    return bool(ok), str(checker.reason)


async def pam_auth(service: str, creds: Credentials,
                   limiter: trio.CapacityLimiter) -> AuthResult:
    ok, reason = await trio.to_thread.run_sync(
        _pam_check, service, creds.username, creds.password, limiter=limiter,
        abandon_on_cancel=True)
    if ok:
        return AuthResult(ua.Verdict.ACCEPT, None, "pam")
    return AuthResult(ua.Verdict.REJECT, None, f"pam: {reason}")


# --- management-client-auth ------------------------------------------------------------------

MAX_CONFIG_LINES = 256  # lines of one multi-line client-auth answer


@dataclass(frozen=True, slots=True)
class ManagementAnswer:
    allow: bool
    reason: str | None = None  # client-deny: for the log
    client_reason: str | None = None  # client-deny: sent as AUTH_FAILED,<client_reason>
    config: tuple[str, ...] = ()  # client-auth: client-connect config lines


class ClientAuthBroker:
    """management-client-auth: tells the management clients about a client that needs a
    decision (``>CLIENT:CONNECT,cid,kid`` and its ``>CLIENT:ENV`` lines) and waits for
    ``client-auth`` / ``client-auth-nt`` / ``client-deny`` (OpenVPN src/openvpn/manage.c,
    management_notify_client_needing_auth(), man_client_auth(), man_client_deny())."""

    def __init__(self) -> None:
        self._next_cid = 0
        self._next_kid = 0
        self._waiting: dict[tuple[int, int], trio.MemorySendChannel[ManagementAnswer]] = {}
        # set by the management interface: sends notification lines to its clients
        self.notify: Callable[[list[str]], None] | None = None
        # set by the server: management 'client-kill CID [MSG]' (True: a client had that CID)
        self.kill: Callable[[int, str | None], bool] | None = None

    def new_cid(self) -> int:
        cid = self._next_cid
        self._next_cid += 1
        return cid

    def new_kid(self) -> int:
        """A key id for the next question (the management client only echoes it back)."""
        kid = self._next_kid
        self._next_kid += 1
        return kid

    async def ask(self, cid: int, kid: int, env: Mapping[str, str],
                  deadline: float, *, mode: str = "CONNECT") -> ManagementAnswer | None:
        """Announce the client (``mode`` CONNECT, or REAUTH for a renegotiation) and wait
        for the answer until ``deadline`` (None: none came)."""
        send, receive = trio.open_memory_channel[ManagementAnswer](1)
        self._waiting[(cid, kid)] = send
        try:
            lines = [f">CLIENT:{mode},{cid},{kid}"]
            lines += [f">CLIENT:ENV,{k}={v}" for k, v in env.items() if "\n" not in v]
            lines.append(">CLIENT:ENV,END")
            if self.notify is not None:
                self.notify(lines)
            with trio.move_on_at(deadline):
                return await receive.receive()
            return None
        finally:
            self._waiting.pop((cid, kid), None)

    def answer(self, cid: int, kid: int, answer: ManagementAnswer) -> bool:
        """A management command's decision; False for an unknown cid/kid (not waiting)."""
        send = self._waiting.pop((cid, kid), None)
        if send is None:
            return False
        try:
            send.send_nowait(answer)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True
