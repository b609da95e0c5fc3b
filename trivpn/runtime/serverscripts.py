"""A server's scripts: ``up``/``route-up``/``down`` for its device, ``tls-verify`` for each
client certificate, ``client-connect`` (with its dynamic config file), ``client-disconnect`` and
``learn-address`` for each client (OpenVPN 2.6: multi.c ``multi_connection_established``,
``multi_client_disconnect_script``, ``learn_address_script``; ssl_verify.c
``verify_cert_call_command``; init.c ``do_open_tun``).

The environment is OpenVPN's: one server-wide set (process, connection entry, device), copied
for each client when its first packet arrives and then extended (its address, certificate
chain, peer-info, pool address, times, byte counts). The builders are the pure functions of
:mod:`trivpn.runtime.scriptenv`; the processes run through
:class:`~trivpn.runtime.scripts.ScriptRunner` (``script-security``, no shell, a timeout), in
tasks of their own so no script ever blocks another client or the data path.

``learn-address`` calls run one at a time, in the order they were asked for (OpenVPN runs them
synchronously): an ``add`` always reaches the script before the ``delete`` of the same address.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
import trio
from cryptography import x509

from trivpn.config import ConfigError, Options
from trivpn.config.ccd import ClientConfig, load_client_config
from trivpn.protocol.tls import PeerCertificate
from trivpn.runtime import scriptenv as se
from trivpn.runtime.scripts import RootHelper, ScriptResult, ScriptRunner

Log = structlog.stdlib.BoundLogger

DEFERRED_POLL = 0.2  # seconds between looks at a deferred client-connect's result file


@dataclass(frozen=True, slots=True)
class ConnectOutcome:
    """What ``client-connect`` decided: ``ok`` (the client may connect), the dynamic config
    file the script wrote (None: empty or none), and why not (``detail``)."""

    ok: bool
    config: ClientConfig | None = None
    detail: str = ""


class ServerScripts:
    """The script hooks of one server process."""

    def __init__(self, options: Options, log: Log) -> None:
        o = options
        self.options = o
        self.log = log
        self.runner = ScriptRunner(o.script_security, log, cwd=o.base_dir)
        # plugin .../openvpn-plugin-down-root.so "CMD": CMD runs as root at down, through a
        # helper forked before user/group take effect (scripts.py, RootHelper)
        self.root = RootHelper(log, cwd=o.base_dir) if o.down_root else None
        self._root_env: se.Env | None = None
        info = se.ProcessInfo(
            config=str(o.config_path), verb=o.verb, daemon=o.daemon, daemon_pid=os.getpid(),
            daemon_start_time=int(time.time()), log_redirect=o.log is not None)
        self.env: se.Env = {
            **se.process_env(info, o.setenv),
            **se.server_link_env(o.local, o.lport, _proto_name(o.proto), o.rport),
        }
        self.tunnel: se.TunnelInfo | None = None
        # tmp-dir: client-connect's files (OpenVPN: platform_create_temp_file(tmp_dir))
        self.tmp_dir = o.tmp_dir if o.tmp_dir is not None else Path(tempfile.gettempdir())
        self._authorities: list[x509.Certificate] | None = None
        self._learn_send, self._learn_recv = trio.open_memory_channel[
            tuple[list[str], se.Env, trio.Event, list[bool]]](math.inf)

    # -- what is configured ----------------------------------------------------------------

    @property
    def connect_hooks(self) -> bool:
        """Whether admitting a client runs anything (client-connect or learn-address)."""
        return self.options.client_connect is not None or self.options.learn_address is not None

    @property
    def per_client(self) -> bool:
        """Whether any per-client script is configured, or management-client-auth (whose
        >CLIENT notifications carry the same set): then each client keeps its set."""
        o = self.options
        return o.management_client_auth or any(
            c is not None for c in (o.client_connect, o.client_disconnect, o.learn_address,
                                    o.tls_verify))

    @property
    def tls_verify_configured(self) -> bool:
        return self.options.tls_verify is not None

    # -- server-wide ----------------------------------------------------------------------

    def on_tunnel(self, info: se.TunnelInfo) -> None:
        """The device is open: its variables join the server-wide set."""
        self.tunnel = info
        self.env.update(se.tunnel_env(info))
        self.env["script_context"] = "init"

    def start_privileged(self) -> None:
        """Before user/group take effect: the down-root helper keeps root."""
        if self.root is not None:
            self.root.start()

    def close(self) -> None:
        if self.root is not None:
            self.root.close()

    async def up(self) -> ScriptResult | None:
        """``up DEV TUN_MTU 0 LOCAL NETMASK_OR_REMOTE init`` once the device is configured.
        The down-root plugin keeps the environment of this call from before its script_type
        (down-root.c, PLUGIN_UP)."""
        self._root_env = dict(self.env)
        return await self._device_script("up", self.options.up)

    async def route_up(self, routes_ipv6: se.Env | None = None) -> ScriptResult | None:
        """``route-up`` after the server's routes; ``redirect_gateway`` is 0 on a server and
        stays in every later script's environment, as do the ``route_ipv6_*`` variables of
        its ``route-ipv6`` lines (``routes_ipv6``; route.c, setenv_routes_ipv6())."""
        self.env["redirect_gateway"] = "0"
        self.env.update(routes_ipv6 or {})
        command = self.options.route_up
        if command is None:
            return None
        env = {**self.env, "script_type": "route-up"}
        return await self._run("route-up", lambda: se.command_argv(command), env)

    async def down(self, signal: str) -> ScriptResult | None:
        """``down`` (same arguments as up) after the device is closed, with ``signal``; the
        down-root plugin's command first, as root, alone (no device arguments), with the
        environment kept from up (down-root.c, down_root_server; init.c, run_up_down: the
        plugin before the script)."""
        self.env["signal"] = signal
        o = self.options
        if self.root is not None and o.down_root is not None and self.tunnel is not None:
            try:
                argv = se.command_argv(o.down_root)
            except se.CommandError as exc:
                self.log.warning("script_failed", script_type="down-root", detail=str(exc))
            else:
                root_env = self._root_env if self._root_env is not None else dict(self.env)
                await self.root.run(argv, se.filter_passwords(root_env, o.script_security))
        return await self._device_script("down", self.options.down)

    async def _device_script(self, script_type: str, command: str | None) -> ScriptResult | None:
        t = self.tunnel
        if command is None or t is None:
            return None
        local, remote = se.up_down_values(t)
        env = {**self.env, "script_type": script_type}
        return await self._run(script_type, lambda: se.up_down_argv(
            command, dev=t.dev, tun_mtu=t.tun_mtu, local=local, remote=remote,
            context="init"), env)

    # -- one client ------------------------------------------------------------------------

    def client_env(self, ip: str, port: int) -> se.Env:
        """A new client's set: the server's, with its (untrusted) address."""
        return {**self.env, **se.link_env(ip, port, trusted=False)}

    def authorities(self) -> list[x509.Certificate]:
        if self._authorities is None:
            self._authorities = []
            if self.options.ca is not None:
                # the TLS context already refused an unreadable ca
                with contextlib.suppress(ConfigError, ValueError):
                    self._authorities = x509.load_pem_x509_certificates(
                        self.options.ca.read_text().encode())
        return self._authorities

    def chain(self, peer: PeerCertificate) -> list[x509.Certificate]:
        if not peer.der:
            return []
        return se.chain_of(x509.load_der_x509_certificate(peer.der), self.authorities())

    async def tls_verify(self, env: se.Env, peer: PeerCertificate) -> tuple[bool, str]:
        """``tls-verify CMD``: ``CMD DEPTH SUBJECT`` per certificate, the deepest first, with
        the variables of that depth and the deeper ones (``common_name`` at depth 0) added to
        the client's set ``env``; a non-zero exit refuses the client (ssl_verify.c,
        verify_cert_call_command). (accepted, detail)."""
        command = self.options.tls_verify
        if command is None:
            return True, ""
        chain = self.chain(peer)
        for depth in range(len(chain) - 1, -1, -1):
            env.update(se.certificate_env(chain[depth], depth, self.options.x509_track))
            if depth == 0:
                env["common_name"] = peer.common_name
            subject = env[f"tls_id_{depth}"]
            env["script_type"] = "tls-verify"
            result = await self._run("tls-verify", lambda d=depth, s=subject: [  # type: ignore[misc]
                *se.command_argv(command), str(d), s], dict(env))
            if not result.ok:
                return False, (f"tls-verify refused the certificate at depth {depth} "
                               f"({subject}): {result.detail}")
        return True, ""

    async def client_connect(self, env: se.Env) -> ConnectOutcome:
        """``client-connect CMD FILE``: FILE is a new empty file the script may fill with
        client-config-dir directives (``ifconfig-push``, ``push``, ``iroute``, ``disable``...,
        applied after the client-config-dir file); a non-zero exit refuses the client. 2.6's
        deferred form: the script writes ``2`` into ``$client_connect_deferred_file`` and
        later ``1`` (accept) or ``0`` (refuse) (multi.c, multi_client_connect_call_script,
        ccs_test_deferred_ret_file). ``env`` (the client's set) is updated in place."""
        command = self.options.client_connect
        if command is None:
            return ConnectOutcome(True)
        try:
            config_file = _temp_file(self.tmp_dir, "cc")
            deferred_file = _temp_file(self.tmp_dir, "ccr")
        except OSError as exc:
            return ConnectOutcome(False, detail=f"cannot create a temporary file: {exc}")
        env["client_connect_config_file"] = str(config_file)
        env["client_connect_deferred_file"] = str(deferred_file)
        env["script_type"] = "client-connect"
        try:
            result = await self._run("client-connect", lambda: se.client_connect_argv(
                command, str(config_file)), dict(env))
            if not result.ok:
                return ConnectOutcome(False, detail=f"client-connect: {result.detail}")
            status = _deferred_status(deferred_file)
            if status == "2":
                status = await self._wait_deferred(deferred_file)
            if status == "0":
                return ConnectOutcome(False, detail="deferred client-connect refused the client")
            if status not in ("", "1"):
                return ConnectOutcome(False, detail="deferred client-connect: unexpected "
                                                    f"value {status!r} in its result file")
            return self._dynamic_config(config_file)
        finally:
            # the files and their variables go (multi.c, ccs_delete_config_file)
            config_file.unlink(missing_ok=True)
            deferred_file.unlink(missing_ok=True)
            env.pop("client_connect_config_file", None)
            env.pop("client_connect_deferred_file", None)

    async def _wait_deferred(self, path: Path) -> str:
        """Poll the deferred result file until it says 0 or 1 (the caller's hand-window or
        the peer's removal cancels the wait)."""
        while True:
            await trio.sleep(DEFERRED_POLL)
            status = _deferred_status(path)
            if status not in ("", "2"):
                return status

    def _dynamic_config(self, path: Path) -> ConnectOutcome:
        try:
            if path.stat().st_size == 0:
                return ConnectOutcome(True)
            config = load_client_config(path, self.options.base_dir)
        except (OSError, ConfigError) as exc:
            return ConnectOutcome(False, detail=f"client-connect's config file: {exc}")
        return ConnectOutcome(True, config)

    async def client_disconnect(self, env: se.Env, *, bytes_received: int, bytes_sent: int,
                                duration: int) -> None:
        """``client-disconnect CMD`` with the client's set and its byte counts and time."""
        command = self.options.client_disconnect
        if command is None:
            return
        env.update(se.disconnect_env(bytes_received, bytes_sent, duration))
        env["script_type"] = "client-disconnect"
        await self._run("client-disconnect", lambda: se.command_argv(command), dict(env))

    async def learn_address(self, op: str, address: str, common_name: str | None,
                            env: se.Env | None) -> bool:
        """``learn-address CMD OP ADDRESS [CN]``, queued behind the earlier calls; True when
        it succeeded (or none is configured). A delete for a client that is gone runs with
        an empty set (only ``script_type``), as OpenVPN's route reaper does."""
        command = self.options.learn_address
        if command is None:
            return True
        try:
            argv = se.learn_address_argv(command, op, address, common_name)
        except se.CommandError as exc:
            self.log.warning("script_failed", script_type="learn-address", detail=str(exc))
            return False
        job_env = dict(env) if env is not None else {}
        job_env["script_type"] = "learn-address"
        done, answer = trio.Event(), [False]
        self._learn_send.send_nowait((argv, job_env, done, answer))
        await done.wait()
        return answer[0]

    def learn_address_later(self, op: str, address: str,
                            common_name: str | None, env: se.Env | None) -> None:
        """Queue a learn-address call now (keeping the order) and forget its result."""
        command = self.options.learn_address
        if command is None:
            return
        try:
            argv = se.learn_address_argv(command, op, address, common_name)
        except se.CommandError as exc:
            self.log.warning("script_failed", script_type="learn-address", detail=str(exc))
            return
        job_env = dict(env) if env is not None else {}
        job_env["script_type"] = "learn-address"
        self._learn_send.send_nowait((argv, job_env, trio.Event(), [False]))

    async def run_learn_queue(self) -> None:
        """Runs the queued learn-address calls one after the other (a task of the server)."""
        async for argv, env, done, answer in self._learn_recv:
            if not argv:
                done.set()
                continue
            try:
                result = await self.runner.run("learn-address", argv, env)
                answer[0] = result.ok
            finally:
                done.set()

    async def flush_learn_queue(self) -> None:
        """Wait until every queued learn-address call ran."""
        if self.options.learn_address is None:
            return
        done = trio.Event()
        self._learn_send.send_nowait(([], {}, done, [True]))  # a marker: runs nothing
        await done.wait()

    async def _run(self, script_type: str, argv_of: Callable[[], list[str]],
                   env: se.Env) -> ScriptResult:
        try:
            argv = argv_of()
        except se.CommandError as exc:
            self.log.warning("script_failed", script_type=script_type, detail=str(exc))
            return ScriptResult(False, str(exc))
        return await self.runner.run(script_type, argv, env)


def _proto_name(proto: str) -> str:
    """``proto_1`` as OpenVPN writes it for a server: ``udp`` or ``tcp-server``."""
    return "udp" if proto.startswith("udp") else "tcp-server"


def _temp_file(directory: Path, prefix: str) -> Path:
    """A new empty file ``openvpn_PREFIX_<32 hex>.tmp`` (platform.c,
    platform_create_temp_file)."""
    path = directory / f"openvpn_{prefix}_{os.urandom(16).hex()}.tmp"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    return path


def _deferred_status(path: Path) -> str:
    """The first character of the deferred result file ('' when empty or absent)."""
    try:
        with path.open("rb") as f:
            return f.read(1).decode("latin-1")
    except OSError:
        return ""


def local_time_text(unix_time: float) -> str:
    """OpenVPN's ``time_ascii``: local time as ``YYYY-MM-DD HH:MM:SS`` (otime.c,
    time_string)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_time))
