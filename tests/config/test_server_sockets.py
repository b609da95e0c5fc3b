"""Parsing the server socket directives: multihome, port-share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.helpers import server
from trivpn.config import ConfigError
from trivpn.config.options import PortShare


@pytest.mark.directive("multihome")
def test_multihome_is_off_unless_written() -> None:
    assert server().multihome is False
    assert server("multihome\n").multihome is True


@pytest.mark.directive("port-share")
def test_port_share_reads_host_port_and_a_journal_directory_beside_the_config() -> None:
    o = server("proto tcp-server\nport-share 198.18.0.5 8443 journal\n")
    assert o.port_share == PortShare("198.18.0.5", 8443, o.base_dir / "journal")
    assert server("proto tcp-server\nport-share web.example 443\n").port_share == \
        PortShare("web.example", 443, None)
    assert server("proto tcp-server\nport-share h 1 /var/ps\n").port_share == \
        PortShare("h", 1, Path("/var/ps"))


@pytest.mark.directive("port-share")
def test_port_share_with_a_bad_port_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"server.conf:9"):
        server("proto tcp-server\nport-share 198.18.0.5 70000\n")
