"""Fixtures shared by the interop tests: a namespace lab per test, and the real openvpn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_netns, require_openvpn
from tests.interop.openvpn import write_pki
from tests.netns import NetnsLab


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    """A fresh namespace lab, torn down (processes by PID, namespaces) after the test.
    Needs root and ``ip netns``: skips without, fails instead when ``CI`` is set."""
    require_netns()
    with NetnsLab() as netns_lab:
        yield netns_lab


@pytest.fixture
def openvpn_binary() -> None:
    """The test runs the real ``openvpn`` 2.6: skips without it, fails instead under ``CI``."""
    require_openvpn()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A temp dir holding the throwaway PKI of ``write_pki`` (ca.crt, server.*, client.*,
    static.key), where an openvpn run with ``--cd`` finds its files."""
    write_pki(tmp_path)
    return tmp_path
