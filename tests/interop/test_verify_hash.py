"""verify-hash against the real openvpn 2.6: the fingerprint of the CA that signed the server's
certificate (SHA1 by default, or SHA256) — what trivpn accepts and refuses, openvpn does too."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.interop import clientkit
from tests.interop.openvpn import start_openvpn
from tests.netns import NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]


def _ca_fingerprint(directory: Path, algo: str, *, wrong: bool) -> str:
    der = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes()).public_bytes(
        Encoding.DER)
    if wrong:  # the server's own certificate: depth 0, not the CA at depth 1
        der = x509.load_pem_x509_certificate(
            (directory / "server.crt").read_bytes()).public_bytes(Encoding.DER)
    return ":".join(f"{b:02X}" for b in hashlib.new(algo, der).digest())


@pytest.mark.directive("verify-hash")
@pytest.mark.parametrize("client", ["trivpn", "openvpn"])
@pytest.mark.parametrize(("algo", "wrong"), [("sha1", False), ("sha256", False),
                                              ("sha1", True)])
def test_verify_hash_pins_the_ca_that_signed_the_server_as_openvpn_does(
        lab: NetnsLab, tmp_path: Path, client: str, algo: str, wrong: bool) -> None:
    s = clientkit.make_setup(lab, tmp_path)
    clientkit.start_server(s, clientkit.server_lines())
    line = f"verify-hash {_ca_fingerprint(tmp_path, algo, wrong=wrong)}"
    lines = clientkit.client_lines(extra=(line + (" SHA256" if algo == "sha256" else ""),))
    if client == "openvpn":
        proc = start_openvpn(s.client_ns, tmp_path, "client", lines)
        if wrong:
            assert proc.wait_for("certificate hash verification failed", 15), proc.text()
            assert "Initialization Sequence Completed" not in proc.text()
        else:
            assert proc.wait_for("Initialization Sequence Completed", 20), proc.text()
        return
    trivpn = clientkit.start_client(s, lines)
    if wrong:
        rejected = trivpn.wait_event("peer_cert_rejected", timeout=15)
        assert rejected is not None and rejected["check"] == "verify_hash", trivpn.text()
        assert trivpn.count("tun_configured") == 0
    else:
        clientkit.wait_up(trivpn)
