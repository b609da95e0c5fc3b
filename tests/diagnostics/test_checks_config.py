"""config.syntax and config.files against constructed fault configs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.diagnostics.doctorkit import CLIENT, SERVER, by_id, context, write_config, write_pki
from trivpn.diagnostics.checks_config import CHECKS, dh_prime_bits
from trivpn.diagnostics.model import CheckResult

SYNTAX = by_id(CHECKS, "config.syntax")
FILES = by_id(CHECKS, "config.files")


@pytest.fixture
def pki_dir(tmp_path: Path) -> Path:
    write_pki(tmp_path)
    return tmp_path


async def syntax(directory: Path, text: str) -> CheckResult:
    path = write_config(directory, text)
    return await SYNTAX.run(context(path))


async def files(directory: Path, text: str) -> CheckResult:
    return await FILES.run(context(write_config(directory, text)))


async def test_clean_client_config_is_ok(pki_dir: Path) -> None:
    result = await syntax(pki_dir, CLIENT)
    assert result.status == "ok"
    assert result.evidence["role"] == "client"


async def test_clean_server_config_is_ok(pki_dir: Path) -> None:
    assert (await syntax(pki_dir, SERVER)).status == "ok"


async def test_parse_error_fails_with_file_and_line(pki_dir: Path) -> None:
    path = write_config(pki_dir, CLIENT + "port seventy\n")
    result = await SYNTAX.run(context(path))
    assert result.status == "fail"
    assert result.evidence["file"] == str(path)
    assert result.evidence["line"] == 12
    assert "'port'" in result.evidence["reason"]
    assert f"{path}:12" in result.fix


async def test_contradictory_roles_fail(pki_dir: Path) -> None:
    result = await syntax(pki_dir, CLIENT + "tls-server\n")
    assert result.status == "fail"
    assert result.evidence["line"] == 12


@pytest.mark.parametrize(("extra", "needle", "explains"), [
    ("comp-lzo no\n", "comp-lzo", "VORACLE"),
    ("cipher BF-CBC\ndata-ciphers AES-256-GCM:BF-CBC\n", "BF-CBC", "SWEET32"),
    ("auth MD5\n", "MD5", "warns"),
])
async def test_weak_or_deprecated_settings_warn(pki_dir: Path, extra: str, needle: str,
                                                explains: str) -> None:
    result = await syntax(pki_dir, CLIENT + extra)
    assert result.status == "warn"
    assert any(needle in f for f in result.evidence["findings"])
    assert explains in result.explanation


async def test_missing_remote_cert_tls_warns_of_impersonation(pki_dir: Path) -> None:
    result = await syntax(pki_dir, CLIENT.replace("remote-cert-tls server\n", ""))
    assert result.status == "warn"
    assert "impersonate" in result.explanation
    assert "remote-cert-tls server" in result.fix


async def test_remote_cert_tls_naming_own_role_fails(pki_dir: Path) -> None:
    result = await syntax(pki_dir, CLIENT.replace("remote-cert-tls server",
                                                  "remote-cert-tls client"))
    assert result.status == "fail"
    assert "remote-cert-tls server" in result.fix
    assert any(":9:" in f for f in result.evidence["findings"])


async def test_user_without_persist_options_warns(pki_dir: Path) -> None:
    text = CLIENT.replace("persist-key\npersist-tun\n", "") + "user nobody\n"
    result = await syntax(pki_dir, text)
    assert result.status == "warn"
    assert "'persist-key' and 'persist-tun'" in result.fix
    assert any("user" in f for f in result.evidence["findings"])


async def test_user_with_persist_options_is_fine(pki_dir: Path) -> None:
    assert (await syntax(pki_dir, CLIENT + "user nobody\n")).status == "ok"


async def test_topology_net30_on_a_server_warns(pki_dir: Path) -> None:
    result = await syntax(pki_dir, SERVER.replace("topology subnet\n", ""))
    assert result.status == "warn"
    assert "topology subnet" in result.fix


@pytest.fixture(scope="module")
def dh1024(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dh") / "dh1024.pem"
    subprocess.run(["openssl", "dhparam", "-out", str(path), "1024"], check=True,
                   capture_output=True, timeout=60)
    return path


def test_dh_prime_size_is_read_from_pem(dh1024: Path) -> None:
    assert dh_prime_bits(dh1024.read_text()) == 1024
    assert dh_prime_bits("not a pem") is None


async def test_1024_bit_dh_file_warns(pki_dir: Path, dh1024: Path) -> None:
    result = await syntax(pki_dir, SERVER.replace("dh none", f"dh {dh1024}"))
    assert result.status == "warn"
    assert any("1024-bit" in f for f in result.evidence["findings"])
    assert "dh none" in result.fix


async def test_pushed_comp_lzo_warns(pki_dir: Path) -> None:
    result = await syntax(pki_dir, SERVER + 'push "comp-lzo yes"\n')
    assert result.status == "warn"
    assert "push" in result.fix


# --- config.files -----------------------------------------------------------------------------

async def test_all_files_present_is_ok(pki_dir: Path) -> None:
    result = await files(pki_dir, CLIENT + "tls-crypt ta.key\n")
    assert result.status == "ok"
    assert [f["directive"] for f in result.evidence["files"]] == ["ca", "cert", "key",
                                                                   "tls-crypt"]


async def test_missing_file_fails_naming_directive_and_line(pki_dir: Path) -> None:
    (pki_dir / "ca.crt").unlink()
    result = await files(pki_dir, CLIENT)
    assert result.status == "fail"
    assert "does not exist" in result.summary
    bad = result.evidence["files"][0]
    assert bad["directive"] == "ca" and bad["where"].endswith("test.conf:6")
    assert "'ca' at" in result.fix


async def test_unreadable_key_fails(pki_dir: Path) -> None:
    # A directory cannot be read as a file, whoever runs the test (root reads any mode).
    (pki_dir / "client.key").unlink()
    (pki_dir / "client.key").mkdir()
    result = await files(pki_dir, CLIENT)
    assert result.status == "fail"
    assert "directory" in result.summary


async def test_world_readable_key_warns_with_chmod(pki_dir: Path) -> None:
    (pki_dir / "client.key").chmod(0o644)
    result = await files(pki_dir, CLIENT)
    assert result.status == "warn"
    assert f"chmod 600 {pki_dir / 'client.key'}" in result.fix
    assert result.evidence["files"][2]["mode"] == "0644"


async def test_world_readable_certificate_is_fine(pki_dir: Path) -> None:
    (pki_dir / "client.crt").chmod(0o644)
    assert (await files(pki_dir, CLIENT)).status == "ok"


async def test_malformed_static_key_fails(pki_dir: Path) -> None:
    bad = pki_dir / "bad.key"
    bad.write_text("-----BEGIN OpenVPN Static key V1-----\nzz\n"
                   "-----END OpenVPN Static key V1-----\n")
    bad.chmod(0o600)
    result = await files(pki_dir, CLIENT + "tls-auth bad.key 1\n")
    assert result.status == "fail"
    assert "not an OpenVPN static key" in result.summary
    assert "openvpn --genkey secret" in result.fix


async def test_inline_static_key_is_parsed(pki_dir: Path) -> None:
    text = CLIENT + "<tls-crypt>\nnot a key\n</tls-crypt>\n"
    result = await files(pki_dir, text)
    assert result.status == "fail"
    assert result.evidence["files"][-1]["source"] == "inline <tls-crypt> block"


async def test_files_check_skips_without_options(pki_dir: Path) -> None:
    path = write_config(pki_dir, "garbage directive\n")
    assert (await FILES.run(context(path))).status == "skip"


async def test_every_line_in_error_is_listed_with_its_line_and_the_rest_still_parses(
        tmp_path: Path) -> None:
    from trivpn.commands.doctor import build_context

    text = CLIENT + "ping-restart soon\nverb loud\n"
    path = write_config(tmp_path, text)
    ctx = build_context(path, 5.0)
    result = await by_id(CHECKS, "config.syntax").run(ctx)

    assert ctx.options is not None and ctx.options.remotes
    n = len(text.splitlines())
    assert result.status == "fail"
    assert [e.split(":")[1] for e in result.evidence["errors"]] == [str(n - 1), str(n)]
    assert f"Edit {path}:{n - 1}" in result.fix and f"Edit {path}:{n}" in result.fix
