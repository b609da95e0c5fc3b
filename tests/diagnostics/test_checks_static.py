"""The doctor on static-key configs without a network: the runner's mode gating, the forms
the static probe tries, and static.peer's reading of the probe's evidence."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from trivpn.config import load_config
from trivpn.diagnostics.checks_static import run_peer
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok
from trivpn.diagnostics.probe_static import CBC_CIPHERS, Form, static_inputs
from trivpn.diagnostics.runner import run_checks
from trivpn.protocol.digests import DIGESTS
from trivpn.protocol.statickey import StaticKey, format_static_key


def _config(tmp_path: Path, *lines: str) -> Path:
    (tmp_path / "static.key").write_text(format_static_key(StaticKey(os.urandom(256))))
    path = tmp_path / "peer.conf"
    path.write_text("\n".join(["dev tun", "remote 198.18.0.1 1194", "nobind",
                               "secret static.key 1", "cipher AES-256-CBC",
                               "ifconfig 198.18.9.2 198.18.9.1", *lines]) + "\n")
    return path


def _ctx(path: Path, results: dict[str, CheckResult] | None = None) -> DoctorContext:
    options = load_config(path)
    return DoctorContext(path, options, "client", 5.0, results or {})


def _always_ok(cid: str, **flags: Any) -> Check:
    async def run(ctx: DoctorContext) -> CheckResult:
        return ok(cid, "ran")
    return Check(cid, run, **flags)


async def test_checks_that_need_tls_are_skipped_on_a_static_config_naming_the_mode(
        tmp_path: Path) -> None:
    checks = (_always_ok("x.tls", needs_tls=True), _always_ok("x.plain"),
              _always_ok("x.after", depends_on=("x.tls",)))
    report = await run_checks(checks, _ctx(_config(tmp_path)))
    by_id = {r.id: r for r in report.checks}

    assert by_id["x.plain"].status == "ok"
    assert by_id["x.tls"].status == "skip"
    assert "static-key mode ('secret' at peer.conf line 4, no TLS)" in by_id["x.tls"].summary
    assert by_id["x.after"].summary == "skipped: x.tls was skipped (static-key mode: no TLS)"


async def test_static_only_checks_are_left_out_of_a_tls_run(tmp_path: Path) -> None:
    path = tmp_path / "tls.conf"
    path.write_text("client\ndev tun\nremote 198.18.0.1 1194\nca ca.crt\n")
    checks = (_always_ok("x.static", static_only=True), _always_ok("x.tls", needs_tls=True))
    report = await run_checks(checks, DoctorContext(path, None, "client", 5.0))

    assert [r.id for r in report.checks] == ["x.tls"]
    assert report.checks[0].status == "ok"


def test_the_probe_tries_the_configured_form_first_then_every_other(tmp_path: Path) -> None:
    inputs = static_inputs(load_config(_config(tmp_path, "auth SHA256")))
    forms = inputs.forms()

    assert forms[0] == Form(1, "AES-256-CBC", "SHA256")
    assert len(forms) == len(set(forms)) == 3 * len(CBC_CIPHERS) * len(DIGESTS)
    assert {f.direction for f in forms} == {None, 0, 1}
    assert "secret" in inputs.local_options.split(",")


def _port(entry: dict[str, Any]) -> CheckResult:
    base = {"sent_to": "198.18.0.1:1194/udp", "reply_from": "198.18.0.1:1194",
            "configured": {"direction": 1, "cipher": "AES-256-CBC", "auth": "SHA1"},
            "candidates": [], "forms_tried": 1, "peer_options": None,
            "local_options": "V4,dev-type tun,keydir 1,secret", "timeline": []}
    return ok("port.reachable", "x", targets=[{**base, "state": "open", **entry}])


@pytest.mark.parametrize(("answered", "differs", "fix"), [
    ({"direction": "bidirectional", "cipher": "AES-256-CBC", "auth": "SHA1"}, ["direction"],
     "without a direction"),
    ({"direction": 1, "cipher": "AES-128-CBC", "auth": "SHA1"}, ["cipher"],
     "'cipher AES-128-CBC' at peer.conf line 5"),
    ({"direction": 0, "cipher": "AES-256-CBC", "auth": "SHA512"}, ["direction", "auth"],
     "'auth SHA512'"),
])
async def test_static_peer_names_each_setting_the_answering_form_changes(
        tmp_path: Path, answered: dict[str, Any], differs: list[str], fix: str) -> None:
    port = _port({"reply_kind": "occ_reply_other", "answered_by": answered,
                  "peer_options": "V4,dev-type tun,keydir 0,secret"})
    result = await run_peer(_ctx(_config(tmp_path), {"port.reachable": port}))

    assert result.status == "fail"
    assert result.evidence["differs"] == differs
    assert fix in result.fix


async def test_static_peer_names_another_key_when_nothing_decrypts(tmp_path: Path) -> None:
    port = _port({"reply_kind": "undecryptable", "answered_by": None})
    result = await run_peer(_ctx(_config(tmp_path), {"port.reachable": port}))

    assert result.status == "fail"
    assert "another static key" in result.summary
    assert "peer.conf line 4" in result.fix
