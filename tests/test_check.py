"""``trivpn check CONFIG [--no-files] [--json]``: the plan of what ``trivpn run`` would do,
exit 0 when it would start and 2 when not, without network traffic (trivpn/runplan.py)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.interop.openvpn import write_pki
from trivpn.cli import main
from trivpn.config.directives import DIRECTIVES

CLIENT = """client
dev tun
proto udp
remote vpn.example.com 1194
remote 198.18.0.1 1195
nobind
ca ca.crt
cert client.crt
key client.key
remote-cert-tls server
tls-crypt static.key
redirect-gateway def1
route 198.18.5.0 255.255.255.0
"""

SERVER = """port 1194
proto udp
dev tun
ca ca.crt
cert server.crt
key server.key
dh none
server 198.18.8.0 255.255.255.0
topology subnet
keepalive 10 60
push "dhcp-option DNS 198.18.8.1"
tls-auth static.key 0
"""

SECTIONS = ("Config:", "Role:", "Transport:", "Device:", "Addresses:", "Routes:", "Timers:",
            "Process:", "DNS:", "Scripts:", "Verification:", "Ignored", "Warnings:")


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    write_pki(tmp_path)
    return tmp_path


def _conf(directory: Path, text: str, name: str = "c.conf") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def _check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _plan(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, _ = _check(capsys, *args, "--json")
    assert code == 0, out
    result: dict[str, Any] = json.loads(out)
    assert result["ok"] is True and result["schema"] == 1
    plan: dict[str, Any] = result["plan"]
    return plan


@pytest.mark.parametrize("config", [CLIENT, SERVER], ids=["client", "server"])
def test_check_prints_every_section_and_exits_0(capsys: pytest.CaptureFixture[str], pki: Path,
                                                config: str) -> None:
    code, out, err = _check(capsys, str(_conf(pki, config)))
    assert code == 0, err
    starts = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    for section in SECTIONS:
        assert section.split()[0] in starts, section
    assert out.splitlines()[-1].startswith("OK: 'trivpn run' would start this")


def test_client_plan_lists_remotes_unresolved_and_what_the_server_pushes(
        capsys: pytest.CaptureFixture[str], pki: Path) -> None:
    plan = _plan(capsys, str(_conf(pki, CLIENT)))
    assert plan["role"] == "client" and plan["files_read"] is True
    remotes = plan["transport"]["remotes"]
    assert [(r["host"], r["port"], r["address"]) for r in remotes] == [
        ("vpn.example.com", 1194, "resolved at run time"), ("198.18.0.1", 1195, "198.18.0.1")]
    assert plan["transport"]["local"]["bound"] is False
    assert plan["device"] | {"at_run_time": None} == {
        "type": "tun", "name": "tun%d", "name_chosen_by_kernel": True, "mtu": 1500,
        "txqueuelen": None, "topology": "net30", "at_run_time": None}
    assert [a["source"] for a in plan["addresses"]] == ["push"]
    routes = [(r["destination"], r["source"]) for r in plan["routes"]]
    assert routes == [(None, "redirect-gateway"), ("0.0.0.0/1", "redirect-gateway"),
                      ("128.0.0.0/1", "redirect-gateway"), ("198.18.5.0/24", "route"),
                      (None, "push")]
    assert plan["dns"]["applied"] == "not applied: --dns-mode off"  # TRIVPN_DNS_MODE: tests
    assert plan["server"] is None


def test_client_plan_shows_what_will_be_verified(capsys: pytest.CaptureFixture[str],
                                                 pki: Path) -> None:
    v = _plan(capsys, str(_conf(pki, CLIENT)))["verification"]
    assert [c["subject"] for c in v["ca"]["certificates"]] == ["CN=interop CA"]
    cert = v["cert"]["certificate"]
    assert cert["subject"] == "CN=client1" and cert["issuer"] == "CN=interop CA"
    assert cert["expired"] is False and cert["days_left"] > 0 and "not_after" in cert
    assert v["key"]["file"] == str(pki / "client.key") and v["key"]["read"] is True
    assert v["peer"]["remote_cert_tls"] == "server"
    assert v["control_channel"]["kind"] == "tls-crypt"
    assert v["tls"]["version_min"] == "1.2"
    assert v["data_channel"]["ciphers"] == ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"]


def test_server_plan_shows_its_address_pool_and_pushes(capsys: pytest.CaptureFixture[str],
                                                       pki: Path) -> None:
    plan = _plan(capsys, str(_conf(pki, SERVER)))
    assert plan["role"] == "server" and plan["mode"] == "server"
    assert [a["text"] for a in plan["addresses"]] == ["198.18.8.1/24"]
    assert plan["server"]["pool"] == {"first": "198.18.8.2", "last": "198.18.8.254",
                                      "size": 253, "topology": "subnet"}
    assert plan["server"]["push"][:2] == ["dhcp-option DNS 198.18.8.1", "route-gateway 198.18.8.1"]
    assert plan["dns"]["pushed_to_clients"] == ["dhcp-option DNS 198.18.8.1"]
    assert plan["transport"]["local"] == {"address": "0.0.0.0", "port": 1194, "bound": True}
    w = plan["verification"]["control_channel"]
    assert (w["kind"], w["key_direction"], w["digest"]) == ("tls-auth", 0, "SHA1")
    assert plan["timers"]["ping_restart"] == 120  # keepalive 10 60 on a server: 2 x 60


def test_net30_server_routes_its_subnet_to_the_device(capsys: pytest.CaptureFixture[str],
                                                      pki: Path) -> None:
    plan = _plan(capsys, str(_conf(pki, SERVER.replace("topology subnet\n", "topology net30\n"))))
    assert [a["text"] for a in plan["addresses"]] == ["198.18.8.1 peer 198.18.8.2"]
    assert [(r["destination"], r["gateway"]) for r in plan["routes"]] == [
        ("198.18.8.0/24", "198.18.8.2")]


def test_inert_directives_are_listed_with_their_reasons(capsys: pytest.CaptureFixture[str],
                                                        pki: Path) -> None:
    conf = _conf(pki, CLIENT + "fast-io\ntun-ipv6\n")
    plan = _plan(capsys, str(conf))
    assert [(i["directive"], i["at"]["line"], i["reason"]) for i in plan["ignored"]] == [
        ("fast-io", 14, DIRECTIVES["fast-io"].inert),
        ("tun-ipv6", 15, DIRECTIVES["tun-ipv6"].inert)]
    _, out, _ = _check(capsys, str(conf))
    assert f"  fast-io ({conf}:14): {DIRECTIVES['fast-io'].inert}" in out.splitlines()


def test_warnings_are_listed_with_their_lines(capsys: pytest.CaptureFixture[str],
                                              pki: Path) -> None:
    conf = _conf(pki, CLIENT.replace("remote-cert-tls server\n", "ns-cert-type server\n"))
    plan = _plan(capsys, str(conf))
    assert any(w["line"] == 10 and "ns-cert-type" in w["message"] for w in plan["warnings"])


def test_no_files_does_not_read_the_files_and_a_missing_one_is_fine(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    conf = _conf(tmp_path, CLIENT)  # no ca.crt, client.crt, ... exist
    code, out, err = _check(capsys, str(conf), "--no-files")
    assert code == 0, err
    assert f"  ca:         {tmp_path / 'ca.crt'} (not read)" in out.splitlines()
    plan = _plan(capsys, str(conf), "--no-files")
    assert plan["files_read"] is False and plan["verification"]["ca"]["read"] is False


def test_a_missing_file_exits_2_naming_the_directive_line(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    conf = _conf(tmp_path, CLIENT)
    code, out, err = _check(capsys, str(conf))
    assert code == 2 and out == ""
    assert err.startswith(f"trivpn check: {conf}:7: cannot read ca file '{tmp_path / 'ca.crt'}'")
    assert "FAILED: 'trivpn run' would not start" in err


def test_a_bad_directive_exits_2_with_file_and_line(capsys: pytest.CaptureFixture[str],
                                                   pki: Path) -> None:
    conf = _conf(pki, CLIENT + "verb x\n")
    code, _, err = _check(capsys, str(conf))
    assert code == 2 and err.startswith(f"trivpn check: {conf}:14: 'verb' expects")
    code, out, _ = _check(capsys, str(conf), "--json")
    result = json.loads(out)
    assert code == 2 and result["ok"] is False and result["plan"] is None
    assert (result["error"]["file"], result["error"]["line"]) == (str(conf), 14)


def test_a_key_that_does_not_match_the_certificate_exits_2(capsys: pytest.CaptureFixture[str],
                                                           pki: Path) -> None:
    # the TLS context is built as trivpn run builds it
    conf = _conf(pki, CLIENT.replace("key client.key", "key server.key"))
    code, _, err = _check(capsys, str(conf))
    assert code == 2 and f"{conf}:" in err, err


def test_command_line_options_after_the_config_are_applied(capsys: pytest.CaptureFixture[str],
                                                            pki: Path) -> None:
    conf = _conf(pki, CLIENT)
    plan = _plan(capsys, str(conf), "--tun-mtu", "1400", "--route", "198.18.6.0",
                 "255.255.255.0")
    assert plan["device"]["mtu"] == 1400
    assert "198.18.6.0/24" in [r["destination"] for r in plan["routes"]]
    code, _, err = _check(capsys, str(conf), "--tun-mtu")
    assert code == 2 and err.startswith("trivpn check: command line, argument 3: 'tun-mtu' takes")


def test_options_alone_on_the_command_line_can_be_checked(capsys: pytest.CaptureFixture[str],
                                                          pki: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(pki)
    plan = _plan(capsys, "--client", "--dev", "tun", "--remote", "198.18.0.1", "1194",
                 "--ca", "ca.crt", "--cert", "client.crt", "--key", "client.key")
    assert plan["config"] == "command line"
    assert plan["verification"]["ca"]["at"] == {"file": None, "line": 8, "command_line": True,
                                                "text": "command line, argument 8"}


def test_scripts_section_shows_script_security(capsys: pytest.CaptureFixture[str],
                                               pki: Path) -> None:
    plan = _plan(capsys, str(_conf(pki, CLIENT + "script-security 2\n")))
    assert plan["scripts"] == {"script_security": 2, "scripts": []}


AUDIT = """
import sys
events = []
def hook(name, args):
    if name.startswith("socket.") or name == "os.system":
        events.append(name)
    elif name == "subprocess.Popen" and args[1] != ["/sbin/ldconfig", "-p"]:
        events.append(f"{name} {args[1]}")  # (importing trio asks ldconfig where libs are)
