"""ReadySet: the data path's one waiter for several fds (trivpn.runtime.readiness)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from trivpn.runtime.readiness import YIELD_EVERY, ReadySet


@pytest.fixture
def pairs() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    made = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(2)]
    for a, b in made:
        a.setblocking(False)
        b.setblocking(False)
    yield made
    for a, b in made:
        a.close()
        b.close()


async def test_wait_returns_the_readable_fds(pairs) -> None:
    (_a1, b1), (a2, b2) = pairs
    ready = ReadySet((b1.fileno(), b2.fileno()))
    try:
        a2.send(b"x")
        with trio.fail_after(5):
            assert await ready.wait() == [b2.fileno()]
    finally:
        ready.close()


async def test_wait_blocks_until_an_fd_becomes_readable(pairs) -> None:
    (a1, b1), _ = pairs
    ready = ReadySet((b1.fileno(),))
    got: list[list[int]] = []
    try:
        async with trio.open_nursery() as nursery:
            async def waiter() -> None:
                got.append(await ready.wait())
            nursery.start_soon(waiter)
            await trio.sleep(0.05)
            assert got == []
            a1.send(b"x")
        assert got == [[b1.fileno()]]
    finally:
        ready.close()


async def test_wait_is_cancellable_while_nothing_is_ready(pairs) -> None:
    (_, b1), _ = pairs
    ready = ReadySet((b1.fileno(),))
    try:
        with trio.fail_after(5):
            with trio.move_on_after(0.05) as scope:
                await ready.wait()
        assert scope.cancelled_caught
    finally:
        ready.close()


async def test_tasks_scheduled_with_the_waiter_are_not_starved(pairs) -> None:
    """The waiter may wait without trio's scheduler only when no other task can run, the
    rest of the scheduler's current batch included."""
    (_, b1), _ = pairs
    steps = 0

    async def stepper() -> None:
        nonlocal steps
        for _ in range(50):
            await trio.lowlevel.checkpoint()
            steps += 1

    for _ in range(10):  # the scheduler orders each batch at random
        ready = ReadySet((b1.fileno(),))
        steps = 0
        try:
            with trio.move_on_after(0.3):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ready.wait)  # in the stepper's batches, either order
                    await stepper()
                    nursery.cancel_scope.cancel()
            assert steps == 50
        finally:
            ready.close()


async def test_io_of_other_tasks_is_served_while_waiting(pairs) -> None:
    (_, b1), (a2, b2) = pairs
    ready = ReadySet((b1.fileno(),))
    received: list[float] = []
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                async def waiter() -> None:
                    await ready.wait()

                async def reader() -> None:
                    await trio.lowlevel.wait_readable(b2)
                    received.append(trio.current_time())

                nursery.start_soon(waiter)
                nursery.start_soon(reader)
                await trio.sleep(0.02)  # both waiting
                sent = trio.current_time()
                a2.send(b"control")
                while not received:
                    await trio.sleep(0.001)
                nursery.cancel_scope.cancel()
        assert received[0] - sent < 0.1
    finally:
        ready.close()


async def test_deadlines_fire_while_waiting(pairs) -> None:
    (_, b1), _ = pairs
    ready = ReadySet((b1.fileno(),))
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ready.wait)
                start = trio.current_time()
                await trio.sleep(0.05)
                assert trio.current_time() - start < 0.5
                nursery.cancel_scope.cancel()
    finally:
        ready.close()


async def test_a_busy_waiter_lets_other_tasks_run(pairs) -> None:
    (a1, b1), _ = pairs
    ready = ReadySet((b1.fileno(),))
    a1.send(b"never read: the fd stays readable")
    rounds = 0
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                async def busy() -> None:
                    nonlocal rounds
                    while True:
                        await ready.wait()
                        rounds += 1

                nursery.start_soon(busy)
                for _ in range(3):
                    await trio.lowlevel.checkpoint()
                nursery.cancel_scope.cancel()
        assert 0 < rounds <= 3 * (YIELD_EVERY + 1)
    finally:
        ready.close()


async def test_burst_means_ready_in_consecutive_rounds_without_a_wait(pairs) -> None:
    (a1, b1), _ = pairs
    fd = b1.fileno()
    ready = ReadySet((fd,))
    try:
        with trio.fail_after(5):
            a1.send(b"1")
            await ready.wait()
            assert not ready.burst(fd)  # first round
            await ready.wait()  # still unread: ready again
            assert ready.burst(fd)
            b1.recv(10)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ready.wait)
                await trio.sleep(0.02)
                a1.send(b"2")
            assert not ready.burst(fd)  # a wait came in between
    finally:
        ready.close()


async def test_discarded_fds_are_not_reported(pairs) -> None:
    (a1, b1), (a2, b2) = pairs
    ready = ReadySet((b1.fileno(), b2.fileno()))
    try:
        a1.send(b"x")
        a2.send(b"y")
        ready.discard(b1.fileno())
        with trio.fail_after(5):
            assert await ready.wait() == [b2.fileno()]
    finally:
        ready.close()


async def test_waits_directly_under_trios_own_clock(pairs) -> None:
    (_, b1), _ = pairs
    ready = ReadySet((b1.fileno(),))
    try:
        assert ready.direct
    finally:
        ready.close()


def test_a_test_clock_makes_it_wait_through_trio(pairs) -> None:
    (_, b1), _ = pairs

    async def main() -> bool:
        ready = ReadySet((b1.fileno(),))
        try:
            return ready.direct
        finally:
            ready.close()

    assert trio.run(main, clock=trio.testing.MockClock()) is False
