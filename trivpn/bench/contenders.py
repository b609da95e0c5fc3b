"""The two contenders — trivpn and OpenVPN 2.6 — as server+client pairs with equal configs.

Both read the same config text (trivpn runs OpenVPN configs unchanged): the same cipher,
transport, ``tls-crypt`` key, ``topology subnet``, ``verb 1``, a TUN device named ``tvb0`` on
each side. The server namespace holds 198.18.0.1, the client 198.18.0.2; the tunnel is
198.18.8.0/24 (the server's tunnel address 198.18.8.1) unless a larger pool is asked for.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from trivpn.bench.lab import Lab, LabError
from trivpn.bench.measure import (
    parse_proc_stat_cpu,
    parse_ss_segs_out,
    parse_status_rss_kib,
    parse_tcp_out_segs,
)
from trivpn.pki.certs import certificate_pem, create_ca, issue_cert
from trivpn.pki.keys import private_key_pem
from trivpn.pki.statickeys import generate_static_key
from trivpn.protocol.statickey import format_static_key

CONTENDERS = ("trivpn", "openvpn")
CHECKOUT_PREFIX = "trivpn@"
"""``trivpn@DIR``: trivpn as another checkout in DIR has it (e.g. the commit before a change),
a third contender beside these two, so before and after are measured in one interleaved run."""
SERVER_LINK_IP = "198.18.0.1"
CLIENT_LINK_IP = "198.18.0.2"
SERVER_TUN_IP = "198.18.8.1"
TUN_NAME = "tvb0"
PORT = 1194
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def write_pki(directory: Path) -> None:
    """CA, server and client certificates and a tls-crypt key as files in ``directory``."""
    ca = create_ca("bench CA")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(certificate_pem(ca.cert))
    for name, kind in (("server", "server"), ("client", "client")):
        cred = issue_cert(ca, "server" if kind == "server" else "client", name)
        (directory / f"{name}.crt").write_bytes(certificate_pem(cred.cert))
        key = directory / f"{name}.key"
        key.write_bytes(private_key_pem(cred.key))
        key.chmod(0o600)
    tc = directory / "tc.key"
    tc.write_text(format_static_key(generate_static_key()))
    tc.chmod(0o600)


@dataclass(frozen=True, slots=True)
class TunnelSpec:
    transport: str = "udp"  # udp | tcp
    cipher: str = "AES-256-GCM"
    network: str = "198.18.8.0"
    netmask: str = "255.255.255.0"
    keepalive: tuple[int, int] = (10, 60)
    server_extra: tuple[str, ...] = ()


def server_config(spec: TunnelSpec) -> list[str]:
    return [
        f"dev {TUN_NAME}", "dev-type tun",
        "proto " + ("udp" if spec.transport == "udp" else "tcp-server"),
        f"local {SERVER_LINK_IP}", f"port {PORT}",
        "ca ca.crt", "cert server.crt", "key server.key", "dh none",
        f"server {spec.network} {spec.netmask}", "topology subnet",
        f"keepalive {spec.keepalive[0]} {spec.keepalive[1]}",
        f"data-ciphers {spec.cipher}", "tls-crypt tc.key", "remote-cert-tls client",
        "verb 1", *spec.server_extra,
    ]


def client_config(spec: TunnelSpec) -> list[str]:
    return [
        "client", f"dev {TUN_NAME}", "dev-type tun",
        "proto " + ("udp" if spec.transport == "udp" else "tcp-client"),
        f"remote {SERVER_LINK_IP} {PORT}", "nobind",
        "ca ca.crt", "cert client.crt", "key client.key", "remote-cert-tls server",
        f"data-ciphers {spec.cipher}", "tls-crypt tc.key", "verb 1", "connect-retry 1",
    ]


def checkout_of(contender: str) -> Path | None:
    """The checkout a ``trivpn@DIR`` contender runs from; None for the two plain contenders.
    Raises ValueError for a name that is neither."""
    if contender in CONTENDERS:
        return None
    if contender.startswith(CHECKOUT_PREFIX):
        root = Path(contender.removeprefix(CHECKOUT_PREFIX)).resolve()
        if (root / "trivpn" / "__init__.py").is_file():
            return root
        raise ValueError(f"{contender!r}: {root} is not a trivpn checkout (no trivpn/__init__.py)")
    raise ValueError(f"unknown contender {contender!r}")


def file_label(contender: str) -> str:
    """``contender`` as a file-name part (a ``trivpn@DIR`` path has slashes)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in contender)