sys.addaudithook(hook)
from trivpn.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
print("AUDIT", ",".join(events), file=sys.stderr)
sys.exit(code)
"""


def test_check_opens_no_socket_and_resolves_nothing(pki: Path) -> None:
    conf = _conf(pki, CLIENT + "remote vpn2.example.net 443 tcp-client\n")
    done = subprocess.run([sys.executable, "-c", AUDIT, "check", str(conf)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    audit = [line for line in done.stderr.splitlines() if line.startswith("AUDIT")]
    assert audit == ["AUDIT "], done.stderr  # no socket.*, no getaddrinfo, no process


OPENVPN_AT_UNIT = Path("/lib/systemd/system/openvpn@.service")


def test_the_command_line_of_debians_openvpn_at_unit_is_checked(
        capsys: pytest.CaptureFixture[str], pki: Path) -> None:
    # --daemon ovpn-%i --status /run/openvpn/%i.status 10 --cd /etc/openvpn
    # --config /etc/openvpn/%i.conf --writepid /run/openvpn/%i.pid (run: tests/interop/
    # test_debian_units.py runs the client and server units; this one forks, so it is only
    # checked)
    if not OPENVPN_AT_UNIT.exists():
        pytest.skip(f"needs Debian's {OPENVPN_AT_UNIT} (the openvpn package)")
    line = next(x for x in OPENVPN_AT_UNIT.read_text().splitlines()
                if x.startswith("ExecStart="))
    text = (line.removeprefix("ExecStart=").replace("%i", "site")
            .replace("/etc/openvpn", str(pki)).replace("/run/openvpn", str(pki / "run")))
    _conf(pki, CLIENT, "site.conf")
    plan = _plan(capsys, *shlex.split(text)[1:])
    p = plan["process"]
    assert p["daemon"] == "ovpn-site" and p["writepid"] == str(pki / "run" / "site.pid")
    assert p["status"] == {"file": str(pki / "run" / "site.status"), "seconds": 10,
                           "version": 1}
    assert plan["config"] == str(pki / "site.conf")


def test_the_json_keys_are_the_documented_ones(capsys: pytest.CaptureFixture[str],
                                               pki: Path) -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    plan_table = doc.split("Keys of `plan`", 1)[1]
    documented = re.findall(r"^\| `([a-z_]+)` \|", plan_table, re.M)
    top = re.findall(r"^\| `([a-z_]+)` \|", doc.split("Keys of `plan`", 1)[0], re.M)
    for config in (CLIENT, SERVER):
        code, out, _ = _check(capsys, str(_conf(pki, config)), "--json")
        result = json.loads(out)
        assert code == 0 and list(result) == top
        assert list(result["plan"]) == documented


def test_a_credentials_file_with_only_a_username_still_checks(
        capsys: pytest.CaptureFixture[str], pki: Path) -> None:
    # a username-only file is valid: the password is asked at run time (credentials.py)
    (pki / "creds.txt").write_text("alice\n")
    conf = _conf(pki, CLIENT + "auth-user-pass creds.txt\n")
    code, out, _ = _check(capsys, str(conf))
    assert code == 0 and "alice" not in out
    (pki / "creds.txt").write_text("alice\nsecret\n")
    code, out, _ = _check(capsys, str(conf))
    assert code == 0 and "secret" not in out and "alice" not in out


@pytest.mark.directive("dns", "dhcp-option")
def test_client_plan_shows_the_dns_backend_and_the_configs_own_dns(
        capsys: pytest.CaptureFixture[str], pki: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIVPN_DNS_MODE", "resolvconf")
    conf = _conf(pki, CLIENT + "dhcp-option DOMAIN corp.test\n"
                               "dns server 0 address 198.18.8.53\ndhcp-option WINS 198.18.8.9\n")
    dns = _plan(capsys, str(conf))["dns"]
    assert dns["applied"].startswith("through resolvconf (--dns-mode resolvconf)")
    assert dns["from_config"]["servers"] == ["198.18.8.53"]
    assert dns["from_config"]["search_domains"] == ["corp.test"]
    assert dns["from_config"]["routing_domains"] == ["."]  # redirect-gateway def1
    assert "WINS" in dns["notes"][0]
    code, out, _ = _check(capsys, str(conf))
    assert code == 0
    assert ("  from the config: servers 198.18.8.53; search corp.test; routing-only ."
            in out.splitlines())


@pytest.mark.directive("client-config-dir", "route")
def test_server_plan_shows_its_client_config_dir_and_config_routes(
        capsys: pytest.CaptureFixture[str], pki: Path) -> None:
    conf = _conf(pki, SERVER + "client-config-dir ccd\nroute 198.18.30.0 255.255.255.0\n")
    plan = _plan(capsys, str(conf))
    assert plan["server"]["client_config_dir"] == str(conf.parent / "ccd")
    assert plan["server"]["ccd_exclusive"] is False
    route = next(r for r in plan["routes"] if r["destination"] == "198.18.30.0/24")
    assert route["source"] == "route" and route["via"] == "tunnel"


@pytest.mark.directive("server-ipv6")
def test_server_plan_shows_its_ipv6_pool_and_address(capsys: pytest.CaptureFixture[str],
                                                     pki: Path) -> None:
    plan = _plan(capsys, str(_conf(pki, SERVER + "server-ipv6 2001:2:0:8::/64\nproto udp6\n")))
    assert [a["text"] for a in plan["addresses"]] == ["198.18.8.1/24", "2001:2:0:8::1/64"]
    assert plan["server"]["pool_ipv6"] == {"first": "2001:2:0:8::1000",
                                           "last": "2001:2:0:8::10fc", "size": 253,
                                           "prefix": 64}
    assert plan["transport"]["local"]["address"] == "::"  # udp6: dual-stack


P2P_SERVER = """tls-server
dev tun
proto udp
port 1194
ifconfig 198.18.8.1 198.18.8.2
ca ca.crt
cert server.crt
key server.key
dh none
"""


def test_tls_peer_to_peer_server_plan_has_its_own_addresses_and_no_pool(
        capsys: pytest.CaptureFixture[str], pki: Path) -> None:
    plan = _plan(capsys, str(_conf(pki, P2P_SERVER)))
    assert (plan["role"], plan["mode"], plan["server"]) == ("client", "p2p", None)
    assert [(a["text"], a["source"]) for a in plan["addresses"]] == [
        ("198.18.8.1 peer 198.18.8.2", "ifconfig")]
    assert [r["source"] for r in plan["routes"]] == []


@pytest.mark.directive("up", "script-security")
def test_up_that_script_security_forbids_exits_2_naming_its_line(
        capsys: pytest.CaptureFixture[str], pki: Path) -> None:
    conf = _conf(pki, P2P_SERVER + "up ./office.up\n")
    code, _, err = _check(capsys, str(conf))
    assert code == 2
    assert err.startswith(f"trivpn check: {conf}:10: 'up' cannot run with script-security 1")
    code, _, _ = _check(capsys, str(_conf(pki, P2P_SERVER + "up ./office.up\n"
                                          "script-security 2\n")))
    assert code == 0
