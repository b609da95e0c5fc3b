"""SessionPump: a session's output reaches the owner's callbacks, its timers run on time."""

from __future__ import annotations

import trio
import trio.testing

from tests.protocol.sessionkit import SUBNET_PUSH, client_config, server_config
from trivpn.protocol import events as ev
from trivpn.protocol.session import Session
from trivpn.runtime.pump import SessionPump


async def test_two_pumped_sessions_handshake_and_exchange_data(
        autojump_clock: trio.testing.MockClock):
    now = trio.current_time()
    client, server = Session(client_config(), now), Session(server_config(), now)
    events: dict[str, list[ev.Event]] = {"client": [], "server": []}
    tun: dict[str, list[bytes]] = {"client": [], "server": []}
    to_client, from_server = trio.open_memory_channel[bytes](100)
    to_server, from_client = trio.open_memory_channel[bytes](100)

    def pump_for(name: str, session: Session,
                 out: trio.MemorySendChannel[bytes]) -> SessionPump:
        async def send(datagrams: list[bytes]) -> None:
            for d in datagrams:
                await out.send(d)

        def on_event(event: ev.Event) -> None:
            events[name].append(event)
            if isinstance(event, ev.ClientAuthenticated):
                session.accept(trio.current_time(), SUBNET_PUSH, peer_id=0)
        return SessionPump(session, send=send, deliver=tun[name].extend, on_event=on_event)

    pumps = {"client": pump_for("client", client, to_server),
             "server": pump_for("server", server, to_client)}

    async def feed(name: str, source: trio.MemoryReceiveChannel[bytes]) -> None:
        async for datagram in source:
            pumps[name].receive([datagram], trio.current_time())
            await pumps[name].flush()

    async with trio.open_nursery() as nursery:
        for name, source in (("client", from_server), ("server", from_client)):
            nursery.start_soon(feed, name, source)
            nursery.start_soon(pumps[name].run_timers)
        client.start(trio.current_time())
        await pumps["client"].flush()
        with trio.fail_after(10):
            while not (client.established and server.established):
                await trio.sleep(0.01)
        wire = client.encrypt_data(b"\x45hello", trio.current_time())
        assert wire is not None
        await to_server.send(wire)
        with trio.fail_after(1):
            while not tun["server"]:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert tun["server"] == [b"\x45hello"]
    assert any(isinstance(e, ev.PushReceived) for e in events["client"])


async def test_run_timers_wakes_the_session_at_its_deadline(
        autojump_clock: trio.testing.MockClock):
    """A client whose server never answers retransmits its reset when the session's timer
    says so, not earlier and not later."""
    now = trio.current_time()
    session = Session(client_config(tls_timeout=2.0), now)
    sent_at: list[float] = []

    async def send(datagrams: list[bytes]) -> None:
        sent_at.extend(trio.current_time() for _ in datagrams)

    pump = SessionPump(session, send=send, deliver=lambda p: None, on_event=lambda e: None)
    session.start(now)
    await pump.flush()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump.run_timers)
        await trio.sleep(5.5)
        nursery.cancel_scope.cancel()
    assert sent_at[:2] == [now, now + 2.0]  # the first retransmission, exactly on time


async def test_step_timers_runs_only_a_due_timer():
    session = Session(client_config(tls_timeout=2.0), 100.0)
    pump = SessionPump(session, send=_discard, deliver=lambda p: None, on_event=lambda e: None)
    session.start(100.0)
    session.take_datagrams()
    deadline = session.next_timer()
    assert deadline is not None
    assert pump.step_timers(deadline - 0.001) is False
    assert session.take_datagrams() == []
    assert pump.step_timers(deadline) is True
    assert session.take_datagrams() != []


async def _discard(datagrams: list[bytes]) -> None:
    return None
