"""What trivpn says OpenVPN 2.6 does with client-config-dir (trivpn/config/ccd.py,
trivpn/config/parser.py, docs/server-ccd.md), checked against the real binary: its refusals of
the main config, and, side by side, what a real openvpn client receives from a real OpenVPN
server and from trivpn with the same client-config-dir (push-remove by prefix, push-reset,
DEFAULT, file names of common names with a slash)."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import pytest

from tests.interop.openvpn import as_config, openvpn_output, start_openvpn, write_pki
from tests.interop.serverkit import client_lines, server_lines
from tests.interop.trivpnproc import start_trivpn
from tests.netns import NetnsLab
from trivpn.config import ConfigError, load_config
from trivpn.pki.certs import certificate_pem, issue_cert
from trivpn.pki.keys import private_key_pem

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

SERVER = ["--server", "198.18.8.0", "255.255.255.0", "--topology", "subnet", "--dev", "tun",
          "--proto", "udp", "--ca", "ca.crt", "--cert", "server.crt", "--key", "server.key",
          "--dh", "none", "--verb", "4"]
CLIENT = ["--client", "--dev", "tun", "--proto", "udp", "--remote", "198.18.0.9", "1194",
          "--nobind", "--ca", "ca.crt", "--cert", "client.crt", "--key", "client.key"]


def _trivpn_refusal(workdir: Path, args: list[str]) -> str:
    conf = workdir / "t.conf"
    conf.write_text(as_config(args))
    with pytest.raises(ConfigError) as info:
        load_config(conf, read_files=False)
    return str(info.value)


@pytest.mark.directive("iroute", "ifconfig-push", "push-reset", "push-remove", "disable")
@pytest.mark.parametrize("line", [["--iroute", "198.18.30.0", "255.255.255.0"],
                                  ["--ifconfig-push", "198.18.8.9", "255.255.255.0"],
                                  ["--push-reset"], ["--push-remove", "route"],
                                  ["--disable"]], ids=lambda a: a[0][2:])
def test_per_client_directives_are_refused_in_a_main_config_by_both(
        lab: NetnsLab, tmp_path: Path, line: list[str]) -> None:
    write_pki(tmp_path)
    out = openvpn_output(lab, tmp_path, [*SERVER, *line])
    assert f"option '{line[0][2:]}' cannot be used in this context" in out, out[-3000:]
    assert "can only be used in a client-config-dir file" in _trivpn_refusal(
        tmp_path, [*SERVER, *line])


@pytest.mark.directive("ifconfig-pool", "ccd-exclusive", "client-config-dir")
@pytest.mark.parametrize(("args", "theirs", "ours"), [
    ([*SERVER, "--ifconfig-pool", "198.18.8.100", "198.18.8.200"],
     "--server already defines an ifconfig-pool", "'server' already defines an ifconfig-pool"),
    ([*SERVER, "--ccd-exclusive"], "--ccd-exclusive must be used with --client-config-dir",
     "'ccd-exclusive' must be used with 'client-config-dir'"),
    ([*CLIENT, "--client-config-dir", "ccd"],
     "--client-config-dir/--ccd-exclusive requires --mode server",
     "'client-config-dir' requires 'mode server'"),
    ([*CLIENT, "--ifconfig-pool", "198.18.8.100", "198.18.8.200"],
     "--ifconfig-pool/--ifconfig-pool-persist requires --mode server",
     "'ifconfig-pool' requires 'mode server'"),
], ids=["server-and-pool", "exclusive-alone", "ccd-on-client", "pool-on-client"])
def test_main_config_refusals_match_openvpn(lab: NetnsLab, tmp_path: Path, args: list[str],
                                            theirs: str, ours: str) -> None:
    write_pki(tmp_path)
    out = openvpn_output(lab, tmp_path, args)
    assert f"Options error: {theirs}" in out, out[-3000:]
    assert ours in _trivpn_refusal(tmp_path, args)


# --- side by side: the same client-config-dir behind OpenVPN and behind trivpn -----------------

CCD_FILES = {
    "pr": 'push "route 198.18.61.0 255.255.255.0"\npush-remove route\n',
    "rs": 'push "ping 7"\npush-reset\npush "topology subnet"\n'
          'push "route-gateway 198.18.8.1"\n',
    "DEFAULT": 'push "route 198.18.60.0 255.255.255.0"\n',
    "x_y": "config slash-common\n",  # the file of common name "x/y"
}
SLASH_COMMON = "ifconfig-push 198.18.8.42 255.255.255.0\n"  # beside the server config


def _reply(text: str) -> list[str]:
    found = re.search(r"PUSH: Received control message: 'PUSH_REPLY,([^']*)'", text)
    assert found is not None, text[-3000:]
    return found.group(1).split(",")


def _side(lab: NetnsLab, workdir: Path, kind: str, files: dict[str, str],
          certs: dict[str, str], extra: list[str]) -> dict[str, str]:
    """Run a ``kind`` server (openvpn or trivpn) with ``files`` in ccd/ and one openvpn client
    per ``certs`` entry (file stem → common name); each client's log once it is up or
    refused."""
    pki = write_pki(workdir)
    for stem, cn in certs.items():
        cred = issue_cert(pki.ca, "client", cn)
        (workdir / f"{stem}.crt").write_bytes(certificate_pem(cred.cert))
        (workdir / f"{stem}.key").write_bytes(private_key_pem(cred.key))
        (workdir / f"{stem}.key").chmod(0o600)
    (workdir / "ccd").mkdir()
    for name, text in files.items():
        (workdir / "ccd" / name).write_text(text)
    srv = lab.add("srv")
    spaces = {}
    for i, stem in enumerate(certs):
        spaces[stem] = lab.add(stem)
        lab.veth(srv, spaces[stem], f"198.18.{i}.1/24", f"198.18.{i}.2/24")
        if i:
            spaces[stem].add_route("198.18.0.0/24", via=f"198.18.{i}.1")
    lines = server_lines(link_ip="198.18.0.1", extra=["client-config-dir ccd", *extra])
    if kind == "openvpn":
        server = start_openvpn(srv, workdir, "server", lines)
        assert server.wait_for("Initialization Sequence Completed", 15), server.text()[-3000:]
    else:
        trivpn = start_trivpn(srv, workdir, "server", lines)
        assert trivpn.wait_event("link_open", timeout=10), trivpn.text()
    clients = {stem: start_openvpn(spaces[stem], workdir, f"c-{stem}", client_lines(
        server_ip="198.18.0.1", cert=stem, extra=["verb 4", "auth-retry none"]))
        for stem in certs}
    logs = {}
    for stem, client in clients.items():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(
                needle in client.text() for needle in ("Initialization Sequence Completed",
                                                       "AUTH_FAILED")):
            time.sleep(0.1)
        logs[stem] = client.text()
    return logs


@pytest.mark.directive("client-config-dir", "push-remove", "push-reset")
@pytest.mark.parametrize("kind", ["openvpn", "trivpn"])
def test_same_ccd_gives_openvpn_clients_the_same_pushes_from_openvpn_and_trivpn(
        lab: NetnsLab, tmp_path: Path, kind: str) -> None:
    (tmp_path / "slash-common").write_text(SLASH_COMMON)
    logs = _side(lab, tmp_path, kind, CCD_FILES,
                 {"pr": "pr", "rs": "rs", "other": "other", "slash": "x/y"},
                 ['push "route 198.18.62.0 255.255.255.0"'])
    replies = {stem: _reply(text) for stem, text in logs.items()}

    # push-remove X drops every option starting with X: route-gateway too
    assert not [o for o in replies["pr"] if o.startswith("route")], replies["pr"]
    assert "topology subnet" in replies["pr"] and "ping 2" in replies["pr"]
    # push-reset drops the inherited list (keepalive's ping too) and the file's earlier pushes
    assert not [o for o in replies["rs"] if o.startswith(("ping", "route "))], replies["rs"]
    assert "route-gateway 198.18.8.1" in replies["rs"]
    assert any(o.startswith("ifconfig 198.18.8.") for o in replies["rs"])
    # DEFAULT serves a client without its own file, after the global pushes
    assert replies["other"].index("route 198.18.62.0 255.255.255.0") < \
        replies["other"].index("route 198.18.60.0 255.255.255.0")
    # common name "x/y" reads the file x_y; its `config` names a file as the server config does
    assert "ifconfig 198.18.8.42 255.255.255.0" in replies["slash"], replies["slash"]


@pytest.mark.directive("ccd-exclusive")
@pytest.mark.parametrize("kind", ["openvpn", "trivpn"])
def test_ccd_exclusive_refuses_clients_without_their_own_file_on_both(
        lab: NetnsLab, tmp_path: Path, kind: str) -> None:
    logs = _side(lab, tmp_path, kind, {"DEFAULT": "\n", "own": "\n"},
                 {"own": "own", "other": "other", "default": "DEFAULT"}, ["ccd-exclusive"])
    assert "Initialization Sequence Completed" in logs["own"], logs["own"][-3000:]
    for stem in ("other", "default"):
        assert "AUTH_FAILED" in logs[stem], (stem, logs[stem][-3000:])
        assert "Initialization Sequence Completed" not in logs[stem]


@pytest.mark.directive("client-config-dir")
@pytest.mark.parametrize("kind", ["openvpn", "trivpn"])
def test_a_bad_line_in_a_ccd_file_openvpn_skips_and_trivpn_refuses_the_client(
        lab: NetnsLab, tmp_path: Path, kind: str) -> None:
    logs = _side(lab, tmp_path, kind, {"bad": "frobnicate 1\n"}, {"bad": "bad"}, [])
    if kind == "openvpn":  # logged, the line skipped, the client served
        assert "Initialization Sequence Completed" in logs["bad"], logs["bad"][-3000:]
    else:  # trivpn: nothing accepted and ignored
        assert "AUTH_FAILED" in logs["bad"], logs["bad"][-3000:]


@pytest.mark.directive("client-config-dir")
def test_a_missing_client_config_dir_stops_the_server_on_both(
        lab: NetnsLab, tmp_path: Path) -> None:
    write_pki(tmp_path)
    out = openvpn_output(lab, tmp_path, [*SERVER, "--client-config-dir", "missing"])
    assert "--client-config-dir fails with 'missing'" in out, out[-3000:]
    assert "Initialization Sequence Completed" not in out
    conf = tmp_path / "server.conf"
    conf.write_text("\n".join(server_lines(link_ip="198.18.0.1",
                                           extra=["client-config-dir missing"])) + "\n")
    done = lab.add("srv").run([sys.executable, "-m", "trivpn", "run", str(conf)], check=False,
                              timeout=20)
    assert done.returncode == 2, done.stderr
    assert "server.conf:" in done.stderr and "'client-config-dir" in done.stderr
    assert "no such directory" in done.stderr, done.stderr
