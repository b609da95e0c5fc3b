"""Helpers for the ``trivpn run`` server tests: configs, client PKI, ping and bulk transfer.

The trivpn server always runs as a real subprocess (:func:`tests.interop.trivpnproc.start_trivpn`)
in its own namespace; clients are real ``openvpn`` 2.6 processes or ``trivpn run`` clients in
theirs. Every address is inside 198.18.0.0/15: links on 198.18.0.0/16, tunnels 198.18.8.0/24.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.interop.openvpn import OpenVpnProcess, PkiFiles, start_openvpn, wrap_lines
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import Netns
from trivpn.pki.certs import certificate_pem, issue_cert
from trivpn.pki.keys import private_key_pem

TUNNEL_NET = "198.18.8.0"
TUNNEL_MASK = "255.255.255.0"
SERVER_VPN_IP = "198.18.8.1"
BULK = Path(__file__).with_name("bulk_transfer.py")


def server_lines(*, link_ip: str, proto: str = "udp", topology: str = "subnet",
                 cipher: str | None = None, wrap: str = "none", dev: str = "tun",
                 extra: list[str] | None = None) -> list[str]:
    """A trivpn/openvpn server config using the PKI written by ``write_pki``."""
    lines = [
        f"dev {dev}", f"proto {proto}", f"local {link_ip}", "port 1194",
        "ca ca.crt", "cert server.crt", "key server.key", "dh none",
        f"server {TUNNEL_NET} {TUNNEL_MASK}", "keepalive 2 20",
        "remote-cert-tls client", "verb 3", *wrap_lines(wrap, "server"),
    ]
    if dev == "tun":
        lines.append(f"topology {topology}")
    if cipher is not None:
        lines.append(f"data-ciphers {cipher}")
    return lines + (extra or [])


def client_lines(*, server_ip: str, proto: str = "udp", wrap: str = "none", dev: str = "tun",
                 cert: str = "client", lport: int | None = None,
                 extra: list[str] | None = None) -> list[str]:
    """A client config (openvpn and trivpn read the same syntax); ``lport`` binds a fixed
    local port instead of ``nobind``."""
    client_proto = "tcp-client" if proto.startswith("tcp") else "udp"
    bind = "nobind" if lport is None else f"lport {lport}"
    return [
        "client", f"dev {dev}", f"proto {client_proto}", f"remote {server_ip} 1194", bind,
        "ca ca.crt", f"cert {cert}.crt", f"key {cert}.key", "remote-cert-tls server",
        "verb 3", "connect-retry 1", *wrap_lines(wrap, "client"), *(extra or []),
    ]


def start_side_server(ns: Netns, workdir: Path, who: str,
                      lines: list[str]) -> TrivpnProcess | OpenVpnProcess:
    """The server of a side-by-side test, named ``server-<who>`` and up: the real openvpn
    when ``who`` is ``"theirs"``, trivpn otherwise."""
    if who == "theirs":
        theirs = start_openvpn(ns, workdir, f"server-{who}", lines)
        assert theirs.wait_for("Initialization Sequence Completed", 20), theirs.text()
        return theirs
    ours = start_trivpn(ns, workdir, f"server-{who}", lines)
    assert ours.wait_event("link_open", timeout=10), ours.text()
    return ours


def tap_name(ns: Netns) -> str:
    """The name of the (first) tap device in ``ns``: a tap server's device."""
    for line in ns.run(["ip", "-o", "link", "show"]).stdout.splitlines():
        name = line.split(":")[1].strip()
        if name.startswith("tap"):
            return name
    raise AssertionError(f"no tap device in {ns.name}")


def issue_client(pki: PkiFiles, name: str) -> str:
    """Write ``name``.crt/.key signed by the test CA (common name ``name``); returns ``name``."""
    cred = issue_cert(pki.ca, "client", name)
    (pki.dir / f"{name}.crt").write_bytes(certificate_pem(cred.cert))
    key_path = pki.dir / f"{name}.key"
    key_path.write_bytes(private_key_pem(cred.key))
    key_path.chmod(0o600)
    return name


def ping(ns: Netns, dst: str, *, count: int = 2, timeout: float = 10.0) -> bool:
    """True once ``count`` echo replies came back (retrying until ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = ns.run(["ping", "-c", str(count), "-i", "0.2", "-W", "1", dst], check=False,
                      timeout=10)
        if done.returncode == 0:
            return True
        time.sleep(0.2)
    return False


def transfer(receiver: Netns, receiver_ip: str, sender: Netns, nbytes: int, *,
             port: int = 5201, timeout: float = 60.0) -> tuple[str, str]:
    """Send ``nbytes`` over TCP from ``sender`` to ``receiver_ip`` in ``receiver``; returns
    the (sent, received) ``"sha256 count"`` lines."""
    recv = receiver.spawn([sys.executable, str(BULK), "recv", receiver_ip, str(port)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert recv.stdout is not None
    assert recv.stdout.readline().strip() == b"listening"
    sent = sender.run([sys.executable, str(BULK), "send", receiver_ip, str(port), str(nbytes)],
                      timeout=timeout)
    out, _ = recv.communicate(timeout=timeout)
    return sent.stdout.strip(), out.decode().strip()
