"""Every doctor check, in the stable order reports list them."""

from __future__ import annotations

from trivpn.diagnostics import (
    checks_beyond,
    checks_ccd,
    checks_certs,
    checks_compat,
    checks_config,
    checks_dns,
    checks_dnsafter,
    checks_env,
    checks_mtu,
    checks_nat,
    checks_netbeh,
    checks_pki,
    checks_port,
    checks_route,
    checks_server,
    checks_serverstate,
    checks_static,
    checks_tls,
    checks_tunnel,
)
from trivpn.diagnostics.model import Check


def all_checks() -> tuple[Check, ...]:
    """Offline checks first (config, PKI, environment), then name resolution and routing, then
    the network probes, then the server-side checks. Ids must be unique."""
    checks = (*checks_config.CHECKS, *checks_pki.CHECKS, *checks_env.CHECKS,
              *checks_dns.CHECKS, *checks_route.CHECKS, *checks_port.CHECKS,
              *checks_static.CHECKS,
              *checks_nat.CHECKS, *checks_tls.CHECKS, *checks_mtu.CHECKS,
              *checks_tunnel.CHECKS, *checks_beyond.CHECKS, *checks_dnsafter.CHECKS,
              *checks_compat.CHECKS,
              *checks_netbeh.CHECKS,
              *checks_server.CHECKS, *checks_ccd.CHECKS,
              *checks_serverstate.CHECKS, *checks_certs.CHECKS)
    seen: set[str] = set()
    for check in checks:
        if check.id in seen:
            raise ValueError(f"duplicate check id {check.id!r}")
        seen.add(check.id)
    return checks
