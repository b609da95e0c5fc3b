"""What ``trivpn run`` would do with a config, worked out without network traffic and without
touching the system: the plan ``trivpn check`` prints (docs/cli.md).

:func:`build_plan` does what a run does before its first packet — reads the files, builds the
TLS context and the control-channel key and the whole ``SessionConfig``
(:mod:`trivpn.sessionsetup`), the tunnel plan (:mod:`trivpn.runtime.tunnel`, pure), the
server's pool — and describes the result as a JSON object with stable keys (``SCHEMA``).
Nothing is resolved (remote host names are "resolved at run time"), no socket is opened, no
device, route, file or process is touched. :func:`render_text` turns the same object into
the text report. A problem that would stop ``trivpn run`` is a :class:`ConfigError` naming the
file and line.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from cryptography import x509

from trivpn.config import ConfigError, FileSource, Options
from trivpn.config.derive import address_pool6, ping_settings, server_push_options
from trivpn.config.directives import DIRECTIVES
from trivpn.config.errors import COMMAND_LINE, location_text
from trivpn.config.reader import Directive
from trivpn.protocol.tls import KU_REQUIRED
from trivpn.runtime.dns import DNS_MODES, DnsMode, choose_backend, plan_client_dns
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.privileges import resolve_identity
from trivpn.runtime.server import server_pool, server_tunnel_plan, wildcard_host
from trivpn.runtime.tunnel import (
    REDIRECT_IPV6_ROUTES,
    TunnelPlan,
    TunnelPlanError,
    plan_client_tunnel,
)
from trivpn.sessionsetup import read_credentials, session_config

Json = dict[str, Any]

SCHEMA = 1
"""Version of the JSON object's layout; bumped when a key changes meaning or goes away."""

PUSHED = "pushed by the server at run time"
RESOLVED_AT_RUN_TIME = "resolved at run time"
REDIRECT_DESTINATIONS = frozenset({"0.0.0.0/1", "128.0.0.0/1", *REDIRECT_IPV6_ROUTES})
SCRIPT_DIRECTIVES = ("up", "down", "down-pre", "route-up", "route-pre-down", "ipchange",
                     "tls-verify", "tls-export-cert", "learn-address", "client-connect",
                     "client-disconnect", "auth-user-pass-verify", "plugin")


def place(path: Path | None, line: int | None) -> Json:
    """Where something was written: ``file`` and ``line``, or for the command line ``file``
    null and ``line`` the argument's position (``command_line`` true); ``text`` for people."""
    on_command_line = path == COMMAND_LINE
    return {"file": str(path) if path is not None and not on_command_line else None,
            "line": line, "command_line": on_command_line, "text": location_text(path, line)}


def _where(o: Options, directive: str) -> Json | None:
    found = o.location(directive)
    return place(*found) if found is not None else None


def _error_at(o: Options, directive: str, reason: str) -> ConfigError:
    found = o.location(directive)
    return ConfigError(reason, *(found if found is not None else (o.config_path, None)))


def _file(src: FileSource | None, files_read: bool) -> Json | None:
    if src is None:
        return None
    return {"file": str(src.path) if src.path is not None else None, "inline": src.is_inline,
            "read": files_read or src.is_inline, "at": place(src.config_path, src.line)}


# --- the plan ----------------------------------------------------------------------------

