"""compat.versions (the offline lint) and compat.occ (options-string comparison) on constructed
profiles and options strings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.diagnostics.doctorkit import CLIENT, SERVER, by_id, context, write_config
from trivpn.config.reader import read_config
from trivpn.diagnostics.checks_compat import (
    CHECKS,
    compare,
    expected_remote,
    lint,
    parse_options_string,
)
from trivpn.diagnostics.compat_rules import ANY, RULES, TARGETS
from trivpn.diagnostics.model import CheckResult
from trivpn.protocol.keymethod import options_string

VERSIONS = by_id(CHECKS, "compat.versions")
OCC = by_id(CHECKS, "compat.occ")


async def versions(tmp_path: Path, text: str) -> CheckResult:
    return await VERSIONS.run(context(write_config(tmp_path, text)))


def findings(tmp_path: Path, text: str, role: str = "client") -> list[dict[str, Any]]:
    return lint(read_config(write_config(tmp_path, text)).directives, role)


def rules_of(found: list[dict[str, Any]]) -> set[str]:
    return {f["rule"] for f in found}


# ------------------------------------------------------------------------- the rule table


def test_every_rule_cites_a_public_source_and_only_2_6_claims_are_verified() -> None:
    for rule in RULES:
        assert rule.source.repo and rule.source.path and rule.source.where, rule.id
        assert "/work" not in rule.source.cite() and "shared" not in rule.source.cite()
        if rule.target == "openvpn-2.6":
            # every claim about 2.6 is checked by tests/interop/test_compat_claims.py
            assert rule.basis == "verified", rule.id
            assert (rule.openvpn_args and rule.openvpn_says) or rule.verified_in, rule.id
        else:
            assert rule.basis != "verified", rule.id
        if rule.target in ("openvpn-2.4", "openvpn-2.5"):
            assert rule.basis == "documented" and rule.source.path == "Changes.rst", rule.id
    assert len({r.id for r in RULES}) == len(RULES)
    assert {r.target for r in RULES} == set(TARGETS)


# ------------------------------------------------------------------------- compat.versions


async def test_healthy_2_6_client_profile_gives_no_warning(tmp_path: Path) -> None:
    result = await versions(tmp_path, CLIENT + "tls-crypt ta.key\n")
    assert result.status == "ok", result.summary
    assert "OpenVPN 2.6 reads this profile as written" in result.summary
    # the only note: no BF-CBC fallback for peers that cannot negotiate (2.4 documented)
    assert rules_of(result.evidence["findings"]) == {"v24.bf_cbc_default"}
    assert all(f["severity"] == "note" for f in result.evidence["findings"])


async def test_healthy_server_profile_gives_no_warning(tmp_path: Path) -> None:
    result = await versions(tmp_path, SERVER)
    assert result.status == "ok", result.summary
    assert result.evidence["findings"] == []


async def test_keysize_and_key_method_are_refused_by_2_6_with_line_and_fix(
        tmp_path: Path) -> None:
    result = await versions(tmp_path, CLIENT + "keysize 256\nkey-method 2\n")
    assert result.status == "warn"
    found = {f["rule"]: f for f in result.evidence["findings"]}
    assert found["v26.keysize"]["where"].endswith("test.conf:12")
    assert found["v26.key_method"]["where"].endswith("test.conf:13")
    assert found["v26.keysize"]["basis"] == "verified"
    assert "Delete the 'keysize' line" in result.fix
    assert "OpenVPN/openvpn Changes.rst" in found["v26.keysize"]["source"]


async def test_lint_runs_on_a_profile_that_does_not_parse(tmp_path: Path) -> None:
    path = write_config(tmp_path, CLIENT + "ncp-disable\nno-such-directive 1\n")
    ctx = context(path)
    assert ctx.options is None  # trivpn refuses the profile
    result = await VERSIONS.run(ctx)
    assert result.status == "warn"
    assert "v26.ncp_disable" in rules_of(result.evidence["findings"])


def test_cipher_missing_from_data_ciphers_is_ignored_by_2_6(tmp_path: Path) -> None:
    found = findings(tmp_path, CLIENT + "cipher AES-256-CBC\n")
    ignored = next(f for f in found if f["rule"] == "v26.cipher_ignored")
    assert ignored["severity"] == "warn"
    assert "AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305" in ignored["says"]
    assert "data-ciphers-fallback AES-256-CBC" in ignored["fix"]
    # 2.5 appended it instead (documented)
    assert "v25.cipher_appended" in rules_of(found)
    # the no-fallback note does not apply: the profile has a cipher
    assert "v24.bf_cbc_default" not in rules_of(found)


def test_cipher_listed_in_data_ciphers_or_in_p2p_mode_is_not_flagged(tmp_path: Path) -> None:
    listed = findings(tmp_path, CLIENT + "cipher AES-256-CBC\n"
                      "data-ciphers AES-256-GCM:?AES-256-CBC\n")
    assert "v26.cipher_ignored" not in rules_of(listed)
    p2p = findings(tmp_path, "dev tun\nremote 198.18.0.1\nsecret ta.key\ncipher AES-256-CBC\n",
                   role="server")
    assert "v26.cipher_ignored" not in rules_of(p2p)


@pytest.mark.parametrize(("line", "flagged"), [
    ("compress lz4-v2", True), ("compress lzo", True), ("comp-lzo", True),
    ("comp-lzo yes", True), ("comp-lzo no", False), ("compress", False),
    ("compress stub-v2", False)])
def test_compression_is_receive_only_in_2_6(tmp_path: Path, line: str, flagged: bool) -> None:
    found = rules_of(findings(tmp_path, CLIENT + line + "\n"))
    assert ("v26.compression_receive_only" in found) is flagged
    assert ("v24.compression_both_ways" in found) is flagged


def test_allow_compression_yes_keeps_2_6_compressing(tmp_path: Path) -> None:
    found = rules_of(findings(tmp_path, CLIENT + "compress lz4-v2\nallow-compression yes\n"))
    assert "v26.compression_receive_only" not in found
    assert "v24.new_in_25.allow-compression" in found


def test_ncp_ciphers_is_a_rename_note_not_a_warning(tmp_path: Path) -> None:
    found = findings(tmp_path, CLIENT + "ncp-ciphers AES-256-GCM:CHACHA20-POLY1305\n")
    renamed = next(f for f in found if f["rule"] == "v26.ncp_ciphers_renamed")
    assert renamed["severity"] == "note"
    assert "v24.chacha" in rules_of(found)


def test_bf_cbc_in_data_ciphers_is_refused_unless_optional(tmp_path: Path) -> None:
    assert "v26.bf_cbc" in rules_of(
        findings(tmp_path, CLIENT + "data-ciphers AES-256-GCM:BF-CBC\n"))
    assert "v26.bf_cbc" not in rules_of(
        findings(tmp_path, CLIENT + "data-ciphers AES-256-GCM:?BF-CBC\n"))


async def test_newer_directives_are_notes_for_2_4_and_2_5(tmp_path: Path) -> None:
    result = await versions(tmp_path, CLIENT + "data-ciphers AES-256-GCM\n"
                            "tls-crypt-v2 ta.key\npeer-fingerprint AB:CD\n")
    assert result.status == "ok"
    found = rules_of(result.evidence["findings"])
    assert {"v24.new_in_25.data-ciphers", "v24.new_in_25.tls-crypt-v2",
            "v24.new_in_26.peer-fingerprint", "v25.new_in_26.peer-fingerprint"} <= found
    assert "OpenVPN 2.4: different 1, refused 3" in result.summary


def test_tap_profile_is_refused_by_openvpn3_and_android(tmp_path: Path) -> None:
    found = findings(tmp_path, CLIENT.replace("dev tun", "dev tap0"))
    assert {"ov3.tap", "android.tap"} <= rules_of(found)
    says = next(f for f in found if f["rule"] == "ov3.tap")["says"]
    assert "OSI layer 2 tunnels are not currently supported" in says


def test_openvpn3_refuses_fragment_and_push_only_options_and_ignores_scripts(
        tmp_path: Path) -> None:
    found = findings(tmp_path, CLIENT + "fragment 1300\nping 10\nping-restart 60\n"
                     "script-security 2\nup /etc/openvpn/up.sh\nkeepalive 10 60\n")
    by_rule: dict[str, list[str]] = {}
    for f in found:
        by_rule.setdefault(f["rule"], []).append(f["directive"])
    assert by_rule["ov3.fragment"] == ["fragment"]
    assert by_rule["ov3.push_only"] == ["ping", "ping-restart"]
    assert by_rule["ov3.scripts"] == ["up"]
    assert by_rule["ov3.ignored"] == ["keepalive"]


def test_networkmanager_drops_unknown_lines_and_refuses_unknown_inline_blocks(
        tmp_path: Path) -> None:
    found = findings(tmp_path, CLIENT + "route-nopull\npull-filter ignore redirect-gateway\n"
                     "<connection>\nremote 198.18.0.3 1194\n</connection>\n")
    dropped = [f["directive"] for f in found if f["rule"] == "nm.dropped"]
    assert dropped == ["route-nopull", "pull-filter"]  # persist-key/-tun, nobind: harmless
    blob = [f for f in found if f["rule"] == "nm.blob"]
    assert [f["directive"] for f in blob] == ["connection"]
    assert "unsupported blob/xml element" in blob[0]["says"]
    assert "import-export.c" in blob[0]["source"]


def test_android_reads_comp_lzo_no_as_lzo(tmp_path: Path) -> None:
    found = findings(tmp_path, CLIENT + "comp-lzo no\n")
    assert "android.comp_lzo_no" in rules_of(found)
    assert "ConfigParser.java" in next(f for f in found
                                       if f["rule"] == "android.comp_lzo_no")["source"]


def test_client_software_rules_do_not_apply_to_server_profiles(tmp_path: Path) -> None:
    found = findings(tmp_path, SERVER + "dev-type tap\nstatus /run/openvpn.status\n",
                     role="server")
    assert not {f["rule"] for f in found if f["rule"].startswith(("ov3.", "nm.", "android."))}
    assert all(r.directives != (ANY,) or r.roles == ("client",) for r in RULES)


# ------------------------------------------------------------------------- compat.occ


def _occ(server: str, local: str, **extra: Any) -> dict[str, Any]:
    return {"local": local, "server": server, "negotiated_cipher": "AES-256-GCM",
            "pushed_cipher": "AES-256-GCM", "pushed_compression": None, "pushed_tun_mtu": None,
            **extra}


LOCAL = options_string(is_server=False)
SERVER_STRING = options_string(is_server=True)


def test_expected_remote_flips_role_keydir_and_tcp_side() -> None:
    local = parse_options_string(options_string(is_server=False, proto="tcp-client", keydir=1,
                                                tls_auth=True))
    remote = expected_remote(local)
    assert remote["proto"] == "TCPv4_SERVER" and remote["keydir"] == "0"
    assert "tls-server" in remote and "tls-client" not in remote
    assert expected_remote(parse_options_string(LOCAL)) == parse_options_string(SERVER_STRING)


async def test_matching_options_strings_are_ok(tmp_path: Path) -> None:
    ctx = context(write_config(tmp_path, CLIENT),
                  results={"tls.handshake": _result({"occ": _occ(SERVER_STRING, LOCAL)})})
    result = await OCC.run(ctx)
    assert result.status == "ok", result.summary
    assert result.evidence["mismatches"] == []


def _result(evidence: dict[str, Any], status: str = "ok",
            cid: str = "tls.handshake") -> CheckResult:
    return CheckResult(cid, status, "", evidence)  # type: ignore[arg-type]


def test_server_compression_not_pushed_is_a_warning_and_a_failure_when_traffic_failed() -> None:
    server = options_string(is_server=True, compression="stub-v2")
    [m] = compare(_occ(server, LOCAL), traffic="ok", config_name="c.conf")
    assert (m.item, m.severity, m.server, m.ours) == ("comp-lzo", "warn", "", None)
    assert "did not push it" in m.meaning
    [m] = compare(_occ(server, LOCAL), traffic="fail", config_name="c.conf")
    assert m.severity == "fail" and "why tunnel.traffic failed" in m.meaning
    pushed = compare(_occ(server, LOCAL, pushed_compression="stub-v2"), traffic="ok",
                     config_name="c.conf")
    assert [m.severity for m in pushed] == ["note"]


def test_tun_mtu_mismatch_warns_unless_the_server_pushed_its_value() -> None:
    server = options_string(is_server=True, tun_mtu=1400)
    found = {m.item: m for m in compare(_occ(server, LOCAL), traffic="ok", config_name="c.conf")}
    assert found["tun-mtu"].severity == "warn"
    assert "tun-mtu 1400" in found["tun-mtu"].fix
    assert found["link-mtu"].severity == "note"
    pushed = {m.item: m for m in compare(_occ(server, LOCAL, pushed_tun_mtu=1400),
                                         traffic="ok", config_name="c.conf")}
    assert pushed["tun-mtu"].severity == "note"


def test_dev_type_and_fragment_mismatches_fail() -> None:
    server = options_string(is_server=True, dev_type="tap", fragment=True)
    found = {m.item: m.severity for m in compare(_occ(server, LOCAL), traffic=None,
                                                 config_name="c.conf")}
    assert found["dev-type"] == "fail" and found["mtu-dynamic"] == "fail"


def test_auth_mismatch_matters_only_with_a_cbc_data_cipher() -> None:
    server = options_string(is_server=True, auth="SHA256")
    aead = {m.item: m for m in compare(_occ(server, LOCAL), traffic="ok", config_name="c")}
    assert aead["auth"].severity == "note"
    cbc = {m.item: m for m in compare(_occ(server, LOCAL, negotiated_cipher="AES-256-CBC"),
                                      traffic="fail", config_name="c")}
    assert cbc["auth"].severity == "fail" and "auth SHA256" in cbc["auth"].fix


async def test_cipher_line_not_used_by_the_negotiation_is_reported(tmp_path: Path) -> None:
    ctx = context(write_config(tmp_path, CLIENT + "cipher AES-128-CBC\n"),
                  results={"tls.handshake": _result({"occ": _occ(SERVER_STRING, LOCAL)})})
    result = await OCC.run(ctx)
    assert result.status == "warn"
    assert result.evidence["cipher_directive"]["configured"] == "AES-128-CBC"
    assert result.evidence["cipher_directive"]["in_data_ciphers"] is False
    assert "'cipher AES-128-CBC' is not used: the server negotiated AES-256-GCM" in \
        result.summary
    assert "data-ciphers AES-256-GCM" in result.fix


async def test_occ_is_skipped_without_the_servers_options_string(tmp_path: Path) -> None:
    ctx = context(write_config(tmp_path, CLIENT),
                  results={"tls.handshake": _result({"occ": {"local": LOCAL, "server": None}},
                                                    status="fail")})
    assert (await OCC.run(ctx)).status == "skip"


def test_tls_cipher_is_a_note_unless_tls_1_2_is_the_maximum(tmp_path: Path) -> None:
    line = "tls-cipher TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384\n"
    [note] = [f for f in findings(tmp_path, CLIENT + line)
              if f["rule"] == "v26.tls_cipher_tls12_only"]
    assert note["severity"] == "note" and "tls-ciphersuites" in note["fix"]
    capped = findings(tmp_path, CLIENT + line + "tls-version-max 1.2\n")
    assert "v26.tls_cipher_tls12_only" not in rules_of(capped)


def test_networkmanager_refuses_compress_stub_forms(tmp_path: Path) -> None:
    assert "nm.compress_stub" in rules_of(findings(tmp_path, CLIENT + "compress stub-v2\n"))
    assert "nm.compress_stub" not in rules_of(findings(tmp_path, CLIENT + "compress lz4\n"))
