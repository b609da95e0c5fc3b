"""The session's state machines, each written down once as a transition table.

A :class:`~trivpn.protocol.session.Session` moves three kinds of state, and every move goes
through :func:`transition` with one of the tables below, so what may follow what is readable in
one place (the idea of h11's ``_state.py``):

* :class:`KeyPhase` -- one per key state (OpenVPN's ``S_PRE_START`` .. ``S_GENERATED_KEYS`` in
  ``ssl_common.h``, simplified): reset exchange, TLS and key method, keys exchanged, data keys
  installed. ``FAILED`` is like h11's ``ERROR``: any phase may fail (timeout, refusal, stall,
  tunnel disabled), so failing is not an edge of the table; but FAILED is never left.
* :class:`PullState` -- a client's pull: nothing asked yet, PUSH_REQUEST sent (and repeated
  every few seconds until the hand window ends), reply applied.
* :class:`AcceptState` -- a server's admission of its client: handshaking, the client's key
  method block authenticated (waiting for the caller's ``accept()`` or ``reject()``), accepted,
  PUSH_REPLY sent, rejected.

A move the table does not have is a :class:`~trivpn.protocol.errors.CallerMisuse`: either the
caller asked for something the state does not allow (``accept()`` twice) or the session itself
is wrong; it is raised, never counted as a dropped packet. Whatever the peer sends is checked
before any move, and refused as a :class:`~trivpn.protocol.errors.PeerViolation`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TypeVar

from trivpn.protocol.errors import CallerMisuse


class KeyPhase(enum.Enum):
    PRE_START = "pre_start"  # hard or soft reset sent and/or received, no TLS yet
    START = "start"  # TLS handshake and key method exchange running
    ACTIVE = "active"  # key method blocks went both ways and every control message is acked
    DATA_READY = "data_ready"  # data channel keys derived: the key can carry packets
    FAILED = "failed"  # handshake failed, timed out, stalled or disabled


class PullState(enum.Enum):
    IDLE = "idle"  # the first key is not active yet
    REQUESTING = "requesting"  # PUSH_REQUEST sent, no usable PUSH_REPLY yet
    PUSHED = "pushed"  # a PUSH_REPLY was applied


class AcceptState(enum.Enum):
    HANDSHAKING = "handshaking"  # the client's key method block has not arrived
    AUTHENTICATED = "authenticated"  # ClientAuthenticated reported; accept() or reject() next
    ACCEPTED = "accepted"  # accept() ran; PUSH_REPLY waits for the request and the data key
    REPLIED = "replied"  # PUSH_REPLY sent (sent again for a request after the hold-off)
    REJECTED = "rejected"  # AUTH_FAILED: refused at admission, or its certificate changed


KEY_TRANSITIONS: Mapping[KeyPhase, frozenset[KeyPhase]] = {
    KeyPhase.PRE_START: frozenset({KeyPhase.START}),
    KeyPhase.START: frozenset({KeyPhase.ACTIVE}),
    KeyPhase.ACTIVE: frozenset({KeyPhase.DATA_READY}),
    KeyPhase.DATA_READY: frozenset(),
    KeyPhase.FAILED: frozenset(),  # a failed key never negotiates again: a new one does
}

PULL_TRANSITIONS: Mapping[PullState, frozenset[PullState]] = {
    # a server may push before it is asked (IV_PROTO_REQUEST_PUSH), even before our key is active
    PullState.IDLE: frozenset({PullState.REQUESTING, PullState.PUSHED}),
    PullState.REQUESTING: frozenset({PullState.REQUESTING, PullState.PUSHED}),  # retries
    PullState.PUSHED: frozenset(),
}

ACCEPT_TRANSITIONS: Mapping[AcceptState, frozenset[AcceptState]] = {
    AcceptState.HANDSHAKING: frozenset({AcceptState.AUTHENTICATED, AcceptState.REJECTED}),
    AcceptState.AUTHENTICATED: frozenset({AcceptState.ACCEPTED, AcceptState.REJECTED}),
    AcceptState.ACCEPTED: frozenset({AcceptState.REPLIED, AcceptState.REJECTED}),
    AcceptState.REPLIED: frozenset({AcceptState.REPLIED, AcceptState.REJECTED}),
    AcceptState.REJECTED: frozenset(),
}

_S = TypeVar("_S", KeyPhase, PullState, AcceptState)


def require(table: Mapping[_S, frozenset[_S]], current: _S, target: _S, where: str) -> None:
    """:class:`CallerMisuse` unless the table allows ``current -> target``."""
    if target not in table[current]:
        raise CallerMisuse(f"cannot go from {current.value} to {target.value}", where)


def transition(table: Mapping[_S, frozenset[_S]], current: _S, target: _S, where: str) -> _S:
    """Make the move ``current -> target``: ``target``, or :class:`CallerMisuse` if the table
    does not have that edge."""
    require(table, current, target, where)
    return target
