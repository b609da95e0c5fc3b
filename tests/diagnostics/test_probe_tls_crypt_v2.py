"""The doctor's reset probe speaks tls-crypt-v2 when the config has a client key."""

from __future__ import annotations

import os
from dataclasses import replace
from itertools import count

import pytest

from tests.protocol.sessionkit import server_config
from trivpn.diagnostics.probe import client_reset
from trivpn.protocol.admission import PreauthLimits
from trivpn.protocol.gateway import Gateway, GatewayLimits, Reply
from trivpn.protocol.statickey import StaticKey
from trivpn.protocol.tlscryptv2 import ClientKey, ServerKey, client_wrap


@pytest.mark.directive("tls-crypt-v2")
def test_probe_reset_with_a_client_key_gets_a_stateless_answer():
    server = ServerKey(os.urandom(128))
    key = StaticKey(os.urandom(256))
    wrap = client_wrap(ClientKey(key, server.wrap_client_key(key, b"\x00x")))
    limits = GatewayLimits(reset=(10, 10.0), connect=None,
                           preauth=PreauthLimits(total=4, per_source=4))
    gateway: Gateway[object, int] = Gateway(b"s" * 32, limits,  # type: ignore[type-var]
                                            config=replace(server_config(), wrap=server))
    keys = count()
    decision = gateway.datagram(client_reset(wrap, b"\x01" * 8, 1), ("198.18.0.2", 5000), 0.0,
                                peer=None, by_peer_id={}, new_key=lambda: next(keys))
    assert isinstance(decision, Reply)
