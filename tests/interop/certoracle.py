"""Ask the real ``openvpn`` and trivpn's core the same question: is this peer certificate
accepted under these directives?

Everything runs on the loopback of one lab namespace. The certificate under test is presented by
a real openvpn in point-to-point TLS mode (``dev null``). The verifying side is, once, a real
openvpn with the directives and, once, trivpn's :class:`~trivpn.protocol.session.Session` built
from a trivpn config holding the same directives (through ``runtime.setup.session_config``, as
``trivpn run`` builds it). Each verdict is "accepted" or "refused".
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.interop.corepeer import CorePeer, udp_socket_in
from tests.interop.openvpn import OpenVpnProcess, start_openvpn
from tests.netns import Netns
from trivpn.config import load_config
from trivpn.pki.certs import Credential, certificate_pem
from trivpn.pki.keys import private_key_pem
from trivpn.protocol import events as ev
from trivpn.runtime.setup import session_config

_REFUSED = re.compile(r"VERIFY (\S+ )?ERROR|TLS_ERROR|TLS Error")


@dataclass(frozen=True)
class Case:
    """``peer`` (a credential name written by :func:`write_credential`) is presented to a
    verifier of ``role`` configured with ``directives``."""

    id: str
    role: str  # the verifying side: "client" or "server"
    peer: str
    directives: tuple[str, ...]
    peer_directives: tuple[str, ...] = ()


def write_credential(directory: Path, name: str, cred: Credential) -> None:
    (directory / f"{name}.crt").write_bytes(certificate_pem(cred.cert))
    key = directory / f"{name}.key"
    key.write_bytes(private_key_pem(cred.key))
    key.chmod(0o600)


def _p2p_lines(role: str, port: int, cred: str, extra: Sequence[str]) -> list[str]:
    lines = ["dev null", "proto udp", "verb 4", "ca ca.crt", f"cert {cred}.crt",
             f"key {cred}.key", "connect-retry 1"]
    if role == "server":
        lines += ["tls-server", "dh none", "local 127.0.0.1", f"lport {port}"]
    else:
        lines += ["tls-client", "nobind", f"remote 127.0.0.1 {port}"]
    return lines + list(extra)


def openvpn_verdict(log: OpenVpnProcess, timeout: float = 12.0) -> str:
    """What the verifying openvpn decided, from its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.text()
        if _REFUSED.search(text):
            return "refused"
        if "Initialization Sequence Completed" in text:
            return "accepted"
        time.sleep(0.05)
    return "timeout"


def trivpn_verdict(peer: CorePeer, timeout: float = 12.0) -> str:
    def decided() -> bool:
        return peer.saw(ev.TlsHandshakeComplete) or peer.saw(ev.HandshakeFailed)

    if not peer.run_until(decided, timeout):
        return "timeout"
    return "accepted" if peer.saw(ev.TlsHandshakeComplete) else "refused"


def _trivpn_config(workdir: Path, case: Case, index: int, port: int, verifier_cred: str) -> Path:
    if case.role == "client":
        lines = ["client", "dev tun", "proto udp", f"remote 127.0.0.1 {port}"]
    else:
        lines = ["port 1194", "proto udp", "dev tun", "dh none",
                 "server 198.18.8.0 255.255.255.0"]
    lines += ["ca ca.crt", f"cert {verifier_cred}.crt", f"key {verifier_cred}.key",
              *case.directives]
    conf = workdir / f"trivpn{index}.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def run_cases(ns: Netns, workdir: Path, cases: Sequence[Case], *, server_cred: str = "server",
              client_cred: str = "client", base_port: int = 21000,
              handshakes: dict[str, str] | None = None,
              linger: float = 0.0) -> dict[str, tuple[str, str]]:
    """{case id: (openvpn's verdict, trivpn's verdict)}; ``server_cred``/``client_cred`` are
    the verifier's own credentials (written beforehand with ``ca.crt``). ``handshakes``, when
    given, receives what trivpn's TLS handshakes negotiated ("TLSv1.3, cipher TLS_...");
    ``linger`` keeps trivpn's side running that many seconds after its verdict, so that the
    openvpn peer finishes its side of the handshake (and logs it)."""
    openvpn_logs: dict[str, OpenVpnProcess] = {}
    for i, case in enumerate(cases):
        a, b = base_port + 2 * i, base_port + 2 * i + 1
        peer_role = "server" if case.role == "client" else "client"
        verifier_cred = client_cred if case.role == "client" else server_cred
        # openvpn verifier: its peer presents the certificate under test.
        start_openvpn(ns, workdir, f"peer{i}a",
                      _p2p_lines(peer_role, a, case.peer, case.peer_directives))
        openvpn_logs[case.id] = start_openvpn(
            ns, workdir, f"verifier{i}", _p2p_lines(case.role, a, verifier_cred,
                                                    case.directives))
        if case.role == "client":  # the trivpn client's peer: an openvpn server on port b
            start_openvpn(ns, workdir, f"peer{i}b",
                          _p2p_lines("server", b, case.peer, case.peer_directives))
    time.sleep(0.5)
    results: dict[str, tuple[str, str]] = {}
    for i, case in enumerate(cases):
        b = base_port + 2 * i + 1
        verifier_cred = client_cred if case.role == "client" else server_cred
        config = session_config(load_config(_trivpn_config(workdir, case, i, b, verifier_cred)),
                                unix_time_offset=time.time() - time.monotonic())
        if case.role == "client":
            core = CorePeer(config, udp_socket_in(ns.name, ("127.0.0.1", 0)),
                            remote=("127.0.0.1", b))
            core.start_client()
        else:
            core = CorePeer(config, udp_socket_in(ns.name, ("127.0.0.1", b)))
            start_openvpn(ns, workdir, f"peer{i}b",
                          _p2p_lines("client", b, case.peer, case.peer_directives))
        try:
            trivpn = trivpn_verdict(core)
            if linger:
                core.run_until(lambda: False, linger)
        finally:
            core.sock.close()
        if handshakes is not None:
            handshakes.update((case.id, e.description) for e in core.events
                              if isinstance(e, ev.TlsHandshakeComplete))
        results[case.id] = (openvpn_verdict(openvpn_logs[case.id]), trivpn)
    return results
