"""A client's scripts: when ``up``, ``route-up``, ``ipchange``, ``route-pre-down`` and
``down`` run, with which arguments and environment (OpenVPN 2.6, init.c ``do_open_tun`` /
``do_close_tun``).

Like OpenVPN's ``env_set``, the environment accumulates over the client's life: the process
values and remotes at start, the link's address when it opens, the peer's certificate chain
after the TLS handshake, the device and routes after the push; later values replace earlier
ones. The builders are :mod:`trivpn.runtime.scriptenv`; the processes run through
:class:`~trivpn.runtime.scripts.ScriptRunner`.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import structlog
import trio
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from trivpn.config import ConfigError, Options
from trivpn.protocol.push import PushedOptions
from trivpn.protocol.tls import PeerCertificate
from trivpn.runtime import scriptenv as se
from trivpn.runtime.scripts import RootHelper, ScriptResult, ScriptRunner

Log = structlog.stdlib.BoundLogger


class ClientScripts:
    """The script hooks of one client process."""

    def __init__(self, options: Options, log: Log) -> None:
        self.options = options
        self.log = log
        # programs run in the config's base directory (OpenVPN: its working directory,
        # which `cd DIR` changes; trivpn resolves relative paths against the same place)
        self.runner = ScriptRunner(options.script_security, log, cwd=options.base_dir)
        self.root = RootHelper(log, cwd=options.base_dir) if options.down_root else None
        info = se.ProcessInfo(
            config=str(options.config_path), verb=options.verb, daemon=options.daemon,
            daemon_pid=os.getpid(), daemon_start_time=int(time.time()),
            log_redirect=options.log is not None)
        self.env: se.Env = {
            **se.process_env(info, options.setenv),
            **se.remotes_env(se.client_remotes(options)),
            **se.foreign_options_env(se.client_foreign_options(options, None)),
            **se.client_dns_env(options, None),
        }
        self._base = dict(self.env)
        self.tunnel: se.TunnelInfo | None = None
        self._root_env: se.Env | None = None
        self._authorities: list[x509.Certificate] | None = None
        # management-up-down: >UPDOWN:UP/DOWN with this environment (ManagementServer.up_down)
        self.up_down_hook: Callable[[Literal["UP", "DOWN"], se.Env], None] | None = None
        self._down_announced = False

    @property
    def runs_after_up(self) -> bool:
        """Whether anything runs once the device is configured (up, route-up)."""
        return bool(self.options.up or self.options.route_up
                    or self.up_down_hook is not None)  # >UPDOWN:UP comes with route-up

    def start_privileged(self) -> None:
        """Before user/group take effect: the down-root helper keeps root."""
        if self.root is not None:
            self.root.start()

    def close(self) -> None:
        if self.root is not None:
            self.root.close()

    # -- what the environment learns --------------------------------------------------------

    def new_connection(self) -> None:
        """A (re)connection starts from the process-wide variables only: OpenVPN rebuilds
        its per-connection environment set at each restart (``signal`` and the rest of
        the last connection are gone)."""
        self.env = dict(self._base)

    def on_link(self, ip: str, port: int) -> None:
        self.env.update(se.link_env(ip, port, trusted=False))

    def on_peer(self, peer: PeerCertificate, ip: str, port: int) -> None:
        chain: list[x509.Certificate] = []
        if peer.der:
            chain = se.chain_of(x509.load_der_x509_certificate(peer.der), self.authorities())
        self.env.update(se.peer_env(chain, peer.common_name, self.options.x509_track))
        self.env.update(se.link_env(ip, port, trusted=True))

    def authorities(self) -> list[x509.Certificate]:
        if self._authorities is None:
            self._authorities = []
            if self.options.ca is not None:
                try:
                    pem = self.options.ca.read_text().encode()
                    self._authorities = x509.load_pem_x509_certificates(pem)
                except (ConfigError, ValueError):
                    pass  # the TLS context already refused an unreadable ca
        return self._authorities

    def on_tunnel(self, pushed: PushedOptions | None, dev: str, *, net_gateway: str | None,
                  remote_ip: str) -> None:
        """The device is configured (or would be, with ifconfig-noexec/route-noexec)."""
        o = self.options
        info = se.client_tunnel_info(o, pushed, dev)
        vpn_gw = se.vpn_gateway(o, pushed, info)
        routes = se.client_routes(o, pushed, vpn_gw=vpn_gw, net_gw=net_gateway,
                                  remote_ip=remote_ip)
        for stale in [k for k in self.env
                      if k.startswith(("route_", "foreign_option_", "dns_"))]:
            del self.env[stale]
        self.env.update(se.tunnel_env(info))
        self.env.update(se.foreign_options_env(se.client_foreign_options(o, pushed)))
        self.env.update(se.client_dns_env(o, pushed))
        self.env.update(se.routes_env(routes, vpn_gateway=vpn_gw, net_gateway=net_gateway))
        if pushed is not None:
            default6 = (None if o.route_ipv6_gateway is None  # init.c, route.c as above
                        else str(o.route_ipv6_gateway))
            self.env.update(se.route_ipv6_env(
                [(str(r.network), str(r.gateway) if r.gateway is not None else default6)
                 for r in pushed.route_ipv6]))
            self.env.update({f"OPENVPN_{k}": v for k, v in pushed.setenv_safe})
        self.tunnel = info

    # -- tls-verify ----------------------------------------------------------------------------

    async def tls_verify(self, peer: PeerCertificate) -> tuple[bool, str]:
        """``tls-verify CMD``: CMD DEPTH SUBJECT for each certificate of the chain, the
        deepest first, each with the variables of its depth and the deeper ones (and
        ``common_name`` at depth 0); a non-zero exit refuses the peer (ssl_verify.c,
        verify_cert_call_command). With ``tls-export-cert DIR`` the certificate is written
        to a temporary file in DIR named by ``peer_cert``, removed afterwards. Call before
        :meth:`on_peer` (trusted_ip is not set yet). (accepted, detail)."""
        command = self.options.tls_verify
        if command is None or not peer.der:
            return True, ""
        chain = se.chain_of(x509.load_der_x509_certificate(peer.der), self.authorities())
        for depth in range(len(chain) - 1, -1, -1):
            cert = chain[depth]
            self.env.update(se.certificate_env(cert, depth, self.options.x509_track))
            if depth == 0:
                self.env["common_name"] = peer.common_name
            subject = self.env[f"tls_id_{depth}"]
            exported = self._export(cert)
            if exported is not None:
                self.env["peer_cert"] = str(exported)
            env = self._enter("tls-verify", command=command)
            try:
                result = await self._run(
                    "tls-verify", lambda d=depth, s=subject: [  # type: ignore[misc]
                        *se.command_argv(command), str(d), s], env)
            finally:
                if exported is not None:
                    exported.unlink(missing_ok=True)
                    self.env.pop("peer_cert", None)
            if not result.ok:
                return False, (f"tls-verify refused the certificate at depth {depth} "
                               f"({subject}): {result.detail}")
        return True, ""

    def abandon(self) -> None:
        """After a failed up: the device is only closed, no down script runs for it."""
        self.tunnel = None

    def _export(self, cert: x509.Certificate) -> Path | None:
        directory = self.options.tls_export_cert
        if directory is None:
            return None
        path = directory / f"openvpn_pef_{secrets.token_hex(16)}.tmp"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(cert.public_bytes(Encoding.PEM))
        except OSError as exc:
            self.log.warning("script_failed", script_type="tls-export-cert", detail=str(exc))
            return None
        return path

    # -- the scripts ---------------------------------------------------------------------------

    def _up_down_argv(self, command: str, context: str) -> list[str]:
        t = self.tunnel
        assert t is not None
        local, remote = se.up_down_values(t)
        return se.up_down_argv(command, dev=t.dev, tun_mtu=t.tun_mtu, local=local,
                               remote=remote, context=context)

    async def _run(self, script_type: str, argv_of: Callable[[], list[str]],
                   env: se.Env) -> ScriptResult:
        try:
            argv = argv_of()
        except se.CommandError as exc:
            self.log.warning("script_failed", script_type=script_type, detail=str(exc))
            return ScriptResult(False, str(exc))
        return await self.runner.run(script_type, argv, env)

    def _enter(self, script_type: str, *, context: str | None = None,
               signal: str | None = None, command: str | None = None) -> se.Env:
        """OpenVPN's env_set is one mutable set: ``script_context``/``signal`` stay set for
        later scripts, whether a command runs or not; ``script_type`` only when one runs."""
        if signal is not None:
            self.env["signal"] = signal
        if context is not None:
            self.env["script_context"] = context
        if command is not None:
            self.env["script_type"] = script_type
        return dict(self.env)

    async def up(self, context: str) -> ScriptResult | None:
        """``up`` after the device is configured; None when none is set."""
        command = self.options.up
        if self.tunnel is None:
            return None
        # the down-root plugin forks its root helper here, before up's script_type is set,
        # and its command later runs with this environment (down-root.c, PLUGIN_UP)
        self._root_env = self._enter("up", context=context)
        env = self._enter("up", context=context, command=command)
        if command is None:
            return None
        return await self._run("up", lambda: self._up_down_argv(command, context), env)

    def announce_down(self) -> bool:
        """management-up-down: ``>UPDOWN:DOWN`` before the device closes (init.c,
        do_close_tun(): before route-pre-down); True if it was sent now (then down() does not
        send it again)."""
        if self.up_down_hook is None or self.tunnel is None:
            return False
        self.up_down_hook("DOWN", dict(self.env))
        self._down_announced = True
        return True

    async def route_up(self, redirected: bool) -> ScriptResult | None:
        """``route-up`` after the routes (OpenVPN sets ``redirect_gateway`` first)."""
        self.env["redirect_gateway"] = "1" if redirected else "0"
        if self.up_down_hook is not None:  # before route-up (init.c, do_route())
            self.up_down_hook("UP", dict(self.env))
        command = self.options.route_up
        env = self._enter("route-up", command=command)
        if command is None:
            return None
        return await self._run("route-up", lambda: se.command_argv(command), env)

    def start_ipchange(self, nursery: trio.Nursery, ip: str, port: int) -> None:
        """``ipchange`` once the peer authenticated: its environment is taken now (before
        the push), the program runs in ``nursery``."""
        command = self.options.ipchange
        env = self._enter("ipchange", command=command)
        if command is not None:
            nursery.start_soon(self._run, "ipchange",
                               lambda: se.ipchange_argv(command, ip, port), env)

    async def down(self, context: str, signal: str | None, close: Callable[[], None], *,
                   reopen: bool = False) -> None:
        """route-pre-down, then (unless down-pre) ``close()``, then the down-root plugin's
        command and ``down``, then (with down-pre) ``close()`` — OpenVPN's order. A failing
        down script is logged; the device is closed anyway."""
        o = self.options
        if self.tunnel is None:
            close()
            return
        if not self._down_announced:
            self.announce_down()
        self._down_announced = False
        # route-pre-down runs even without routes: OpenVPN always has a route list (init.c,
        # do_alloc_route_list)
        env = self._enter("route-pre-down", context=context, signal=signal,
                          command=o.route_pre_down)
        if o.route_pre_down is not None:
            command = o.route_pre_down
            await self._run("route-pre-down", lambda: self._up_down_argv(command, context),
                            env)
        if not o.down_pre:
            close()
        if self.root is not None and o.down_root is not None:
            # the down-root plugin runs its own command line only (no device arguments),
            # before the down script, with the environment it kept from the up call
            # (down-root.c, down_root_server; init.c, run_up_down)
            root_env = self._root_env or self._enter("down", context=context, signal=signal)
            try:
                argv = se.command_argv(o.down_root)
            except se.CommandError as exc:
                self.log.warning("script_failed", script_type="down-root", detail=str(exc))
            else:
                await self.root.run(argv, se.filter_passwords(root_env, o.script_security))
        env = self._enter("down", context=context, signal=signal, command=o.down)
        if o.down is not None:
            command = o.down
            await self._run("down", lambda: self._up_down_argv(command, context), env)
        if o.down_pre:
            close()
        if not reopen:  # the device is gone: a later exit runs no down for it again
            self.tunnel = None

    async def down_on_restart(self, signal: str) -> None:
        """persist-tun with up-restart: ``down`` with context ``restart``; the device stays."""
        if self.options.down is None or self.tunnel is None:
            return
        command = self.options.down
        env = self._enter("down", context="restart", signal=signal, command=command)
        await self._run("down", lambda: self._up_down_argv(command, "restart"), env)
