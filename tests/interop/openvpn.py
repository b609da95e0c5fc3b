"""Run a real ``openvpn`` 2.6 process inside a test namespace, with a throwaway PKI.

Used by every interop test: writes the CA, certificates and static key into a temp dir, renders
configs, starts openvpn (tracked by the namespace lab, killed by PID at teardown) and waits for
lines in its log.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.netns import Netns, NetnsLab
from trivpn.pki.certs import Credential, certificate_pem, create_ca, issue_cert
from trivpn.pki.keys import private_key_pem
from trivpn.protocol.statickey import StaticKey, format_static_key

STATIC_KEY = StaticKey(bytes((i * 7 + 3) % 256 for i in range(256)))


@dataclass(frozen=True)
class PkiFiles:
    dir: Path
    ca: Credential
    server: Credential
    client: Credential

    @property
    def ca_pem(self) -> str:
        return certificate_pem(self.ca.cert).decode()

    def pem(self, which: str) -> tuple[str, str]:
        cred: Credential = getattr(self, which)
        return certificate_pem(cred.cert).decode(), private_key_pem(cred.key).decode()


def write_pki(directory: Path) -> PkiFiles:
    """CA, ``server`` and ``client1`` certificates and a static key, as files in ``directory``."""
    ca = create_ca("interop CA")
    server = issue_cert(ca, "server", "server")
    client = issue_cert(ca, "client", "client1")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(certificate_pem(ca.cert))
    for name, cred in (("server", server), ("client", client)):
        (directory / f"{name}.crt").write_bytes(certificate_pem(cred.cert))
        key_path = directory / f"{name}.key"
        key_path.write_bytes(private_key_pem(cred.key))
        key_path.chmod(0o600)
    static = directory / "static.key"
    static.write_text(format_static_key(STATIC_KEY))
    static.chmod(0o600)
    return PkiFiles(directory, ca, server, client)


def wrap_lines(wrap: str, role: str) -> list[str]:
    if wrap == "tls-auth":
        return [f"tls-auth static.key {0 if role == 'server' else 1}"]
    if wrap == "tls-crypt":
        return ["tls-crypt static.key"]
    return []


@dataclass
class OpenVpnProcess:
    """A running openvpn and its log file."""

    log: Path
    pid: int

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, needle: str, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return True
            time.sleep(0.05)
        return False

    def wait_for_any(self, *needles: str, timeout: float = 15.0) -> str | None:
        """The first of ``needles`` to appear in the log (checked in the order given), or None
        once ``timeout`` has passed: for a process that may end in one of several ways."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            for needle in needles:
                if needle in text:
                    return needle
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)


def start_openvpn(ns: Netns, workdir: Path, name: str, lines: list[str]) -> OpenVpnProcess:
    """Write ``name``.conf with ``lines`` and start openvpn on it inside ``ns``."""
    conf = workdir / f"{name}.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = workdir / f"{name}.log"
    proc = ns.spawn(["openvpn", "--cd", str(workdir), "--config", conf.name,
                     "--log", str(log)])
    return OpenVpnProcess(log, proc.pid)


def openvpn_output(lab: NetnsLab, workdir: Path, args: Sequence[str], *, seconds: int = 2,
                   ns: Netns | None = None) -> str:
    """openvpn's output (stdout, then stderr) when run with ``args`` from ``workdir`` for at
    most ``seconds``: in ``ns``, or else in a fresh namespace of ``lab`` (loopback only, so
    nothing it names can be reached). What claims tests compare trivpn's words with."""
    where = ns if ns is not None else lab.add("ovpn")
    done = where.run(["timeout", str(seconds), "openvpn", "--cd", str(workdir), *args],
                     check=False, timeout=10)
    return done.stdout + done.stderr


def as_config(args: Sequence[str]) -> str:
    """Command-line options as config-file lines: ``--a x --b`` → ``a x\\nb\\n``."""
    lines: list[str] = []
    for arg in args:
        if arg.startswith("--"):
            lines.append(arg[2:])
        else:
            lines[-1] += f" {arg}"
    return "\n".join(lines) + "\n"
