"""``defer_peer_verdict`` (what tls-verify needs): the client holds its key method until the
caller has judged the peer's certificate; a refusal fails the key as a certificate failure."""

from __future__ import annotations

import pytest

from tests.protocol.sessionkit import Pair, client_config, server_config
from trivpn.protocol import events as ev


def _completed(pair: Pair) -> ev.TlsHandshakeComplete | None:
    return next((e for e in pair.client_events if isinstance(e, ev.TlsHandshakeComplete)), None)


@pytest.mark.directive("tls-verify")
def test_the_key_method_waits_for_an_accepting_verdict() -> None:
    pair = Pair.create(client_config(defer_peer_verdict=True), server_config())
    assert pair.run_until(lambda: _completed(pair) is not None, seconds=10)
    pair.run_to(pair.now + 3.0)  # nothing moves on without the verdict
    assert not pair.established()
    assert pair.server is not None and not any(
        isinstance(e, ev.ClientAuthenticated) for e in pair.server_events)
    done = _completed(pair)
    assert done is not None
    pair.client.peer_verdict(done.key_id, True, "", pair.now)
    pair._collect()
    assert pair.run_until(pair.established, seconds=10)


@pytest.mark.directive("tls-verify")
def test_a_refusing_verdict_fails_the_key_as_a_certificate_failure() -> None:
    pair = Pair.create(client_config(defer_peer_verdict=True), server_config())
    assert pair.run_until(lambda: _completed(pair) is not None, seconds=10)
    done = _completed(pair)
    assert done is not None
    pair.client.peer_verdict(done.key_id, False, "refused by the script", pair.now)
    pair._collect()
    rejected = [e for e in pair.client_events if isinstance(e, ev.PeerCertificateRejected)]
    failed = [e for e in pair.client_events if isinstance(e, ev.HandshakeFailed)]
    assert [(r.check, r.common_name) for r in rejected] == [("tls_verify", "server")]
    assert [(f.cause, f.detail) for f in failed] == [
        ("cert_verify_failed", "refused by the script")]
    assert pair.client.failed
    pair.client.peer_verdict(done.key_id, True, "", pair.now)  # too late: ignored
    assert not pair.established()


def _server_completed(pair: Pair) -> ev.TlsHandshakeComplete | None:
    return next((e for e in pair.server_events if isinstance(e, ev.TlsHandshakeComplete)), None)


@pytest.mark.directive("tls-verify")
def test_a_server_reads_the_clients_key_method_only_after_an_accepting_verdict() -> None:
    pair = Pair.create(client_config(), server_config(defer_peer_verdict=True))
    assert pair.run_until(lambda: _server_completed(pair) is not None, seconds=10)
    pair.run_to(pair.now + 3.0)
    assert pair.server is not None and not any(
        isinstance(e, ev.ClientAuthenticated) for e in pair.server_events)
    assert not pair.established()
    done = _server_completed(pair)
    assert done is not None
    pair.server.peer_verdict(done.key_id, True, "", pair.now)
    pair._collect()
    assert pair.run_until(pair.established, seconds=10)


@pytest.mark.directive("tls-verify")
def test_a_servers_refusing_verdict_fails_the_clients_key() -> None:
    pair = Pair.create(client_config(), server_config(defer_peer_verdict=True))
    assert pair.run_until(lambda: _server_completed(pair) is not None, seconds=10)
    done = _server_completed(pair)
    assert done is not None and pair.server is not None
    pair.server.peer_verdict(done.key_id, False, "refused by the script", pair.now)
    pair._collect()
    rejected = [e for e in pair.server_events if isinstance(e, ev.PeerCertificateRejected)]
    assert [(r.check, r.common_name) for r in rejected] == [("tls_verify", "client1")]
    assert not any(isinstance(e, ev.ClientAuthenticated) for e in pair.server_events)
    assert not pair.established()
