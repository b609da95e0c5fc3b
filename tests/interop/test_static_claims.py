"""What trivpn says OpenVPN 2.6 does in static-key mode (trivpn/config/static.py,
trivpn/config/parser.py, docs/connections.md), checked against the real binary."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.openvpn import openvpn_output
from tests.netns import NetnsLab

pytestmark = pytest.mark.integration

STATIC = ["--dev", "tun", "--proto", "udp", "--secret", "static.key", "0", "--ifconfig",
          "198.18.9.1", "198.18.9.2", "--verb", "4"]


@pytest.mark.directive("secret")
def test_openvpn_static_key_default_cipher_bf_cbc_is_not_supported(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    out = openvpn_output(lab, workdir, STATIC)
    assert "DEPRECATED OPTION: The option --secret is deprecated." in out, out[-2000:]
    assert "Cipher BF-CBC not supported" in out, out[-2000:]


@pytest.mark.directive("secret", "cipher")
def test_openvpn_static_key_mode_refuses_aead_ciphers(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    out = openvpn_output(lab, workdir, [*STATIC, "--cipher", "AES-256-GCM"])
    assert "Cipher 'AES-256-GCM' mode not supported" in out, out[-2000:]


@pytest.mark.directive("secret", "cipher")
def test_openvpn_static_key_mode_runs_with_aes_cbc(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    out = openvpn_output(lab, workdir, [*STATIC, "--cipher", "AES-256-CBC"])
    assert "Outgoing Static Key Encryption: Cipher 'AES-256-CBC' initialized" in out, \
        out[-2000:]


@pytest.mark.directive("secret", "tls-client")
def test_openvpn_refuses_secret_with_a_tls_role(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    out = openvpn_output(lab, workdir, [*STATIC, "--cipher", "AES-256-CBC", "--tls-client"])
    assert "specify only one of --tls-server, --tls-client, or --secret" in out, out[-2000:]


@pytest.mark.directive("secret", "ca")
def test_openvpn_refuses_tls_only_parameters_with_secret(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    out = openvpn_output(lab, workdir, [*STATIC, "--cipher", "AES-256-CBC", "--ca", "ca.crt"])
    assert ("Parameter ca_file can only be specified in TLS-mode, i.e. where --tls-server or "
            "--tls-client is also specified.") in out, out[-2000:]


@pytest.mark.directive("secret", "proto")
def test_openvpn_static_key_tcp_server_opens_its_device_before_its_peer_connects(
        lab: NetnsLab, openvpn_binary: None, workdir: Path) -> None:
    """docs/connections.md: the waiting side's device is up before its peer, over TCP too
    (tests/interop/test_static_key.py checks trivpn does the same)."""
    args = [a if a != "udp" else "tcp-server" for a in STATIC]
    out = openvpn_output(lab, workdir, [*args, "--cipher", "AES-256-CBC"])
    assert "Listening for incoming TCP connection" in out, out[-2000:]
    assert out.index("TUN/TAP device") < out.index("Listening for incoming TCP connection")