def build_plan(options: Options, directives: Sequence[Directive] = (), *, files: bool = True,
               now: datetime) -> Json:
    """The run plan of ``options`` (parsed from ``directives``). ``files``: the referenced
    files are read and everything built from them (TLS context, keys, credentials file);
    without it only their names are shown. ``now`` decides certificate expiry.
    ConfigError when ``trivpn run`` would refuse to start."""
    o = options.with_files_loaded() if files else options
    verification = _verification(o, files, now)
    if files:
        # what the runtime builds before its first packet; auth-user-pass is read below
        # without any prompt
        session_config(replace(o, auth_user_pass=None), unix_time_offset=0.0)
        if isinstance(o.auth_user_pass, FileSource):
            read_credentials(o)
    try:
        resolve_identity(o.user, o.group)
    except RuntimeSetupError as exc:
        raise _error_at(o, "user" if o.user is not None and "user" in str(exc) else "group",
                        str(exc)) from exc
    if o.up is not None and o.script_security < 2:
        # the up script runs once the device is up; refused, trivpn run stops there (client.py
        # _after_up, server.py): say so before anything starts
        raise _error_at(o, "up", f"'up' cannot run with script-security {o.script_security}: "
                                 "external programs need 'script-security 2', and trivpn run "
                                 "stops when the up script fails")
    device, addresses, routes, tunnel_warnings = _tunnel(o)
    plan: Json = {
        "config": location_text(o.config_path, None),
        "role": o.role,
        "mode": o.mode,
        "tls_role": o.tls_role,  # differs from role for a TLS peer-to-peer server
        "pull": o.pull,
        "static_key": o.secret is not None,  # secret: static-key mode, no TLS
        "files_read": files,
        "transport": _transport(o),
        "device": device,
        "addresses": addresses,
        "routes": routes,
        "server": _server(o) if o.role == "server" else None,
        "timers": _timers(o),
        "process": _process(o),
        "dns": dns_section(o),
        "scripts": scripts_section(o, directives),
        "verification": verification,
        "ignored": _ignored(o),
        "warnings": [place(w.path, w.line) | {"message": w.message} for w in o.warnings]
                    + [place(None, None) | {"message": w} for w in tunnel_warnings],
    }
    plan["warnings"] += _expiry_warnings(o, verification)
    return plan


def _expiry_warnings(o: Options, verification: Json) -> list[Json]:
    found = []
    for directive in ("ca", "cert"):
        entry = verification.get(directive)
        if entry is None:
            continue
        certs = entry.get("certificates") or ([entry["certificate"]]
                                              if entry.get("certificate") else [])
        where = _where(o, directive) or place(o.config_path, None)
        for c in certs:
            if c["expired"]:
                found.append(where | {"message": f"{directive} certificate {c['subject']} "
                                                 f"expired on {c['not_after']}"})
            elif c["not_yet_valid"]:
                found.append(where | {"message": f"{directive} certificate {c['subject']} "
                                                 f"is not valid before {c['not_before']}"})
    return found


def _transport(o: Options) -> Json:
    remotes = []
    for r in o.remotes:
        try:
            ipaddress.ip_address(r.host)
            numeric = True
        except ValueError:
            numeric = False
        remotes.append({"host": r.host, "port": r.port, "proto": r.proto,
                        "family": r.family, "numeric": numeric,
                        "address": r.host if numeric else RESOLVED_AT_RUN_TIME})
    bound = o.bind_local
    local = {"address": o.local or (wildcard_host(o.family) if o.role == "server" else "any"),
             "port": o.lport if bound else None, "bound": bound}
    return {"proto": o.proto, "remotes": remotes, "remote_random": o.remote_random,
            "local": local}


def _tunnel(o: Options) -> tuple[Json, list[Json], list[Json], list[str]]:
    pulls = o.pull
    try:
        if o.role == "server":
            server_pool(o)  # the checks Server() makes
            plan = server_tunnel_plan(o)
        else:
            flags = o.redirect_gateway
            if flags is not None and "local" not in flags:
                flags = (*flags, "local")  # the exception route needs the resolved server
            plan = plan_client_tunnel(replace(o, redirect_gateway=flags), None,
                                      remote_host=None, net_gateway=None)
    except TunnelPlanError as exc:
        raise _error_at(o, "ifconfig" if o.ifconfig is not None else "dev", str(exc)) from exc
    kernel_names = plan.name.endswith("%d")
    device = {
        "type": plan.kind, "name": plan.name, "name_chosen_by_kernel": kernel_names,
        "mtu": plan.mtu, "txqueuelen": plan.txqueuelen, "topology": o.topology,
        "at_run_time": (["tun-mtu", "topology"] if pulls and o.dev_type == "tun"
                        else ["tun-mtu"] if pulls else []),
    }
    addresses: list[Json] = [{"address": a.address, "prefixlen": a.prefixlen, "peer": a.peer,
                              "text": str(a), "source": "server" if o.role == "server"
                              else "ifconfig"} for a in plan.addresses]
    if pulls:
        addresses.append({"address": None, "prefixlen": None, "peer": None,
                          "text": f"ifconfig {PUSHED}", "source": "push"})
    routes = _routes(o, plan)
    warnings = [w for w in plan.warnings if not (pulls and w.startswith("no ifconfig"))]
    return device, addresses, routes, warnings


