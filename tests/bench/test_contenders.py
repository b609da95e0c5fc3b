"""Which programs the benchmark runs for each contender."""

from __future__ import annotations

import subprocess
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
    assert argv[:5] == ["env", f"PYTHONPATH={tmp_path / 'base'}", sys.executable, "-P", "-m"]
    conf = Path(argv[argv.index("run") + 1])
    assert conf.parent == tmp_path and "/" not in conf.name


@pytest.mark.parametrize("name", ["wireguard", "trivpn@/nonexistent/checkout"])
def test_an_unknown_contender_or_a_directory_without_trivpn_is_refused(name: str):
    with pytest.raises(ValueError):
        checkout_of(name)


def test_a_checkout_contender_runs_that_checkouts_code_even_from_another_checkout(
        tmp_path: Path):
    """Started from the repository root (which has its own trivpn/), the contender must still
    import the named checkout's trivpn."""
    package = tmp_path / "base" / "trivpn"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text("print(__file__)\n")
    argv = command(f"trivpn@{tmp_path / 'base'}", tmp_path, "server")
    repo_root = Path(__file__).resolve().parents[2]
    assert (repo_root / "trivpn" / "__main__.py").is_file()
    done = subprocess.run(argv, cwd=repo_root, capture_output=True, text=True, timeout=30,
                          check=True)
    assert done.stdout.strip() == str(package / "__main__.py"), done.stdout
