"""``trivpn init-server DIR --public-address HOST``: a ready-to-run server config and its PKI.

Writes ``DIR/server.conf`` (tls-crypt, AES-256-GCM/CHACHA20-POLY1305, topology subnet,
remote-cert-tls client, keepalive, user/group, persist-key/tun, status file) and ``DIR/pki/``
(CA, server certificate, tls-crypt key ``DIR/pki/tc.key``), then prints the next steps. Paths in
the config are absolute, so it works from any directory and with ``openvpn --config`` too.
Refuses to touch a DIR that already has a server.conf or a CA.

Exit status: 0 on success, 1 when something cannot be written, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import grp
import ipaddress
import pwd
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trivpn.commands.argtypes import port
from trivpn.pki.certs import create_ca, issue_cert
from trivpn.pki.errors import PkiError
from trivpn.pki.statickeys import generate_static_key, write_static_key
from trivpn.pki.store import PkiStore

DEFAULT_NETWORK = "10.8.0.0/24"  # OpenVPN's customary VPN subnet; only ever written as text
DEFAULT_PORT = 1194
SERVER_NAME = "server"
MAX_PREFIX = 29  # room for the server and a few clients
UNPRIVILEGED_USER = "nobody"
GROUP_CANDIDATES = ("nogroup", "nobody")  # Debian/Ubuntu name first, then the others'

Transport = Literal["udp", "tcp"]


@dataclass(frozen=True, slots=True)
class ServerPlan:
    """Everything the server config says; ``user``/``group`` None to leave them out."""

    root: Path
    public_address: str
    port: int = DEFAULT_PORT
    proto: Transport = "udp"
    network: ipaddress.IPv4Network = field(
        default_factory=lambda: ipaddress.IPv4Network(DEFAULT_NETWORK))
    user: str | None = UNPRIVILEGED_USER
    group: str | None = "nogroup"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def config(self) -> Path:
        return self.root / "server.conf"

    @property
    def tls_crypt_key(self) -> Path:
        return self.pki / "tc.key"

    @property
    def status_file(self) -> Path:
        return self.root / "openvpn-status.log"


def unprivileged_identity() -> tuple[str | None, str | None]:
    """(user, group) to drop privileges to that exist on this system: ``nobody`` and
    ``nogroup`` on Debian/Ubuntu, ``nobody`` elsewhere; None for one that does not exist."""
    try:
        pwd.getpwnam(UNPRIVILEGED_USER)
        user: str | None = UNPRIVILEGED_USER
    except KeyError:
        user = None
    group: str | None = None
    for name in GROUP_CANDIDATES:
        try:
            grp.getgrnam(name)
        except KeyError:
            continue
        group = name
        break
    return user, group


def render_server_config(plan: ServerPlan) -> str:
    store = PkiStore(plan.pki)
    lines = [
        "# OpenVPN 2.6 / trivpn server, written by 'trivpn init-server'.",
        f"# Clients connect to {plan.public_address}:{plan.port}/{plan.proto}; make profiles with",
        f"#   trivpn profile NAME --server-config {plan.config} --remote {plan.public_address}",
        f"port {plan.port}",
        f"proto {plan.proto}",
        "dev tun",
        "topology subnet",
        f"server {plan.network.network_address} {plan.network.netmask}",
        f"ca {store.ca_cert_path}",
        f"cert {store.cert_path(SERVER_NAME)}",
        f"key {store.key_path(SERVER_NAME)}",
        "dh none",
        f"tls-crypt {plan.tls_crypt_key}",
        "remote-cert-tls client",
        "data-ciphers AES-256-GCM:CHACHA20-POLY1305",
        "keepalive 10 120",
    ]
    if plan.user is not None:
        lines.append(f"user {plan.user}")
    if plan.group is not None:
        lines.append(f"group {plan.group}")
    lines += ["persist-key", "persist-tun", f"status {plan.status_file}"]
    if plan.proto == "udp":  # OpenVPN refuses explicit-exit-notify on a TCP server
        lines.append("explicit-exit-notify 1")
    lines.append("verb 3")
    return "\n".join(lines) + "\n"


def init_server(plan: ServerPlan) -> None:
    """Create the PKI and write the config; PkiError or OSError if anything is in the way."""
    if plan.config.exists():
        raise PkiError("already exists; refusing to overwrite", str(plan.config))
    plan.root.mkdir(parents=True, exist_ok=True)
    store = PkiStore(plan.pki)
    ca = create_ca()
    store.save_ca(ca)
    store.save_issued(SERVER_NAME, issue_cert(ca, "server", SERVER_NAME))
    write_static_key(plan.tls_crypt_key, generate_static_key())
    with plan.config.open("x", encoding="utf-8") as out:
        out.write(render_server_config(plan))


def next_steps(plan: ServerPlan) -> list[str]:
    port = "" if plan.port == DEFAULT_PORT else f" --port {plan.port}"
    return [
        "next steps:",
        "  1. make a client profile (issues the client certificate in "
        f"{plan.pki}):",
        f"       trivpn profile alice --server-config {plan.config} "
        f"--remote {plan.public_address}{port}",
        "  2. start the server (as root):",
        f"       trivpn run {plan.config}",
        f"  3. open {plan.proto.upper()} port {plan.port} in the firewall, and to route "
        "client traffic",
        "     onward enable net.ipv4.ip_forward and NAT for "
        f"{plan.network}",
        "  4. run it as a service (systemd, with the trivpn@.service unit installed):",
        f"       systemctl enable --now trivpn@server   "
        f"(config {plan.config})",
        f"  check it any time with: trivpn doctor {plan.config}",
    ]


def _network(text: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.IPv4Network(text, strict=True)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an IPv4 network like 10.8.0.0/24: {exc}") from None
    if net.prefixlen > MAX_PREFIX:
        raise argparse.ArgumentTypeError(f"{net} is too small: use /{MAX_PREFIX} or larger")
    return net


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "init-server", help="write a ready-to-run server config and its PKI into DIR",
        description="Create DIR/server.conf (tls-crypt, AES-256-GCM/CHACHA20-POLY1305, "
                    "topology subnet, remote-cert-tls, keepalive, user/group, persist-*) and "
                    "DIR/pki (CA, server certificate, tls-crypt key), then print the next "
                    "steps.")
    parser.add_argument("dir", type=Path, metavar="DIR")
    parser.add_argument("--public-address", required=True, metavar="HOST",
                        help="the host name or address clients will connect to")
    parser.add_argument("--port", type=port, default=DEFAULT_PORT,
                        help=f"listening port (default {DEFAULT_PORT})")
    parser.add_argument("--proto", choices=("udp", "tcp"), default="udp",
                        help="transport (default udp)")
    parser.add_argument("--network", type=_network, default=_network(DEFAULT_NETWORK),
                        metavar="CIDR",
                        help=f"the VPN's address pool (default {DEFAULT_NETWORK})")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    host: str = args.public_address
    if not host or any(c.isspace() for c in host):
        print(f"trivpn init-server: invalid --public-address {host!r}", file=sys.stderr)
        return 2
    user, group = unprivileged_identity()
    plan = ServerPlan(root=args.dir.absolute(), public_address=host, port=args.port,
                      proto=args.proto, network=args.network, user=user, group=group)
    try:
        init_server(plan)
    except PkiError as exc:
        print(f"trivpn init-server: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"trivpn init-server: cannot write {exc.filename or plan.root}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {plan.config}")
    print(f"wrote the PKI in {plan.pki}: CA (private/ca.key, keep it secret), server "
          f"certificate '{SERVER_NAME}', tls-crypt key {plan.tls_crypt_key.name}")
    if user is None or group is None:
        print("note: no unprivileged user/group found on this system; the server keeps "
              "running as root (add 'user'/'group' lines to drop privileges)")
    for line in next_steps(plan):
        print(line)
    return 0
