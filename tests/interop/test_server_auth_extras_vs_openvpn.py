"""Server authentication details checked against the real openvpn 2.6 binary: where the
files a server hands to its scripts go with ``tmp-dir`` (the via-file credentials, the deferred
auth control files, client-connect's dynamic config file), and what OpenVPN's option checks say
about ``auth-gen-token`` (renewal time against ``hand-window``, ``reneg-sec 0``) and
``auth-gen-token-secret`` without ``auth-gen-token``.

Lab (198.18.0.0/15 only): per side i (0 theirs, 1 ours) srv 198.18.7i.1 -- cli 198.18.7i.2.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.openvpn import as_config, openvpn_output, start_openvpn, write_pki
from tests.interop.serverkit import client_lines, server_lines, start_side_server
from tests.interop.test_server_auth import _creds
from tests.netns import NetnsLab
from trivpn.config import ConfigError, load_config

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]

# records the directory of every file the server handed over, one "WHAT DIR" line each
SCRIPT = """#!/bin/sh
log="{log}"
case "$script_type" in
user-pass-verify)
    echo "credentials $(dirname "$1")" >> "$log"
    echo "control $(dirname "$auth_control_file")" >> "$log"
    echo "pending $(dirname "$auth_pending_file")" >> "$log"
    echo "reason $(dirname "$auth_failed_reason_file")" >> "$log" ;;
client-connect)
    echo "client-connect $(dirname "$1")" >> "$log"
    echo "deferred $(dirname "$client_connect_deferred_file")" >> "$log" ;;
esac
exit 0
"""


@pytest.mark.directive("tmp-dir", "auth-user-pass-verify", "client-connect")
def test_tmp_dir_holds_the_credentials_control_and_client_connect_files_like_openvpn(
        lab: NetnsLab, tmp_path: Path) -> None:
    write_pki(tmp_path)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for i, who in enumerate(("theirs", "ours")):
        log = tmp_path / f"{who}.log"
        script = tmp_path / f"record-{who}.sh"
        script.write_text(SCRIPT.format(log=log))
        script.chmod(0o755)
        srv, cli = lab.add(f"srv{who[0]}"), lab.add(f"cli{who[0]}")
        lab.veth(srv, cli, f"198.18.7{i}.1/24", f"198.18.7{i}.2/24")
        lines = server_lines(link_ip=f"198.18.7{i}.1", extra=[
            "script-security 2", f"tmp-dir {scratch}", f"auth-user-pass-verify {script} via-file",
            f"client-connect {script}"])
        start_side_server(srv, tmp_path, who, lines)
        client = start_openvpn(cli, tmp_path, f"client-{who}", client_lines(
            server_ip=f"198.18.7{i}.1",
            extra=[f"auth-user-pass {_creds(tmp_path, who, 'alice', 's3cret')}"]))
        assert client.wait_for("Initialization Sequence Completed", 20), client.text()[-3000:]
        assert log.read_text().splitlines() == [
            f"{what} {scratch}" for what in ("credentials", "control", "pending", "reason",
                                             "client-connect", "deferred")], who
        assert not list(scratch.iterdir()), who  # all removed again


SERVER = ["--server", "198.18.8.0", "255.255.255.0", "--topology", "subnet", "--dev", "tun",
          "--proto", "udp", "--port", "1194", "--ca", "ca.crt", "--cert", "server.crt", "--key",
          "server.key", "--dh", "none", "--script-security", "3", "--auth-user-pass-verify",
          "/bin/true", "via-env", "--verb", "3"]


@pytest.mark.directive("auth-gen-token")
@pytest.mark.parametrize(("extra", "theirs"), [
    (["--auth-gen-token", "--reneg-sec", "100"],
     "--auth-gen-token renewal time needs to be at least  two times --hand-window (60)."),
    (["--auth-gen-token", "0", "100"],
     "--auth-gen-token renewal time needs to be at least  two times --hand-window (60)."),
    (["--auth-gen-token", "--reneg-sec", "0"],
     "--auth-gen-token needs a non-infinite --renegotiate_seconds setting"),
], ids=["reneg-sec", "renewal", "reneg-sec-0"])
def test_auth_gen_token_renewal_checks_match_openvpn(lab: NetnsLab, tmp_path: Path,
                                                     extra: list[str], theirs: str) -> None:
    write_pki(tmp_path)
    out = openvpn_output(lab, tmp_path, [*SERVER, *extra])
    assert f"Options error: {theirs}" in out, out[-3000:]
    conf = tmp_path / "t.conf"
    conf.write_text(as_config([*SERVER, *extra]))
    with pytest.raises(ConfigError) as info:
        load_config(conf)
    assert theirs in str(info.value)


@pytest.mark.directive("auth-gen-token")
def test_auth_gen_token_renewal_of_twice_hand_window_is_accepted_like_openvpn(
        lab: NetnsLab, tmp_path: Path) -> None:
    write_pki(tmp_path)
    extra = ["--auth-gen-token", "0", "120"]
    assert "Initialization Sequence Completed" in openvpn_output(lab, tmp_path, [*SERVER, *extra])
    conf = tmp_path / "t.conf"
    conf.write_text(as_config([*SERVER, *extra]))
    assert load_config(conf).auth_token_renewal == 120


@pytest.mark.directive("auth-gen-token-secret")
def test_auth_gen_token_secret_without_auth_gen_token_is_not_even_read_like_openvpn(
        lab: NetnsLab, tmp_path: Path) -> None:
    write_pki(tmp_path)
    extra = ["--auth-gen-token-secret", str(tmp_path / "no-such-secret.key")]
    assert "Initialization Sequence Completed" in openvpn_output(lab, tmp_path, [*SERVER, *extra])
    conf = tmp_path / "t.conf"
    conf.write_text(as_config([*SERVER, *extra]))
    o = load_config(conf)
    assert o.auth_gen_token_secret is None
    assert any("does nothing without 'auth-gen-token'" in w.message for w in o.warnings)