def _routes(o: Options, plan: TunnelPlan) -> list[Json]:
    out: list[Json] = []
    redirect = o.redirect_gateway
    config_routes = {str(ipaddress.IPv4Network(f"{r.network}/{r.netmask}", strict=False))
                     for r in o.routes if _is_ipv4(r.network)}
    if redirect is not None and "local" not in redirect and "!ipv4" not in redirect:
        out.append({"destination": None, "gateway": None, "metric": None,
                    "via": "net_gateway", "source": "redirect-gateway",
                    "text": "the VPN server's address/32 via its current route (looked up "
                            "at run time)"})
    for r in plan.routes:
        if o.role == "server":
            source = "server" if r.destination not in config_routes else "route"
        elif r.destination in REDIRECT_DESTINATIONS and redirect is not None:
            source = "redirect-gateway"
        else:
            source = "route"
        via = "tunnel" if r.via_tunnel else (r.ifname or "net_gateway")
        if not r.via_tunnel:
            text = str(r)
        elif r.gateway is not None:
            text = f"{r.destination} via {r.gateway} on the tunnel"
        elif o.pull:
            text = f"{r.destination} on the tunnel, via the VPN gateway the server pushes"
        else:
            text = f"{r.destination} on the tunnel device"
        if r.metric is not None:
            text += f" metric {r.metric}"
        out.append({"destination": r.destination, "gateway": r.gateway, "metric": r.metric,
                    "via": via, "source": source, "text": text})
    if o.pull:
        if o.route_nopull:
            text = "routes the server pushes are ignored (route-nopull)"
        else:
            text = f"routes {PUSHED}"
        out.append({"destination": None, "gateway": None, "metric": None, "via": "tunnel",
                    "source": "push", "text": text})
    return out


def _server(o: Options) -> Json:
    pool = server_pool(o)
    return {
        "network": str(o.server.network) if o.server is not None else None,
        "pool": (None if pool is None else  # IPv6-only
                 {"first": str(pool.entry(0).local), "last": str(pool.entry(pool.size - 1).local),
                  "size": pool.size, "topology": pool.topology}),
        "pool_ipv6": _pool6(o, pool.size if pool is not None else None),
        "push": list(server_push_options(o)),
        "max_clients": o.max_clients,
        "client_to_client": o.client_to_client,
        "duplicate_cn": o.duplicate_cn,
        "ifconfig_pool_persist": (str(o.ifconfig_pool_persist.path)
                                  if o.ifconfig_pool_persist is not None else None),
        "client_config_dir": (str(o.client_config_dir)
                              if o.client_config_dir is not None else None),
        "ccd_exclusive": o.ccd_exclusive,
    }


def _pool6(o: Options, size4: int | None) -> Json | None:
    """The IPv6 pool (server-ipv6), as many addresses as the IPv4 pool pairs with it (all of
    them on an IPv6-only server)."""
    pool6 = address_pool6(o)
    if pool6 is None:
        return None
    size = pool6.size if size4 is None else min(size4, pool6.size)
    return {"first": str(pool6.address(0)), "last": str(pool6.address(size - 1)),
            "size": size, "prefix": pool6.bits}


