"""Status and pool-persist files are never written through a symlink someone planted."""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

import pytest

from trivpn.runtime import files
from trivpn.runtime.pool import write_persist_file
from trivpn.runtime.status import StatusFile, write_atomically


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_text("precious\n")
    return path


@pytest.mark.directive("ifconfig-pool-persist")
def test_pool_persist_ignores_a_symlink_planted_at_the_old_temporary_name(tmp_path: Path,
                                                                         victim: Path):
    target = tmp_path / "ipp.txt"
    # the name the writer used to use: predictable from the pid
    (tmp_path / f".ipp.txt.{os.getpid()}.tmp").symlink_to(victim)
    write_persist_file(target, [("alice", ipaddress.IPv4Address("198.18.8.2"))])
    assert victim.read_text() == "precious\n"
    assert target.read_text() == "alice,198.18.8.2,\n"


@pytest.mark.directive("ifconfig-pool-persist", "status")
@pytest.mark.parametrize("writer", ["status", "pool"])
def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path, victim: Path,
                                                          writer: str):
    target = tmp_path / "out.txt"
    target.symlink_to(victim)
    if writer == "status":
        write_atomically(target, ["END"])
    else:
        write_persist_file(target, [])
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink()
    assert stat.S_IMODE(target.stat().st_mode) == files.FILE_MODE
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.directive("status")
def test_status_file_refuses_a_symlink_at_its_path(tmp_path: Path, victim: Path):
    target = tmp_path / "status.log"
    target.symlink_to(victim)
    with pytest.raises(OSError):
        StatusFile(target)
    assert victim.read_text() == "precious\n"


@pytest.mark.directive("status")
def test_a_new_status_file_gets_mode_0600(tmp_path: Path):
    old = os.umask(0)
    try:
        status = StatusFile(tmp_path / "status.log")
    finally:
        os.umask(old)
    status.write(["END"])
    status.close()
    assert stat.S_IMODE((tmp_path / "status.log").stat().st_mode) == 0o600


@pytest.mark.directive("ifconfig-pool-persist", "user", "group")
def test_pool_persist_opened_before_a_privilege_drop_stays_writable(tmp_path: Path):
    import subprocess
    import sys

    from tests.conftest import require_root

    require_root()  # drops privileges (CI: a failure, never a skip)
    tmp_path.chmod(0o755)  # root's directory: nobody can create nothing in it
    target = tmp_path / "ipp.txt"
    code = (
        "import os\n"
        "from tests.config.helpers import SERVER_BASE\n"
        "from trivpn.config import parse_config\n"
        "from trivpn.logging import get_logger\n"
        "from trivpn.runtime.server import Server\n"
        f"o = parse_config(SERVER_BASE + 'ifconfig-pool-persist {target} 60\\n', 's.conf')\n"
        "server = Server(o, get_logger())\n"
        "server.persistence.open_for_drop()\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "server.allocator.acquire('alice', 1.0)\n"
        "server.persistence.write()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "pool_persist_write_failed" not in done.stdout + done.stderr
    assert target.read_text() == "alice,198.18.8.2,\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
