"""enter_netns: create sockets in a test namespace from this process and thread."""

from __future__ import annotations

import os
import socket

import pytest

from tests.netns import NetnsPair
from trivpn.runtime.netns import NetnsError, enter_netns


def _thread_ns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_socket_created_inside_stays_in_namespace(netns_pair: NetnsPair) -> None:
    with enter_netns(netns_pair.a.name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.bind(("198.18.0.1", 0))  # only namespace a has this address
        assert sock.getsockname()[0] == "198.18.0.1"


def test_thread_returns_to_original_namespace(netns_pair: NetnsPair) -> None:
    before = _thread_ns()
    with enter_netns(netns_pair.a.name):
        assert _thread_ns() != before
    assert _thread_ns() == before


def test_thread_returns_even_when_block_raises(netns_pair: NetnsPair) -> None:
    before = _thread_ns()
    with pytest.raises(KeyError), enter_netns(netns_pair.b.name):
        raise KeyError("boom")
    assert _thread_ns() == before


def test_missing_namespace_is_an_error_naming_it(netns_pair: NetnsPair) -> None:
    before = _thread_ns()
    missing = netns_pair.a.name + "-missing"
    with pytest.raises(NetnsError) as info, enter_netns(missing):
        pass
    assert info.value.name == missing
    assert not os.path.exists(f"/run/netns/{missing}")  # never created on the fly
    assert _thread_ns() == before


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".."])
def test_path_like_names_are_rejected(name: str) -> None:
    with pytest.raises(NetnsError), enter_netns(name):
        pass