def command(contender: str, workdir: Path, name: str) -> list[str]:
    conf = workdir / f"{file_label(contender)}-{name}.conf"
    log = workdir / f"{file_label(contender)}-{name}.log"
    trivpn = [sys.executable, "-m", "trivpn", "run", str(conf), "--log-format", "json",
              "--log-file", str(log)]
    if contender == "trivpn":
        return trivpn
    checkout = checkout_of(contender)
    if checkout is not None:  # env execs in place: the PID stays the VPN process's
        # -P: without it 'python -m' puts the working directory first on sys.path, and a bench
        # started from a trivpn checkout would run that checkout's code under this name
        return ["env", f"PYTHONPATH={checkout}", sys.executable, "-P", *trivpn[1:]]
    if contender == "openvpn":
        return ["openvpn", "--cd", str(workdir), "--config", conf.name, "--log", str(log)]
    raise ValueError(f"unknown contender {contender!r}")


@dataclass
class Endpoint:
    """One running VPN process (server or client) of a contender."""

    contender: str
    role: str
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return parse_proc_stat_cpu(Path(f"/proc/{self.pid}/stat").read_text(), CLOCK_TICKS)

    def rss_kib(self) -> int:
        return parse_status_rss_kib(Path(f"/proc/{self.pid}/status").read_text())

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def start(lab: Lab, ns: str, contender: str, role: str, *, workdir: Path,
          lines: list[str]) -> Endpoint:
    """Write the config for ``role`` (``server``/``client``) and start it in ``ns``."""
    (workdir / f"{file_label(contender)}-{role}.conf").write_text("\n".join(lines) + "\n")
    log = workdir / f"{file_label(contender)}-{role}.log"
    log.unlink(missing_ok=True)
    proc = lab.spawn(ns, command(contender, workdir, role))
    return Endpoint(contender, role, proc, log)


def wait_listening(lab: Lab, ns: str, server: Endpoint, transport: str,
                   timeout: float = 20.0) -> None:
    """Until the server's link socket is bound (``ss`` shows port 1194)."""
    flag = "-uln" if transport == "udp" else "-tln"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise LabError(f"{server.contender} server exited: {server.log_tail()}")
        done = lab.run(ns, ["ss", "-H", flag, "sport", "=", f":{PORT}"], timeout=5)
        if done.stdout.strip():
            return
        time.sleep(0.05)
    raise LabError(f"{server.contender} server did not listen: {server.log_tail()}")


def wait_tunnel(lab: Lab, client_ns: str, server: Endpoint, client: Endpoint,
                timeout: float = 30.0) -> None:
    """Until a ping from the client namespace crosses the tunnel to the server."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ep in (server, client):
            if ep.proc.poll() is not None:
                raise LabError(f"{ep.contender} {ep.role} exited: {ep.log_tail()}")
        done = lab.run(client_ns, ["ping", "-c", "1", "-W", "1", SERVER_TUN_IP], timeout=5)
        if done.returncode == 0:
            return
        time.sleep(0.1)
    raise LabError(f"{client.contender} tunnel did not come up:\nclient: {client.log_tail()}"
                   f"\nserver: {server.log_tail()}")


def inner_segments(lab: Lab, ns: str, transport: str) -> int:
    """TCP segments the namespace has sent, less those of the VPN's own TCP connection: with
    iperf3 on both ends, the sum over both namespaces is the packets that crossed the tunnel
    (TUN device counters would count coalesced super-packets once)."""
    segs = parse_tcp_out_segs(lab.run(ns, ["cat", "/proc/net/snmp"], timeout=5).stdout)
    if transport == "tcp":
        done = lab.run(ns, ["ss", "-H", "-tin", "state", "established",
                            f"( sport = :{PORT} or dport = :{PORT} )"], timeout=5)
        segs -= parse_ss_segs_out(done.stdout)
    return segs


@dataclass
class Pair:
    server: Endpoint
    client: Endpoint
    endpoints: list[Endpoint] = field(default_factory=list)


def start_pair(lab: Lab, server_ns: str, client_ns: str, contender: str, *,
               workdir: Path, spec: TunnelSpec) -> Pair:
    """Server, then client; returns once a ping crosses the tunnel."""
    server = start(lab, server_ns, contender, "server", workdir=workdir,
                   lines=server_config(spec))
    wait_listening(lab, server_ns, server, spec.transport)
    client = start(lab, client_ns, contender, "client", workdir=workdir,
                   lines=client_config(spec))
    wait_tunnel(lab, client_ns, server, client)
    return Pair(server, client, [server, client])


def stop_pair(lab: Lab, pair: Pair) -> None:
    lab.stop(pair.client.proc)
    lab.stop(pair.server.proc)
