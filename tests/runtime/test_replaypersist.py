"""replay-persist's file (OpenVPN packet_id.c, packet_id_persist_*; against openvpn 2.6 in
tests/interop/test_more_directives.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trivpn.protocol.errors import ReplayError
from trivpn.protocol.replay import ReplayWindow
from trivpn.runtime.errors import RuntimeSetupError
from trivpn.runtime.replaypersist import ReplayPersist


@pytest.mark.directive("replay-persist")
def test_the_state_survives_a_reopen_and_the_file_is_locked_while_open(tmp_path: Path):
    path = tmp_path / "replay.dat"
    first = ReplayPersist(path)
    assert first.state is None and (path.stat().st_mode & 0o777) == 0o600
    assert first.save((1_800_000_000, 7)) and not first.save((1_800_000_000, 7))
    with pytest.raises(RuntimeSetupError, match="Cannot obtain exclusive lock"):
        ReplayPersist(path)
    first.close()
    again = ReplayPersist(path)
    assert again.state == (1_800_000_000, 7) and path.stat().st_size == 16
    again.close()


@pytest.mark.directive("replay-persist")
def test_a_restored_window_refuses_the_old_sequence_and_takes_a_newer_one():
    window = ReplayWindow()
    window.restore(1_800_000_000, 7)
    for old in ((7, 1_800_000_000), (3, 1_800_000_000), (99, 1_799_999_999)):
        with pytest.raises(ReplayError):
            window.check(*old[:1], 0.0, old[1])
    window.check_and_add(8, 0.0, 1_800_000_000)
    window.check_and_add(1, 0.0, 1_800_000_001)
