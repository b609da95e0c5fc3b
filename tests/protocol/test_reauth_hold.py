"""A server checking passwords holds a renegotiated key until the credentials it brought are
checked again (SessionConfig.hold_reauth, Session.reauth_verdict), as OpenVPN keeps such a key
KS_AUTH_DEFERRED and drops its data packets. Against a real openvpn client:
tests/interop/test_server_management_reauth.py."""

from __future__ import annotations

import pytest

from tests.protocol.sessionkit import Pair, client_config, events_of, server_config
from trivpn.protocol import events as ev

IP_PACKET = bytes.fromhex("4500001c0001000040017c4cc6120802c6120801" "0800f7ff00000000")


def _renegotiated_pair() -> tuple[Pair, ev.ClientReauthenticating]:
    pair = Pair.create(client_config(username="alice", password="s3cret"),
                       server_config(hold_reauth=True))
    assert pair.run_until(pair.established, seconds=60)
    pair.client.renegotiate(pair.now)
    assert pair.run_until(lambda: bool(events_of(pair.server_events,
                                                 ev.ClientReauthenticating)), seconds=30)
    pair.run_for(1.0)
    (reauth,) = events_of(pair.server_events, ev.ClientReauthenticating)
    return pair, reauth


def _client_to_server_gets_through(pair: Pair) -> bool:
    before = len(pair.server_tun)
    wire = pair.client.encrypt_data(IP_PACKET, pair.now)
    assert wire is not None
    pair.net.send(pair.now, "server", wire)
    pair.run_for(0.1)
    return len(pair.server_tun) > before


@pytest.mark.directive("management-client-auth")
def test_a_renegotiated_key_carries_no_data_until_the_reauth_verdict():
    pair, reauth = _renegotiated_pair()
    assert reauth.username == "alice" and reauth.password == "s3cret"
    assert not _client_to_server_gets_through(pair)  # the client sends on the held key
    assert pair.server is not None
    pair.server.reauth_verdict(reauth.key_id, True, pair.now)
    pair.run_for(0.5)
    assert _client_to_server_gets_through(pair)


@pytest.mark.directive("management-client-auth")
def test_a_refused_reauth_keeps_the_key_held_and_auth_failed_goes_on_it():
    pair, reauth = _renegotiated_pair()
    assert pair.server is not None
    pair.server.reauth_verdict(reauth.key_id, False, pair.now)
    pair.server.reject(pair.now, "session revoked", key_id=reauth.key_id)
    pair.run_for(1.0)
    assert not _client_to_server_gets_through(pair)
    assert any(isinstance(e, ev.AuthFailed) and "session revoked" in str(e)
               for e in pair.client_events), pair.client_events
