"""``trivpn init-server``: the written config and PKI, the doctor's view of them, and a server
started from them accepting a client whose profile was exported from them.

Tests pass a 198.18.8.0/24 VPN network; the customary default is only checked as text.
"""

from __future__ import annotations

import grp
import ipaddress
import json
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_netns
from tests.interop.serverkit import SERVER_VPN_IP, ping
from tests.interop.trivpnproc import TrivpnProcess
from tests.netns import NetnsLab
from trivpn.cli import main
from trivpn.commands.init_server import DEFAULT_NETWORK, ServerPlan, render_server_config
from trivpn.config import load_config

SERVER_IP, CLIENT_IP = "198.18.0.1", "198.18.0.2"
NETWORK = "198.18.8.0/24"
OFFLINE_CHECKS = ("config.syntax", "config.files", "pki.chain", "pki.validity",
                  "pki.key_match", "pki.eku")


def _init(root: Path, *extra: str) -> Path:
    code = main(["init-server", str(root), "--public-address", SERVER_IP, "--network",
                 NETWORK, *extra])
    assert code == 0
    return root / "server.conf"


def test_written_config_parses_with_every_recommended_setting(tmp_path: Path):
    options = load_config(_init(tmp_path / "srv"))
    assert options.role == "server" and options.proto == "udp" and options.port == 1194
    assert options.dev_type == "tun" and options.topology == "subnet"
    assert options.server is not None
    assert options.server.network == ipaddress.ip_network(NETWORK)
    assert options.tls_crypt is not None and options.tls_crypt.text
    assert options.data_ciphers == ("AES-256-GCM", "CHACHA20-POLY1305")
    assert options.remote_cert_tls == "client" and options.dh == "none"
    assert options.keepalive is not None
    assert (options.keepalive.interval, options.keepalive.timeout) == (10, 120)
    assert options.user == "nobody"
    assert options.group is not None
    grp.getgrnam(options.group)  # a group that exists here
    assert options.persist_key and options.persist_tun
    assert options.explicit_exit_notify == 1
    assert options.status is not None and options.status.path.parent == tmp_path / "srv"


def test_tcp_server_has_no_explicit_exit_notify(tmp_path: Path):
    options = load_config(_init(tmp_path / "srv", "--proto", "tcp", "--port", "443"))
    assert options.proto == "tcp-server" and options.port == 443
    assert options.explicit_exit_notify == 0


def test_keys_are_private_and_the_ca_key_is_never_in_the_config(tmp_path: Path):
    conf = _init(tmp_path / "srv")
    for key in ("pki/private/ca.key", "pki/private/server.key", "pki/tc.key"):
        assert stat.S_IMODE((tmp_path / "srv" / key).stat().st_mode) == 0o600
    assert "ca.key" not in conf.read_text()


def test_default_network_is_openvpns_customary_one_as_text_only(tmp_path: Path):
    text = render_server_config(ServerPlan(root=tmp_path, public_address="vpn.example.org"))
    default = ipaddress.IPv4Network(DEFAULT_NETWORK)
    assert default.prefixlen == 24 and default.is_private  # OpenVPN's customary subnet
    assert f"server {default.network_address} {default.netmask}\n" in text


def test_next_steps_name_profile_run_and_systemctl(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]):
    conf = _init(tmp_path / "srv")
    out = capsys.readouterr().out
    assert f"trivpn profile alice --server-config {conf} --remote {SERVER_IP}" in out
    assert f"trivpn run {conf}" in out
    assert "systemctl enable --now" in out


def test_an_existing_server_directory_is_left_alone(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]):
    conf = _init(tmp_path / "srv")
    before = conf.read_text()
    code = main(["init-server", str(tmp_path / "srv"), "--public-address", SERVER_IP])
    assert code == 1 and "refusing to overwrite" in capsys.readouterr().err
    assert conf.read_text() == before


def test_doctor_finds_no_config_or_pki_failure(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]):
    conf = _init(tmp_path / "srv")
    capsys.readouterr()
    main(["doctor", str(conf), "--json", "--check", *OFFLINE_CHECKS])
    report = json.loads(capsys.readouterr().out)
    results = {r["id"]: r["status"] for r in report["checks"]}
    assert set(OFFLINE_CHECKS) <= set(results)
    assert {check: results[check] for check in OFFLINE_CHECKS} == dict.fromkeys(
        OFFLINE_CHECKS, "ok")


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    require_netns()
    with NetnsLab() as lab:
        yield lab


@pytest.mark.integration
def test_server_from_init_server_accepts_a_client_with_an_exported_profile(
        lab: NetnsLab, tmp_path: Path):
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, f"{SERVER_IP}/24", f"{CLIENT_IP}/24")
    conf = _init(tmp_path / "srv")
    profile = tmp_path / "alice.ovpn"
    assert main(["profile", "alice", "--server-config", str(conf), "--remote", SERVER_IP,
                 "--out", str(profile)]) == 0

    logs = []
    for ns, config, name in ((srv, conf, "server"), (cli, profile, "client")):
        log = tmp_path / f"{name}.log"
        proc = ns.spawn([sys.executable, "-m", "trivpn", "run", str(config), "--log-format",
                         "json", "--log-file", str(log)])
        logs.append(TrivpnProcess(log, proc.pid))
        if name == "server":
            assert logs[0].wait_event("link_open", timeout=10), logs[0].text()
    server, client = logs
    assert client.wait_event("tun_configured", timeout=20), \
        (client.text()[-3000:], server.text()[-3000:])
    assert server.wait_event("peer_connected", timeout=5, cn="alice"), server.text()[-3000:]
    assert server.wait_event("privileges_dropped", timeout=1, user="nobody"), server.text()
    assert ping(cli, SERVER_VPN_IP), server.text()[-2000:]
