"""What a client does after a connection ends: which remote next, how long to wait, or exit.

Pure bookkeeping (no trio, no clock), so the schedule is unit-tested directly.

OpenVPN 2.6 behaviour modelled here (``init.c``/``socket.c``): remotes are tried in config
order (``remote-random``: shuffled once at start); after a connection that came all the way up,
the first restart retries the *same* remote, later failures move to the next one, and a
``RESTART,[N]`` from the server moves on at once. Before each retry the client waits
``connect-retry`` seconds; once every remote failed five times in a row the wait doubles per
further round, up to ``connect-retry``'s maximum (default 300 s). A successful connection
resets the count.

Name resolution (``resolv-retry``, ``socket.c`` ``openvpn_getaddrinfo``/``resolve_remote``):
each connection attempt looks the remote's name up once while preparing the socket and again
when opening it; with ``resolv-retry N`` (N > 0) the second lookup is retried every 5 s,
``(N + 4) // 5`` lookups in all, so ``1 + (N + 4) // 5`` per attempt (the first two back to
back). ``infinite`` (the default) is not a longer loop: two lookups, then the attempt fails
and the client restarts towards the next remote after the ``connect-retry`` pause, forever.
When they all fail the client restarts the same way, whatever N is; only ``resolv-retry 0``
is fatal: one lookup, then exit with status 1.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

T = TypeVar("T")

FREE_ROUNDS = 5
"""Rounds over all remotes at the base delay before the back-off starts doubling."""
RESOLVE_RETRY_INTERVAL = 5
"""Seconds between the retried lookups of one attempt (OpenVPN's ``fail_wait_interval``)."""


def resolve_attempts(resolv_retry: int | None) -> int:
    """How many times one connection attempt looks the remote's name up before it gives up
    (``resolv_retry``: seconds, None for ``infinite``)."""
    if resolv_retry is None:
        return 2
    if resolv_retry == 0:
        return 1
    return 1 + (resolv_retry + RESOLVE_RETRY_INTERVAL - 1) // RESOLVE_RETRY_INTERVAL


def resolve_retry_delay(failed: int) -> int:
    """Seconds to wait after the ``failed``-th failed lookup of an attempt before the next:
    none after the first (the second lookup follows at once), 5 s after the later ones."""
    return 0 if failed <= 1 else RESOLVE_RETRY_INTERVAL


@dataclass(frozen=True, slots=True)
class Reconnect:
    """End this connection and try again (``reason`` is a stable snake_case word)."""

    reason: str
    detail: str = ""
    advance: bool = False
    pause: bool = True
    """False: try the next remote at once, without the connect-retry wait (OpenVPN's
    server-poll-timeout restart)."""
    hard: bool = False
    """True: OpenVPN's SIGHUP restart (``remap-usr1 SIGHUP``): neither the device nor the keys
    are kept, whatever persist-tun and persist-key say."""
    keep: bool = False
    """True: a TLS peer-to-peer server's peer started a new session (a new hard reset): the
    next connection takes over at once and the device and keys stay, as OpenVPN moves the
    new TLS session in without a restart (ssl.c, tls_pre_decrypt(): "Initial packet")."""


@dataclass(frozen=True, slots=True)
class Exit:
    """Stop the client with this process exit code."""

    code: int
    reason: str
    detail: str = ""


Outcome = Reconnect | Exit

# --- client breadth b ---

# The restarts OpenVPN signals as a TLS error (forward.c, check_tls_errors(): the
# ``tls_exit_signal``, "tls-error"): a failed TLS handshake, including one that timed out.
TLS_ERROR_REASONS = frozenset({"handshake_failed"})


def remap_restart(outcome: Reconnect, *, tls_exit: bool, remap_usr1: str | None) -> Outcome:
    """What a restart becomes under ``tls-exit`` and ``remap-usr1``.

    OpenVPN raises SIGTERM instead of SIGUSR1 on a TLS error with ``tls-exit`` (init.c,
    do_signal_on_tls_errors()), and turns every SIGUSR1 (every restart, internal or sent)
    into the signal ``remap-usr1`` names (sig.c, remap_signal(), called by openvpn.c for each
    signal): SIGTERM exits (status 0), SIGHUP restarts without keeping device or keys.
    """
    if tls_exit and outcome.reason in TLS_ERROR_REASONS:
        return Exit(0, "tls_exit", outcome.detail)
    if remap_usr1 == "SIGTERM":
        return Exit(0, "remap_usr1", outcome.reason)
    if remap_usr1 == "SIGHUP":
        return replace(outcome, hard=True)
    return outcome


def backoff_delay(failures: int, remotes: int, base: int, maximum: int) -> int:
    """Seconds to wait before the next attempt after ``failures`` consecutive failed attempts
    over ``remotes`` remotes: ``base`` for the first five rounds, then doubling per round,
    never above ``maximum`` (and never below ``base``)."""
    rounds = failures // max(remotes, 1) - (FREE_ROUNDS - 1)
    delay = base
    if rounds > 0:
        delay = max(base, 1) << min(rounds, 15)
    return min(delay, max(maximum, base))


@dataclass(frozen=True, slots=True)
class Attempt(Generic[T]):
    remote: T
    delay: float


class RemoteSchedule(Generic[T]):
    """The order of remotes and the wait before each attempt."""

    def __init__(self, remotes: Sequence[T], *, base: int = 1, maximum: int = 300,
                 shuffle: random.Random | None = None, retry_max: int | None = None) -> None:
        if not remotes:
            raise ValueError("at least one remote is needed")
        order = list(remotes)
        if shuffle is not None:
            shuffle.shuffle(order)
        self.remotes: tuple[T, ...] = tuple(order)
        self.base = base
        self.maximum = maximum
        self.index = 0
        self.failures = 0
        self._stay_once = False
        # connect-retry-max: OpenVPN's unsuccessful_attempts (init.c next_connection_entry):
        # +1 for every profile selected, not for a retry of the same one after a success,
        # reset when a connection completes; above len(remotes) * retry_max it exits
        self.retry_max = retry_max
        self.unsuccessful = 0

    @property
    def exhausted(self) -> bool:
        """Every profile was tried ``connect-retry-max`` times without success."""
        return (self.retry_max is not None
                and self.unsuccessful > len(self.remotes) * self.retry_max)

    def first(self) -> Attempt[T]:
        # OpenVPN counts every connection entry it selects as unsuccessful until the
        # connection completes (init.c next_connection_entry), the first one too: from a
        # fresh start the wait doubles from the fifth restart, after a success from the sixth.
        self.failures = 1
        self.unsuccessful = 1
        return Attempt(self.remotes[0], 0.0)

    def established(self) -> None:
        """The current connection came up: reset the back-off; its next restart stays."""
        self.failures = 0
        self.unsuccessful = 0
        self._stay_once = True

    def skip(self, count: int) -> bool:
        """The management client's ``remote SKIP N``: N profiles on, at once (init.c,
        next_connection_entry(): each counts as unsuccessful); True if the list wrapped."""
        self.unsuccessful += count
        self.index += count
        wrapped = self.index >= len(self.remotes)
        self.index %= len(self.remotes)
        return wrapped

    def restart(self, advance: bool = False) -> Attempt[T]:
        """The current connection ended: where to go next and after how long."""
        delay = backoff_delay(self.failures, len(self.remotes), self.base, self.maximum)
        if self._stay_once and not advance:
            self._stay_once = False
        else:
            self._stay_once = False
            self.index = (self.index + 1) % len(self.remotes)
            self.unsuccessful += 1
        self.failures += 1
        return Attempt(self.remotes[self.index], float(delay))
