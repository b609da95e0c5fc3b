"""Builders for the local-check tests: a PKI and client/server configs written into tmp_path,
and a way to run one check against them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trivpn.config import Options, load_config
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext
from trivpn.pki.certs import Credential, certificate_pem, create_ca, issue_cert
from trivpn.pki.keys import private_key_pem
from trivpn.protocol.statickey import StaticKey, format_static_key

NOW = datetime.now(UTC)
KEY = StaticKey(bytes((i * 5 + 1) % 256 for i in range(256)))

CLIENT = """client
dev tun
proto udp
remote 198.18.0.2 1194
nobind
ca ca.crt
cert client.crt
key client.key
remote-cert-tls server
persist-key
persist-tun
"""

SERVER = """port 1194
proto udp
dev tun
ca ca.crt
cert server.crt
key server.key
dh none
server 198.19.0.0 255.255.255.0
topology subnet
keepalive 10 60
persist-key
persist-tun
"""


@dataclass(frozen=True)
class Pki:
    dir: Path
    ca: Credential
    server: Credential
    client: Credential


def write_cred(directory: Path, name: str, cred: Credential) -> None:
    (directory / f"{name}.crt").write_bytes(certificate_pem(cred.cert))
    key = directory / f"{name}.key"
    key.write_bytes(private_key_pem(cred.key))
    key.chmod(0o600)


def write_pki(directory: Path) -> Pki:
    ca = create_ca("doctor CA")
    server = issue_cert(ca, "server", "server")
    client = issue_cert(ca, "client", "client1")
    (directory / "ca.crt").write_bytes(certificate_pem(ca.cert))
    write_cred(directory, "server", server)
    write_cred(directory, "client", client)
    ta = directory / "ta.key"
    ta.write_text(format_static_key(KEY))
    ta.chmod(0o600)
    return Pki(directory, ca, server, client)


def write_config(directory: Path, text: str, name: str = "test.conf") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def context(path: Path, *, options: Options | None = None, netns: str | None = None,
            results: Mapping[str, CheckResult] | None = None,
            timeout: float = 5.0) -> DoctorContext:
    """A context for ``path`` (parsed unless ``options`` is given; None if it does not parse)."""
    if options is None:
        try:
            options = load_config(path, read_files=False)
        except Exception:
            options = None
    role = options.role if options is not None else "client"
    return DoctorContext(path, options, role, timeout, results or {}, netns)


async def run(check: Check, ctx: DoctorContext) -> CheckResult:
    return await check.run(ctx)


def by_id(checks: tuple[Check, ...], cid: str) -> Check:
    return next(c for c in checks if c.id == cid)


def expired_dates() -> tuple[datetime, datetime]:
    return NOW - timedelta(days=400), NOW - timedelta(days=2)