def _process(o: Options) -> Json:
    """What the run does as a process: where it logs, which files it writes, whom it
    becomes. None of it is done by the check."""
    m = o.management
    return {
        "daemon": o.daemon_name if o.daemon else None,
        "log": ({"file": str(o.log), "append": o.log_append} if o.log is not None else None),
        "syslog": o.syslog,
        "status": ({"file": str(o.status.path), "seconds": o.status.seconds,
                    "version": o.status_version} if o.status is not None else None),
        "writepid": str(o.writepid) if o.writepid is not None else None,
        "user": o.user, "group": o.group,
        "management": (None if m is None else f"{m.address} unix" if m.unix
                       else f"{m.address} {m.port}"),
        "base_directory": str(o.base_dir),  # where relative file names resolve
        "suppress_timestamps": o.suppress_timestamps,
        "machine_readable_output": o.machine_readable_output,
    }


def _timers(o: Options) -> Json:
    pings = ping_settings(o)
    return {"ping": pings.ping, "ping_restart": pings.ping_restart, "ping_exit": pings.ping_exit,
            # static-key mode: no TLS, so no renegotiation and no handshake window
            "reneg_sec": o.reneg_sec if o.secret is None else None,
            "hand_window": o.hand_window if o.secret is None else None,
            "inactive": o.inactive, "session_timeout": o.session_timeout}


# --- hooks: DNS and scripts ------------------------------------------------------------------

def dns_section(o: Options) -> Json:
    """What happens to DNS (docs/dns.md). A client: the backend ``trivpn run`` would use (its
    default ``--dns-mode``, ``$TRIVPN_DNS_MODE`` or auto; asking the local D-Bus whether
    systemd-resolved runs) and the plan from the config file alone, to which the server's
    push is added at run time. A server: what it pushes to its clients."""
    configured = [" ".join(("dhcp-option", *opt)) for opt in o.dhcp_options]
    if o.role == "server":
        pushed = [p for p in server_push_options(o)
                  if p.startswith(("dhcp-option", "dns ", "block-outside-dns"))]
        return {"applied": "none (a server does not change its own DNS)",
                "configured": configured, "pushed_to_clients": pushed}
    mode = os.environ.get("TRIVPN_DNS_MODE", "auto")
    if mode not in DNS_MODES:
        mode = "auto"
    backend, why = choose_backend(cast(DnsMode, mode))
    applied = (f"through {backend.name} (--dns-mode {mode}): the config's settings and what "
               "the server pushes" if backend is not None else f"not applied: {why}")
    plan = plan_client_dns(o, None)
    return {"applied": applied, "mode": mode, "backend": backend.name if backend else None,
            "configured": configured, "from_config": plan.summary(),
            "notes": list(plan.notes), "pushed_to_clients": []}


def scripts_section(o: Options, directives: Iterable[Directive]) -> Json:
    """The script and plugin directives of the config (the last of each), in the order they
    are written, with ``script-security``. Hook: the script work of issue 12 may describe
    more (environment, when each runs)."""
    last: dict[str, Directive] = {}
    for d in directives:
        if d.name in SCRIPT_DIRECTIVES and d.name in DIRECTIVES:
            last[d.name] = d
    found = [{"directive": d.name, "args": list(d.args)} | {"at": place(d.path, d.line)}
             for d in sorted(last.values(), key=lambda d: (str(d.path), d.line))]
    return {"script_security": o.script_security, "scripts": found}


# --- verification ----------------------------------------------------------------------------

def _certs(src: FileSource | None, files: bool) -> list[x509.Certificate]:
    if src is None or not (files or src.is_inline):
        return []
    try:
        return x509.load_pem_x509_certificates(src.read_text().encode())
    except (ValueError, ConfigError):
        return []  # session_config reports it with the line


def _cert_info(cert: x509.Certificate, now: datetime) -> Json:
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "not_before": not_before.isoformat(), "not_after": not_after.isoformat(),
            "expired": now > not_after, "not_yet_valid": now < not_before,
            "days_left": (not_after - now).days}


