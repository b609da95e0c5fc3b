"""Human and JSON output of a doctor report."""

from __future__ import annotations

import io
import json

import pytest

from trivpn.diagnostics.model import CheckResult, ok, problem, skip
from trivpn.diagnostics.render import evidence_lines, render_human, render_json, use_color
from trivpn.diagnostics.runner import make_report

WARN = problem("config.syntax", "warn", "comp-lzo is deprecated",
               explanation="Compression leaks secrets.", fix="Remove 'comp-lzo' at c.conf:3.",
               findings=["c.conf:3: 'comp-lzo' is deprecated"])
FAIL = problem("port.reachable", "fail", "nothing answers on 198.18.0.2:1194",
               explanation="The port is filtered.", fix="Open udp 1194 in the firewall.",
               state="filtered", sent_to="198.18.0.2:1194", retries=[2, 4])
REPORT = make_report([ok("env.tun", "works", path="/dev/net/tun"), WARN, FAIL,
                      skip("tls.handshake", "skipped: port.reachable failed (state=filtered)"),
                      CheckResult("dns.remote", "error", "check crashed: boom",
                                  {"exception": "RuntimeError"}, "e.", "f.")],
                     config="c.conf", role="client", duration_s=1.25)


def test_one_line_per_check_with_its_mark() -> None:
    lines = render_human(REPORT).splitlines()
    assert "[✓] env.tun: works" in lines
    assert "[!] config.syntax: comp-lzo is deprecated" in lines
    assert "[✗] port.reachable: nothing answers on 198.18.0.2:1194" in lines
    assert "[-] tls.handshake: skipped: port.reachable failed (state=filtered)" in lines
    assert "[?] dns.remote: check crashed: boom" in lines


def test_warnings_and_failures_show_evidence_explanation_and_fix() -> None:
    text = render_human(REPORT)
    block = text.split("[✗] port.reachable")[1].split("[-]")[0]
    assert "state: filtered" in block
    assert "sent_to: 198.18.0.2:1194" in block
    assert "retries: 2, 4" in block
    assert "Why: The port is filtered." in block
    assert "Fix: Open udp 1194 in the firewall." in block


def test_ok_and_skip_lines_have_no_details() -> None:
    text = render_human(REPORT)
    assert "path: /dev/net/tun" not in text
    after_skip = text.split("[-] tls.handshake")[1].splitlines()[1]
    assert after_skip.startswith("[?]")


def test_header_and_verdict_line() -> None:
    lines = render_human(REPORT).splitlines()
    assert lines[0] == "trivpn doctor 0.1.0 — c.conf (client)"
    assert lines[-1] == "Verdict: fail (1 ok, 1 warn, 1 fail, 1 skip, 1 error) in 1.2 s"


def test_no_escape_codes_without_colour_and_some_with() -> None:
    assert "\x1b[" not in render_human(REPORT, color=False)
    coloured = render_human(REPORT, color=True)
    assert "\x1b[31m[✗]\x1b[0m port.reachable" in coloured
    assert "\x1b[32m[✓]\x1b[0m env.tun" in coloured


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "env", "expected"), [
    (io.StringIO(), {}, False),
    (_Tty(), {}, True),
    (_Tty(), {"NO_COLOR": "1"}, False),
    (_Tty(), {"NO_COLOR": ""}, True),
])
def test_colour_only_on_a_terminal_without_no_color(stream: io.StringIO, env: dict[str, str],
                                                   expected: bool) -> None:
    assert use_color(stream, env) is expected


def test_nested_evidence_is_one_compact_line_per_item() -> None:
    lines = evidence_lines({"remotes": [{"host": "a", "addresses": ["198.18.0.2"]}],
                            "empty": [], "flag": True})
    assert lines == ["remotes:", "  - host=a, addresses=[198.18.0.2]", "empty: (none)",
                     "flag: yes"]


def test_json_has_exactly_the_documented_shape() -> None:
    data = json.loads(render_json(REPORT))
    assert list(data) == ["version", "config", "role", "verdict", "duration_s", "checks"]
    assert data["verdict"] == "fail"
    assert data["role"] == "client"
    assert [c["status"] for c in data["checks"]] == ["ok", "warn", "fail", "skip", "error"]
    for check in data["checks"]:
        assert list(check) == ["id", "status", "summary", "evidence", "explanation", "fix",
                               "duration_s"]
    assert data["checks"][2]["evidence"] == {"state": "filtered", "sent_to": "198.18.0.2:1194",
                                             "retries": [2, 4]}


def test_json_is_one_line() -> None:
    assert render_json(REPORT).count("\n") == 1
