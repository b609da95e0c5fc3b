"""pkcs12 against the real openvpn 2.6: the same PKCS#12 bundle (certificate, key and CA, no
password) is accepted by an openvpn client and a trivpn client, as a file and inline."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import (
    NoEncryption,
    load_pem_private_key,
    pkcs12,
)

from tests.interop import clientkit
from tests.interop.openvpn import start_openvpn
from tests.netns import NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]


def write_bundle(directory: Path) -> bytes:
    """client.p12 from the test PKI's client certificate, key and CA; returns its bytes."""
    key = load_pem_private_key((directory / "client.key").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((directory / "client.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((directory / "ca.crt").read_bytes())
    data = pkcs12.serialize_key_and_certificates(b"client1", key, cert, [ca],  # type: ignore[arg-type]
                                                 NoEncryption())
    (directory / "client.p12").write_bytes(data)
    return data


def _client_lines(pkcs12_lines: list[str]) -> list[str]:
    lines = clientkit.client_lines()
    drop = ("ca ", "cert ", "key ")
    return [line for line in lines if not line.startswith(drop)] + pkcs12_lines


@pytest.mark.directive("pkcs12")
@pytest.mark.parametrize("client", ["trivpn-file", "trivpn-inline", "openvpn-file"])
def test_the_same_pkcs12_bundle_connects_openvpn_and_trivpn_clients(
        lab: NetnsLab, tmp_path: Path, client: str) -> None:
    s = clientkit.make_setup(lab, tmp_path)
    data = write_bundle(tmp_path)
    clientkit.start_server(s, clientkit.server_lines())
    if client == "trivpn-inline":
        body = base64.b64encode(data).decode()
        lines = _client_lines(["<pkcs12>", *[body[i:i + 64] for i in range(0, len(body), 64)],
                               "</pkcs12>"])
    else:
        lines = _client_lines(["pkcs12 client.p12"])
    if client.startswith("openvpn"):
        proc = start_openvpn(s.client_ns, tmp_path, "client", lines)
        assert proc.wait_for("Initialization Sequence Completed", 20), proc.text()[-3000:]
    else:
        trivpn = clientkit.start_client(s, lines)
        clientkit.wait_up(trivpn)
    clientkit.ping_ok(s.client_ns, clientkit.VPN_SERVER)
