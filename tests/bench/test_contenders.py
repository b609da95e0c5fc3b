"""Which programs the benchmark runs for each contender."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from trivpn.bench.contenders import checkout_of, command


def test_plain_contenders_run_this_trivpn_and_openvpn(tmp_path: Path):
    assert command("trivpn", tmp_path, "server")[:3] == [sys.executable, "-m", "trivpn"]
    assert command("openvpn", tmp_path, "server")[0] == "openvpn"
    assert checkout_of("trivpn") is None and checkout_of("openvpn") is None


def test_a_checkout_contender_runs_trivpn_from_that_checkout(tmp_path: Path):
    (tmp_path / "base" / "trivpn").mkdir(parents=True)
    (tmp_path / "base" / "trivpn" / "__init__.py").write_text("")
    name = f"trivpn@{tmp_path / 'base'}"
    argv = command(name, tmp_path, "client")
    assert argv[:4] == ["env", f"PYTHONPATH={tmp_path / 'base'}", sys.executable, "-m"]
    conf = Path(argv[argv.index("run") + 1])
    assert conf.parent == tmp_path and "/" not in conf.name


@pytest.mark.parametrize("name", ["wireguard", "trivpn@/nonexistent/checkout"])
def test_an_unknown_contender_or_a_directory_without_trivpn_is_refused(name: str):
    with pytest.raises(ValueError):
        checkout_of(name)
