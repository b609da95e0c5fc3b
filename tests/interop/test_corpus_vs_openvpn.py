"""OpenVPN 2.6's outcome on every corpus profile is what the manifest (and README) says.

Each profile is run through the real openvpn binary parse-only: in a fresh network namespace
with only a loopback interface (down), stdin closed, stopped at the first line that shows its
verdict ("Options error" = refused; reaching the resolve/connect phase, or asking for a
username = accepted). Nothing can leave the namespace; the remotes are never contacted.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.config.corpus import entries, openvpn_outcome, profile
from tests.conftest import require_netns, require_openvpn

pytestmark = pytest.mark.integration

ENTRIES = entries()


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_openvpn_gives_the_recorded_outcome(entry: dict[str, Any]) -> None:
    require_netns()  # root and working network namespaces (unshare --net)
    binary = require_openvpn()
    got = openvpn_outcome(profile(entry), binary)
    assert got.verdict == entry["openvpn"]["outcome"], got.reason