def _verification(o: Options, files: bool, now: datetime) -> Json:
    if o.secret is not None:  # static-key mode: no TLS, no certificates
        return {"static_key": {"key": _file(o.secret, files), "key_direction": o.key_direction,
                               "cipher": o.cipher, "auth": o.auth}}
    ca = _file(o.ca, files)
    if ca is not None:
        ca["certificates"] = [_cert_info(c, now) for c in _certs(o.ca, files)]
    cert = _file(o.cert, files)
    if cert is not None:
        found = _certs(o.cert, files)
        cert["certificate"] = _cert_info(found[0], now) if found else None
    if o.tls_crypt is not None:
        wrap: Json = {"kind": "tls-crypt", "key": _file(o.tls_crypt, files)}
    elif o.tls_auth is not None:
        wrap = {"kind": "tls-auth", "key": _file(o.tls_auth, files),
                "key_direction": o.key_direction, "digest": o.auth}
    else:
        wrap = {"kind": "none"}
    crl: Json | None = None
    if o.crl_verify is not None:
        crl = {"kind": "file", **(_file(o.crl_verify, files) or {})}
    elif o.crl_verify_dir is not None:
        crl = {"kind": "dir", "file": str(o.crl_verify_dir)}
    ku = ([f"{m:x}" if m != KU_REQUIRED else "present" for m in o.remote_cert_ku]
          if o.remote_cert_ku is not None else None)
    auth: Json | str | None
    if o.auth_user_pass is None:
        auth = None
    elif isinstance(o.auth_user_pass, FileSource):
        auth = _file(o.auth_user_pass, files)
    else:
        auth = str(o.auth_user_pass)
    return {
        "ca": ca,
        "cert": cert,
        "key": _file(o.key, files),
        "extra_certs": _file(o.extra_certs, files),
        "dh": (o.dh if isinstance(o.dh, str) or o.dh is None else _file(o.dh, files)),
        "crl_verify": crl,
        "peer": {
            "remote_cert_tls": o.remote_cert_tls,
            "remote_cert_eku": o.remote_cert_eku,
            "remote_cert_ku": ku,
            "ns_cert_type": o.ns_cert_type,
            "verify_x509_name": ({"name": o.verify_x509_name.name,
                                  "type": o.verify_x509_name.type}
                                 if o.verify_x509_name is not None else None),
            "verify_client_cert": o.verify_client_cert if o.role == "server" else None,
            "x509_username_field": list(o.x509_username_field),
        },
        "control_channel": wrap,
        "tls": {"version_min": o.tls_version_min.version,
                "version_min_or_highest": o.tls_version_min.or_highest,
                "version_max": o.tls_version_max, "cipher": o.tls_cipher,
                "ciphersuites": o.tls_ciphersuites, "groups": o.tls_groups,
                "cert_profile": o.tls_cert_profile or "legacy"},
        "data_channel": {"ciphers": list(o.data_ciphers), "fallback": o.data_ciphers_fallback,
                         "auth": o.auth},
        "auth_user_pass": auth,
    }


def _ignored(o: Options) -> list[Json]:
    found = []
    for name, line in o.directive_lines.items():
        spec = DIRECTIVES.get(name)
        if spec is not None and spec.inert is not None:
            found.append({"directive": name, "reason": spec.inert}
                         | {"at": place(o.directive_files.get(name, o.config_path), line)})
    return sorted(found, key=lambda item: (item["at"]["file"] or "", item["at"]["line"] or 0))


# --- text ----------------------------------------------------------------------------------

def _role_text(plan: Json) -> str:
    if plan["role"] == "server":
        return f"server (mode {plan['mode']})"
    if plan.get("pull", True):
        return "client (pulls its settings from the server)"
    if plan.get("static_key"):
        side = ("connects to its remote" if plan.get("tls_role") == "client"
                else "waits for its peer")
        return f"static-key peer-to-peer, no TLS ({side}; the config's own ifconfig)"
    side = f"tls-{plan.get('tls_role', 'client')}"
    return f"TLS peer-to-peer {side} (one peer, the config's own ifconfig, no push)"


