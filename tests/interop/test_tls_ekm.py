"""TLS-EKM against the real openvpn 2.6 in both roles: the data-channel keys come from the TLS
keying-material exporter (openvpn says so in its protocol options) and traffic passes, which it
could not if the two ends derived different keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop import clientkit
from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import SERVER_VPN_IP, client_lines, ping, server_lines
from tests.interop.trivpnproc import start_trivpn
from tests.netns import NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]


def test_trivpn_client_and_openvpn_server_derive_data_keys_with_tls_ekm(
        lab: NetnsLab, tmp_path: Path) -> None:
    s = clientkit.make_setup(lab, tmp_path)
    server = clientkit.start_server(s, clientkit.server_lines())
    client = clientkit.start_client(s, clientkit.client_lines())
    clientkit.wait_up(client)
    ready = client.wait_event("key_method_complete", timeout=5)
    assert ready is not None and ready["key_derivation"] == "tls-ekm", client.text()[-2000:]
    clientkit.ping_ok(s.client_ns, clientkit.VPN_SERVER)
    # openvpn writes the line just after its PUSH_REPLY: wait for it rather than race it
    assert server.wait_for("Protocol options: protocol-flags cc-exit tls-ekm", timeout=5), \
        server.text()[-3000:]


def test_openvpn_client_and_trivpn_server_derive_data_keys_with_tls_ekm(
        lab: NetnsLab, tmp_path: Path) -> None:
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, "198.18.10.1/24", "198.18.10.2/24")
    write_pki(tmp_path)
    server = start_trivpn(srv, tmp_path, "server", server_lines(link_ip="0.0.0.0"))
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, tmp_path, "client", client_lines(
        server_ip="198.18.10.1", extra=["verb 4"]))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        server.text()[-3000:]
    assert "Protocol options: protocol-flags cc-exit tls-ekm" in client.text(), \
        client.text()[-3000:]
    ready = server.wait_event("key_method_complete", timeout=5)
    assert ready is not None and ready["key_derivation"] == "tls-ekm"
    assert ping(cli, SERVER_VPN_IP), server.text()[-3000:]
