"""OpenVPN 2.6's outcome on every corpus file is what the manifest (and README) says.

Client profiles are run through the real openvpn binary parse-only: in a fresh network
namespace with only a loopback interface (down), stdin closed, stopped at the first line that
shows its verdict ("Options error" = refused; reaching the resolve/connect phase, or asking
for a username = accepted). Server configs are started in fresh network and PID namespaces
(loopback only) and stopped by PID at "Initialization Sequence Completed" (accepted), an
options or fatal error (refused) or after a few seconds. Nothing can leave the namespaces;
no remote is ever contacted.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.config.corpus import SERVER_CORPUS, entries, openvpn_outcome, profile
from tests.conftest import require_netns, require_openvpn

pytestmark = pytest.mark.integration

ENTRIES = entries()
SERVER_ENTRIES = SERVER_CORPUS.entries()


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["id"] for e in ENTRIES])
def test_openvpn_gives_the_recorded_outcome(entry: dict[str, Any]) -> None:
    require_netns()  # root and working network namespaces (unshare --net)
    binary = require_openvpn()
    got = openvpn_outcome(profile(entry), binary)
    assert got.verdict == entry["openvpn"]["outcome"], got.reason


@pytest.mark.parametrize("entry", SERVER_ENTRIES, ids=[e["id"] for e in SERVER_ENTRIES])
def test_openvpn_gives_the_recorded_outcome_on_server_config(entry: dict[str, Any]) -> None:
    require_netns()
    binary = require_openvpn()
    got = SERVER_CORPUS.openvpn_outcome(SERVER_CORPUS.profile(entry), binary)
    assert (got.verdict, got.reason) == (entry["openvpn"]["outcome"],
                                         entry["openvpn"]["evidence"])