def render_text(plan: Json) -> list[str]:
    """The report for people, one section per key of the plan."""
    out = [f"Config:       {plan['config']}"
           + ("" if plan["files_read"] else "  (--no-files: referenced files not read)"),
           "Role:         " + _role_text(plan)]
    t = plan["transport"]
    local = t["local"]
    out.append(f"Transport:    {t['proto']}, local "
               + (f"{local['address']} port {local['port']}" if local["bound"]
                  else "not bound (any port)"))
    for r in t["remotes"]:
        out.append(f"  remote      {r['host']} {r['port']} {r['proto']}"
                   + ("" if r["numeric"] else f"  ({RESOLVED_AT_RUN_TIME})"))
    d = plan["device"]
    name = f"{d['name']} (the kernel picks the number)" if d["name_chosen_by_kernel"] \
        else d["name"]
    out.append(f"Device:       {d['type']} {name}, mtu {d['mtu']}, topology {d['topology']}"
               + (f", txqueuelen {d['txqueuelen']}" if d["txqueuelen"] else ""))
    if d["at_run_time"]:
        out.append(f"  the server may push: {', '.join(d['at_run_time'])}")
    out.append("Addresses:")
    out += [f"  {a['text']}" for a in plan["addresses"]] or ["  none"]
    out.append("Routes:")
    out += [f"  {r['text']}" + (f"  ({r['source']})" if r["source"] not in ("push",) else "")
            for r in plan["routes"]] or ["  none"]
    s = plan["server"]
    if s is not None:
        pool = s["pool"]
        out.append(f"Server:       {s['network']}, pool {pool['first']} - {pool['last']} "
                   f"({pool['size']} clients, {pool['topology']}), max-clients "
                   f"{s['max_clients']}")
        if s["pool_ipv6"] is not None:
            p6 = s["pool_ipv6"]
            out.append(f"              IPv6 pool {p6['first']} - {p6['last']} /{p6['prefix']}")
        out += [f"  push \"{p}\"" for p in s["push"]]
    tm = plan["timers"]
    out.append("Timers:       " + ", ".join(
        f"{k.replace('_', '-')} {tm[k]}" for k in tm if tm[k] is not None))
    p = plan["process"]
    items = [f"{k} {v}" for k, v in (("daemon", p["daemon"]), ("syslog", p["syslog"]),
                                       ("writepid", p["writepid"]), ("user", p["user"]),
                                       ("group", p["group"]), ("management", p["management"]))
             if v is not None]
    if p["log"] is not None:
        items.append(f"{'log-append' if p['log']['append'] else 'log'} {p['log']['file']}")
    if p["status"] is not None:
        st = p["status"]
        items.append(f"status {st['file']} every {st['seconds']} s (version {st['version']})")
    out.append("Process:      " + (", ".join(items) if items else "logs to stderr"))
    dns = plan["dns"]
    out.append(f"DNS:          {dns['applied']}")
    out += [f"  configured: {c}" for c in dns["configured"]]
    own = dns.get("from_config")
    if own and (own["servers"] or own["search_domains"] or own["routing_domains"]):
        out.append(f"  from the config: servers {', '.join(own['servers']) or '-'}; search "
                   f"{', '.join(own['search_domains']) or '-'}; routing-only "
                   f"{', '.join(own['routing_domains']) or '-'}")
    out += [f"  not applied: {n}" for n in dns.get("notes", [])]
    out += [f"  pushed to clients: {c}" for c in dns["pushed_to_clients"]]
    sc = plan["scripts"]
    out.append(f"Scripts:      script-security {sc['script_security']}"
               + ("" if sc["scripts"] else ", no scripts"))
    out += [f"  {x['directive']} {' '.join(x['args'])}  ({x['at']['text']})"
            for x in sc["scripts"]]
    out.append("Verification:")
    static = plan["verification"].get("static_key")
    out += (_render_static_key(static) if static is not None
            else _render_verification(plan["verification"]))
    out.append("Ignored (accepted; OpenVPN on Linux does nothing with them either):")
    out += [f"  {i['directive']} ({i['at']['text']}): {i['reason']}"
            for i in plan["ignored"]] or ["  nothing"]
    out.append("Warnings:")
    out += [f"  {w['text'] + ': ' if w['text'] else ''}{w['message']}"
            for w in plan["warnings"]] or ["  none"]
    return out


