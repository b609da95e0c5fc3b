"""``trivpn profile``: the exported single-file profile, and real clients connecting with it.

Namespaces: ``srv`` (198.18.0.1) runs a trivpn server, ``cli`` (198.18.0.2) a real ``openvpn``
2.6 client or ``trivpn run`` with nothing but the exported ``.ovpn``; the tunnel (198.18.8.0/24)
must carry a ping. The unit tests check what goes into the profile and how the PKI is found.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from tests.conftest import require_openvpn
from tests.interop.openvpn import OpenVpnProcess
from tests.interop.serverkit import SERVER_VPN_IP, TUNNEL_MASK, TUNNEL_NET, ping
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import NetnsLab
from trivpn.cli import main
from trivpn.config import load_config
from trivpn.pki.certs import create_ca, issue_cert
from trivpn.pki.statickeys import generate_static_key, write_static_key
from trivpn.pki.store import PkiStore
from trivpn.profile import ProfileError, export_profile

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"


def _server_pki(root: Path) -> PkiStore:
    store = PkiStore(root / "pki")
    ca = create_ca("profile test CA")
    store.save_ca(ca)
    store.save_issued("server", issue_cert(ca, "server", "server"))
    write_static_key(root / "pki" / "static.key", generate_static_key())
    return store


def _server_lines(proto: str, wrap: str) -> list[str]:
    wrap_line = "tls-crypt pki/static.key" if wrap == "tls-crypt" else "tls-auth pki/static.key 0"
    return [
        "port 1194", f"proto {proto}", "dev tun", f"local {SERVER_IP}", "ca pki/ca.crt",
        "cert pki/issued/server.crt", "key pki/private/server.key", "dh none",
        "topology subnet", f"server {TUNNEL_NET} {TUNNEL_MASK}", "keepalive 2 20",
        "remote-cert-tls client", "data-ciphers CHACHA20-POLY1305:AES-256-GCM", wrap_line,
        "auth SHA256", "verb 3",
    ]


def _write_server(root: Path, proto: str = "udp", wrap: str = "tls-crypt") -> Path:
    _server_pki(root)
    conf = root / "server.conf"
    conf.write_text("\n".join(_server_lines(proto, wrap)) + "\n")
    return conf


def _export(root: Path, conf: Path, name: str = "alice", *extra: str) -> Path:
    out = root / f"{name}.ovpn"
    code = main(["profile", name, "--server-config", str(conf), "--remote", SERVER_IP,
                 "--out", str(out), *extra])
    assert code == 0
    return out


# --- real clients through the exported profile ------------------------------------------------



@pytest.mark.integration
@pytest.mark.parametrize(("client", "proto", "wrap"), [
    ("openvpn", "udp", "tls-crypt"),
    ("trivpn", "udp", "tls-crypt"),
    ("openvpn", "tcp-server", "tls-auth"),
    ("trivpn", "tcp-server", "tls-auth"),
])
def test_a_client_with_only_the_exported_profile_reaches_the_server(
        lab: NetnsLab, tmp_path: Path, client: str, proto: str, wrap: str):
    if client == "openvpn":
        require_openvpn()
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    conf = _write_server(server_dir, proto, wrap)
    client_dir = tmp_path / "client"  # nothing but the profile lives here
    client_dir.mkdir()
    profile = _export(server_dir, conf)
    profile = profile.rename(client_dir / profile.name)

    server = start_trivpn(srv, server_dir, "server", _server_lines(proto, wrap))
    assert server.wait_event("link_open", timeout=10), server.text()
    log = client_dir / "client.log"
    if client == "openvpn":
        proc = cli.spawn(["openvpn", "--config", str(profile), "--log", str(log)])
        ovpn = OpenVpnProcess(log, proc.pid)
        assert ovpn.wait_for("Initialization Sequence Completed", timeout=20), \
            (ovpn.text()[-3000:], server.text()[-3000:])
    else:
        proc = cli.spawn([sys.executable, "-m", "trivpn", "run", str(profile), "--log-format",
                          "json", "--log-file", str(log)])
        ours = TrivpnProcess(log, proc.pid)
        assert ours.wait_event("tun_configured", timeout=20), \
            (ours.text()[-3000:], server.text()[-3000:])
    connected = server.wait_event("peer_connected", timeout=5, cn="alice")
    assert connected is not None, server.text()[-3000:]
    assert connected["cipher"] == "CHACHA20-POLY1305"
    assert ping(cli, SERVER_VPN_IP), server.text()[-2000:]


# --- what the profile contains ----------------------------------------------------------------

def test_profile_inlines_ca_cert_key_and_tls_crypt_and_matches_the_server(tmp_path: Path):
    conf = _write_server(tmp_path, "udp", "tls-crypt")
    options = load_config(_export(tmp_path, conf))
    assert options.role == "client" and options.pull
    assert options.proto == "udp" and options.dev_type == "tun" and options.nobind
    assert [(r.host, r.port) for r in options.remotes] == [(SERVER_IP, 1194)]
    assert options.remote_cert_tls == "server"
    assert options.persist_key and options.persist_tun and options.verb == 3
    assert options.data_ciphers == ("CHACHA20-POLY1305", "AES-256-GCM")
    assert options.auth == "SHA256"
    for src in (options.ca, options.cert, options.key, options.tls_crypt):
        assert src is not None and src.is_inline
    assert options.tls_crypt is not None
    assert options.tls_crypt.read_text() == (tmp_path / "pki" / "static.key").read_text()
    assert options.tls_auth is None


def test_tls_auth_server_gets_an_inline_tls_auth_with_key_direction_1(tmp_path: Path):
    conf = _write_server(tmp_path, "tcp-server", "tls-auth")
    path = _export(tmp_path, conf)
    options = load_config(path)
    assert options.tls_auth is not None and options.tls_auth.is_inline
    assert options.key_direction == 1
    assert options.proto == "tcp-client"
    assert "key-direction 1\n" in path.read_text()


def test_profile_file_is_private_and_port_can_be_overridden(tmp_path: Path):
    conf = _write_server(tmp_path)
    path = _export(tmp_path, conf, "bob", "--port", "443")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [r.port for r in load_config(path).remotes] == [443]


def test_client_certificate_is_issued_once_then_reused(tmp_path: Path):
    conf = _write_server(tmp_path)
    first = export_profile("carol", conf, SERVER_IP)
    second = export_profile("carol", conf, SERVER_IP)
    assert first.issued and not second.issued
    cert = (tmp_path / "pki" / "issued" / "carol.crt").read_text().strip()
    assert cert in first.text and cert in second.text


def test_the_server_certificate_name_is_refused_as_a_client(tmp_path: Path):
    conf = _write_server(tmp_path)
    with pytest.raises(ProfileError, match="not a client certificate"):
        export_profile("server", conf, SERVER_IP)


def test_pki_with_another_ca_than_the_server_trusts_is_refused(tmp_path: Path):
    conf = _write_server(tmp_path / "a")
    other = _server_pki(tmp_path / "b")
    with pytest.raises(ProfileError, match="not the CA the server trusts"):
        export_profile("dave", conf, SERVER_IP, pki_dir=other.root)


def test_missing_pki_asks_for_pki_dir(tmp_path: Path):
    conf = _write_server(tmp_path)
    (tmp_path / "pki" / "private" / "ca.key").unlink()
    with pytest.raises(ProfileError, match="--pki DIR"):
        export_profile("erin", conf, SERVER_IP)


def test_a_client_config_is_not_accepted_as_server_config(tmp_path: Path):
    conf = tmp_path / "client.conf"
    conf.write_text(f"client\ndev tun\nremote {SERVER_IP}\nca ca.crt\ncert c.crt\nkey c.key\n")
    with pytest.raises(ProfileError, match="not a server config"):
        export_profile("frank", conf, SERVER_IP)


def test_an_existing_profile_is_not_overwritten(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]):
    conf = _write_server(tmp_path)
    path = _export(tmp_path, conf)
    before = path.read_text()
    code = main(["profile", "alice", "--server-config", str(conf), "--remote", SERVER_IP,
                 "--out", str(path)])
    assert code == 1 and "already exists" in capsys.readouterr().err
    assert path.read_text() == before
