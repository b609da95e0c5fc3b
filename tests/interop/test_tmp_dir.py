"""tmp-dir: where a trivpn server writes the temporary files it hands to scripts (here the
metadata file of tls-crypt-v2-verify), as OpenVPN does (tls_crypt.c,
tls_crypt_v2_verify_metadata(): platform_create_temp_file(opt->tmp_dir, ...))."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.interop.openvpn import start_openvpn, write_pki
from tests.interop.serverkit import client_lines, server_lines
from tests.interop.trivpnproc import start_trivpn
from tests.netns import NetnsLab

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("openvpn_binary")]


def _verifier_server(lab: NetnsLab, workdir: Path, extra: list[str]) -> Path:
    subprocess.run([sys.executable, "-m", "trivpn", "pki", "genkey", "tls-crypt-v2-server",
                    "v2server.key"], cwd=workdir, check=True, capture_output=True)
    subprocess.run(["openvpn", "--tls-crypt-v2", "v2server.key", "--genkey",
                    "tls-crypt-v2-client", "c.key"], cwd=workdir, check=True,
                   capture_output=True)
    seen = workdir / "seen.txt"
    verify = workdir / "verify.sh"
    verify.write_text(f'#!/bin/sh\necho "${{metadata_file%/*}}" >> {seen}\nexit 0\n')
    verify.chmod(0o755)
    srv, cli = lab.add("srv"), lab.add("cli")
    lab.veth(srv, cli, "198.18.10.1/24", "198.18.10.2/24")
    write_pki(workdir)
    server = start_trivpn(srv, workdir, "server", server_lines(
        link_ip="0.0.0.0", extra=["tls-crypt-v2 v2server.key", "script-security 2",
                                  f"tls-crypt-v2-verify {verify}", *extra]))
    assert server.wait_event("link_open", timeout=10), server.text()
    client = start_openvpn(cli, workdir, "client", client_lines(
        server_ip="198.18.10.1", extra=["tls-crypt-v2 c.key"]))
    assert client.wait_for("Initialization Sequence Completed", timeout=20), \
        server.text()[-3000:]
    return seen


@pytest.mark.directive("tmp-dir")
def test_tmp_dir_holds_the_files_the_server_gives_its_scripts(lab: NetnsLab,
                                                              tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen = _verifier_server(lab, tmp_path, [f"tmp-dir {scratch}"])
    assert seen.read_text().split() == [str(scratch)]
    assert list(scratch.iterdir()) == []  # removed once the script is done


@pytest.mark.directive("tmp-dir")
def test_without_tmp_dir_the_system_temporary_directory_is_used(lab: NetnsLab,
                                                                tmp_path: Path) -> None:
    seen = _verifier_server(lab, tmp_path, [])
    assert seen.read_text().split() == [tempfile.gettempdir()]