def _describe_file(f: Json | None) -> str:
    if f is None:
        return "none"
    if f["inline"]:
        return f"inline ({f['at']['text']})"
    return f"{f['file']}" + ("" if f["read"] else " (not read)")


def _render_static_key(static: Json) -> list[str]:
    """Static-key mode's verification section: the key file and the data channel."""
    direction = static["key_direction"]
    return [f"  secret:     {_describe_file(static['key'])}, key direction "
            f"{direction if direction is not None else 'none (bidirectional)'}",
            f"  data:       {static['cipher']}, auth {static['auth']} (no TLS, the same "
            "keys for the whole session)"]


def _render_verification(v: Json) -> list[str]:
    out = []
    if v["ca"] is not None:
        out.append(f"  ca:         {_describe_file(v['ca'])}")
        out += [f"    {c['subject']}, valid until {c['not_after']}{_validity(c)}"
                for c in v["ca"].get("certificates", [])]
    if v["cert"] is not None:
        out.append(f"  cert:       {_describe_file(v['cert'])}")
        c = v["cert"].get("certificate")
        if c is not None:
            out.append(f"    {c['subject']}, issued by {c['issuer']}, valid until "
                       f"{c['not_after']}{_validity(c)}")
        out.append(f"  key:        {_describe_file(v['key'])}")
    if v["extra_certs"] is not None:
        out.append(f"  extra-certs: {_describe_file(v['extra_certs'])}")
    dh = v["dh"]
    if dh is not None:
        out.append(f"  dh:         {dh if isinstance(dh, str) else _describe_file(dh)}")
    crl = v["crl_verify"]
    out.append("  crl-verify: " + ("none" if crl is None else
                                   f"directory {crl['file']}" if crl["kind"] == "dir"
                                   else _describe_file(crl)))
    p = v["peer"]
    checks = []
    if p["remote_cert_tls"]:
        checks.append(f"remote-cert-tls {p['remote_cert_tls']}")
    if p["remote_cert_eku"]:
        checks.append(f"remote-cert-eku {p['remote_cert_eku']}")
    if p["remote_cert_ku"]:
        checks.append(f"remote-cert-ku {' '.join(p['remote_cert_ku'])}")
    if p["ns_cert_type"]:
        checks.append(f"ns-cert-type {p['ns_cert_type']}")
    if p["verify_x509_name"]:
        checks.append(f"verify-x509-name {p['verify_x509_name']['name']} "
                      f"{p['verify_x509_name']['type']}")
    if p["verify_client_cert"]:
        checks.append(f"verify-client-cert {p['verify_client_cert']}")
    out.append("  peer cert:  signed by the ca" + "".join(f", {c}" for c in checks))
    w = v["control_channel"]
    if w["kind"] == "none":
        out.append("  control:    no tls-auth/tls-crypt")
    elif w["kind"] == "tls-auth":
        out.append(f"  control:    tls-auth {_describe_file(w['key'])}, key direction "
                   f"{w['key_direction'] if w['key_direction'] is not None else 'none'}, "
                   f"HMAC {w['digest']}")
    else:
        out.append(f"  control:    {w['kind']} {_describe_file(w['key'])}")
    tls = v["tls"]
    out.append(f"  tls:        version >= {tls['version_min']}"
               + (f", <= {tls['version_max']}" if tls["version_max"] else "")
               + f", cert profile {tls['cert_profile']}"
               + "".join(f", {k.replace('_', '-')} {tls[k]}"
                         for k in ("cipher", "ciphersuites", "groups") if tls[k]))
    data = v["data_channel"]
    out.append(f"  data:       {':'.join(data['ciphers'])}"
               + (f", fallback {data['fallback']}" if data["fallback"] else "")
               + f", auth {data['auth']}")
    aup = v["auth_user_pass"]
    if aup is not None:
        out.append("  auth-user-pass: " + (aup if isinstance(aup, str) else _describe_file(aup)))
    return out


def _validity(c: Json) -> str:
    if c["expired"]:
        return "  EXPIRED"
    if c["not_yet_valid"]:
        return "  NOT YET VALID"
    return f" ({c['days_left']} days left)"


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
