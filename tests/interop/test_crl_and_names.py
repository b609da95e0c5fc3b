"""crl-verify and certificate names with ``trivpn run`` against real openvpn 2.6 peers.

- A trivpn server with crl-verify refuses a revoked openvpn client, admits a good one, and picks
  up a CRL replaced on disk at the good client's next renegotiation.
- A trivpn client with crl-verify refuses a real openvpn server whose certificate is revoked,
  and connects once the CRL on disk no longer lists it.
- A client certificate whose CN holds a newline and a comma shows up in the status and
  ifconfig-pool-persist files exactly as a real openvpn server writes it: remapped, one line.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.certkit import leaf
from tests.interop.certoracle import write_credential
from tests.interop.clientkit import client_lines as trivpn_client_lines
from tests.interop.clientkit import make_setup, start_client, start_server, wait_up
from tests.interop.clientkit import server_lines as openvpn_server_lines
from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import client_lines, issue_client, server_lines
from tests.interop.trivpnproc import start_trivpn
from tests.netns import NetnsLab
from trivpn.pki.certs import load_certificate
from trivpn.pki.crl import build_crl, crl_pem

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"


def _replace(path: Path, data: bytes) -> None:
    """Write ``data`` and move the mtime forward so a same-second rewrite is noticed."""
    path.write_bytes(data)
    later = time.time() + 2
    os.utime(path, (later, later))


@pytest.mark.directive("crl-verify")
def test_trivpn_server_refuses_a_revoked_openvpn_client_and_rereads_a_replaced_crl(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    pki = write_pki(tmp_path)
    issue_client(pki, "revoked")
    revoked_serial = load_certificate((tmp_path / "revoked.crt").read_text()).serial_number
    crl = tmp_path / "crl.pem"
    crl.write_bytes(crl_pem(build_crl(pki.ca, [revoked_serial])))
    server = start_trivpn(srv, tmp_path, "server", server_lines(
        link_ip=SERVER_IP, extra=["crl-verify crl.pem"]))
    assert server.wait_event("link_open", timeout=10), server.text()

    good = start_openvpn(cli, tmp_path, "good", client_lines(
        server_ip=SERVER_IP, extra=["reneg-sec 2"]))
    assert good.wait_for("Initialization Sequence Completed", timeout=20), server.text()[-3000:]
    bad = start_openvpn(cli, tmp_path, "bad", client_lines(server_ip=SERVER_IP, cert="revoked"))
    rejected = server.wait_event("peer_cert_rejected", timeout=15, cn="revoked")
    assert rejected is not None, server.text()[-3000:]
    assert rejected["serial"] == str(revoked_serial) and rejected["check"] == "crl_verify"
    assert server.wait_event("peer_connected", timeout=2, cn="revoked") is None
    assert "Initialization Sequence Completed" not in bad.text()
    # client1 renegotiates every ~2 s and is still admitted...
    assert server.wait_event("renegotiated", timeout=10, cn="client1"), server.text()[-3000:]
    # ...until the CRL on disk revokes it too: its next handshake is refused, no restart.
    _replace(crl, crl_pem(build_crl(pki.ca, [revoked_serial, pki.client.cert.serial_number])))
    again = server.wait_event("peer_cert_rejected", timeout=15, cn="client1")
    assert again is not None, server.text()[-3000:]
    assert again["serial"] == str(pki.client.cert.serial_number)


@pytest.mark.directive("crl-verify")
def test_trivpn_client_refuses_a_revoked_openvpn_server_until_the_crl_clears_it(
        lab: NetnsLab, tmp_path: Path):
    setup = make_setup(lab, tmp_path)
    ca = write_pki(tmp_path).ca  # make_setup wrote one; use a fresh, known CA for both ends
    server_serial = load_certificate((tmp_path / "server.crt").read_text()).serial_number
    crl = tmp_path / "crl.pem"
    crl.write_bytes(crl_pem(build_crl(ca, [server_serial])))
    start_server(setup, openvpn_server_lines())
    client = start_client(setup, trivpn_client_lines(extra=("crl-verify crl.pem",)))
    rejected = client.wait_event("peer_cert_rejected", timeout=15)
    assert rejected is not None, client.text()[-3000:]
    assert (rejected["cn"], rejected["serial"], rejected["check"]) == \
        ("server", str(server_serial), "crl_verify")
    assert client.wait_event("tun_configured", timeout=1) is None
    _replace(crl, crl_pem(build_crl(ca, [])))
    wait_up(client, timeout=20)


@pytest.mark.directive("x509-username-field")
def test_a_cn_with_newline_and_comma_is_written_like_openvpn_writes_it(lab: NetnsLab,
                                                                        tmp_path: Path):
    trivpn_ns, openvpn_ns, cli = lab.add("srv"), lab.add("ovpn"), lab.add("cli")
    lab.veth(trivpn_ns, cli, "198.18.0.1/24", "198.18.0.2/24")
    lab.veth(openvpn_ns, cli, "198.18.1.1/24", "198.18.1.2/24")
    pki = write_pki(tmp_path)
    write_credential(tmp_path, "evil", leaf(pki.ca, "evil\nCLIENT_LIST,forged\r",
                                            eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)))
    outputs = {}
    for name, ns, ip, start in (("trivpn", trivpn_ns, "198.18.0.1", start_trivpn),
                                ("openvpn", openvpn_ns, "198.18.1.1", start_openvpn)):
        workdir = tmp_path / name
        workdir.mkdir()
        for f in ("ca.crt", "server.crt", "server.key", "evil.crt", "evil.key"):
            (workdir / f).write_bytes((tmp_path / f).read_bytes())
        start(ns, workdir, "server", server_lines(link_ip=ip, extra=[
            "status status.log 1", "status-version 2", "ifconfig-pool-persist ipp.txt 1"]))
        time.sleep(0.5)
        client = start_openvpn(cli, workdir, "client", client_lines(server_ip=ip, cert="evil"))
        assert client.wait_for("Initialization Sequence Completed", timeout=20), name
        outputs[name] = workdir
    deadline = time.monotonic() + 15

    def rows(name: str) -> tuple[list[str], list[str]]:
        status = outputs[name] / "status.log"
        ipp = outputs[name] / "ipp.txt"
        text = status.read_text() if status.exists() else ""
        pool = ipp.read_text() if ipp.exists() else ""
        return ([ln.split(",", 2)[1] + "," + ln.split(",", 3)[2] for ln in text.splitlines()
                 if ln.startswith("CLIENT_LIST,")],
                [ln.rsplit(",", 1)[0] for ln in pool.splitlines() if ln])

    while time.monotonic() < deadline and not all(all(rows(n)) for n in outputs):
        time.sleep(0.3)
    ours, theirs = rows("trivpn"), rows("openvpn")
    assert ours == theirs, (ours, theirs)
    assert ours[0] == ["evil_CLIENT_LIST,forged_"] and ours[1][0].startswith("evil_CLIENT_LIST")
