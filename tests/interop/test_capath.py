"""capath (an OpenSSL hashed directory of CAs and CRLs) on a trivpn server and a real openvpn
2.6 server: a good client connects, a client revoked by a CRL in the directory does not, and a
directory without a CRL still admits a good client (OpenVPN checks CRLs for the whole chain
with capath, and lets a missing CRL pass)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import client_lines, issue_client, server_lines
from tests.interop.trivpnproc import start_trivpn
from tests.netns import Netns, NetnsLab
from trivpn.pki.certs import load_certificate
from trivpn.pki.crl import build_crl, crl_pem

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER_IP = "198.18.0.1"


def _cadir(tmp_path: Path, revoked: list[int] | None) -> None:
    pki = write_pki(tmp_path)
    issue_client(pki, "revoked")
    cadir = tmp_path / "cadir"
    cadir.mkdir()
    shutil.copy(tmp_path / "ca.crt", cadir / "ca.pem")
    if revoked is not None:
        serials = [load_certificate((tmp_path / "revoked.crt").read_text()).serial_number]
        (cadir / "crl.pem").write_bytes(crl_pem(build_crl(pki.ca, serials)))
    subprocess.run(["openssl", "rehash", str(cadir)], check=True, capture_output=True)


def _server(lab: NetnsLab, tmp_path: Path, kind: str) -> tuple[Any, Netns]:
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", "198.18.0.2/24")
    lines = [line for line in server_lines(link_ip=SERVER_IP) if line != "ca ca.crt"]
    lines.append("capath cadir")
    if kind == "trivpn":
        trivpn = start_trivpn(srv, tmp_path, "server", lines)
        assert trivpn.wait_event("link_open", timeout=10), trivpn.text()
        return trivpn, cli
    openvpn = start_openvpn(srv, tmp_path, "server", lines)
    assert openvpn.wait_for("Initialization Sequence Completed", 15), openvpn.text()
    return openvpn, cli


@pytest.mark.directive("capath")
@pytest.mark.parametrize("kind", ["trivpn", "openvpn"])
def test_capath_server_admits_a_good_client_and_refuses_a_revoked_one(
        lab: NetnsLab, tmp_path: Path, kind: str) -> None:
    _cadir(tmp_path, revoked=[])
    server, cli = _server(lab, tmp_path, kind)
    good = start_openvpn(cli, tmp_path, "good", client_lines(server_ip=SERVER_IP))
    assert good.wait_for("Initialization Sequence Completed", 20), server.text()[-3000:]
    bad = start_openvpn(cli, tmp_path, "bad", client_lines(server_ip=SERVER_IP,
                                                           cert="revoked"))
    # the server's refusal of that certificate, rather than a fixed wait for nothing to happen
    if kind == "trivpn":
        refused = server.wait_event("handshake_failed", cause="cert_verify_failed", timeout=15)
        assert refused is not None, server.text()[-3000:]
        assert "certificate revoked" in refused["detail"], refused
    else:
        assert server.wait_for("certificate revoked", 15), server.text()[-3000:]
    assert "Initialization Sequence Completed" not in bad.text()


@pytest.mark.directive("capath")
@pytest.mark.parametrize("kind", ["trivpn", "openvpn"])
def test_capath_without_a_crl_still_admits_a_good_client(
        lab: NetnsLab, tmp_path: Path, kind: str) -> None:
    _cadir(tmp_path, revoked=None)
    server, cli = _server(lab, tmp_path, kind)
    good = start_openvpn(cli, tmp_path, "good", client_lines(server_ip=SERVER_IP))
    assert good.wait_for("Initialization Sequence Completed", 20), server.text()[-3000:]
