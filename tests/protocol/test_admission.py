"""Pre-authentication admission: the first-packet check and the unauthenticated quota."""

from __future__ import annotations

import pytest

from trivpn.protocol.admission import (
    FIRST_PACKET_TIMEOUT,
    PREAUTH_MIN,
    PREAUTH_PER_SOURCE,
    REFUSED_PER_SOURCE,
    REFUSED_QUOTA,
    PreauthLedger,
    PreauthLimits,
    first_packet_timeout,
    peek_client_reset,
)
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.packets import ControlPacket, Opcode, encode_control
from trivpn.protocol.statickey import StaticKey
from trivpn.protocol.wrap import ControlWrap, NoWrap, TlsAuth, TlsCrypt

KEY = StaticKey(bytes(range(256)))
OTHER_KEY = StaticKey(bytes(range(255, -1, -1)))
SID = bytes.fromhex("0102030405060708")

# (client side, server side) of each wrapping
WRAPS: dict[str, tuple[ControlWrap, ControlWrap]] = {
    "none": (NoWrap(), NoWrap()),
    "tls-auth": (TlsAuth(KEY, 1), TlsAuth(KEY, 0)),
    "tls-crypt": (TlsCrypt(KEY, False), TlsCrypt(KEY, True)),
}


def _reset(wrap: ControlWrap, **kw: object) -> bytes:
    fields: dict[str, object] = {"opcode": Opcode.CONTROL_HARD_RESET_CLIENT_V2, "key_id": 0,
                                 "session_id": SID, "message_id": 0}
    fields.update(kw)
    return wrap.wrap(encode_control(ControlPacket(**fields)), 1, 1_700_000_000)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", WRAPS)
def test_peek_accepts_a_client_hard_reset_under_the_configured_wrapping(name: str):
    client, server = WRAPS[name]
    packet = peek_client_reset(server, _reset(client))
    assert packet.opcode is Opcode.CONTROL_HARD_RESET_CLIENT_V2
    assert packet.session_id == SID


@pytest.mark.parametrize(("name", "wrong"), [
    ("tls-auth", TlsAuth(OTHER_KEY, 1)),
    ("tls-auth", NoWrap()),
    ("tls-crypt", TlsCrypt(OTHER_KEY, False)),
    ("tls-crypt", TlsAuth(KEY, 1)),
])
def test_peek_refuses_a_reset_that_fails_tls_auth_or_tls_crypt(name: str, wrong: ControlWrap):
    with pytest.raises(ProtocolError):
        peek_client_reset(WRAPS[name][1], _reset(wrong))


@pytest.mark.parametrize("kw", [
    {"opcode": Opcode.CONTROL_V1},
    {"opcode": Opcode.CONTROL_HARD_RESET_SERVER_V2},
    {"opcode": Opcode.CONTROL_HARD_RESET_CLIENT_V3},  # only under a tls-crypt-v2 client key
    {"opcode": Opcode.CONTROL_SOFT_RESET_V1},
    {"key_id": 1},
    {"message_id": 1},
    {"acks": (0,), "remote_session_id": bytes(7) + b"\x01"},
])
@pytest.mark.parametrize("name", WRAPS)
def test_peek_refuses_anything_but_a_first_client_reset(name: str, kw: dict[str, object]):
    client, server = WRAPS[name]
    with pytest.raises(ProtocolError) as caught:
        peek_client_reset(server, _reset(client, **kw))
    assert caught.value.reason == "unexpected_reset"


@pytest.mark.parametrize("data", [b"", b"\x38", b"GET / HTTP/1.1\r\n\r\n", bytes(64),
                                  b"\x00" * 3 + b"\xff" * 40])
@pytest.mark.parametrize("name", WRAPS)
def test_peek_refuses_garbage_with_a_protocol_error(name: str, data: bytes):
    with pytest.raises(ProtocolError):
        peek_client_reset(WRAPS[name][1], data)


def test_default_quota_is_a_quarter_of_max_clients_with_a_floor_and_a_small_per_source_limit():
    assert PreauthLimits.for_max_clients(1024) == PreauthLimits(256, PREAUTH_PER_SOURCE)
    assert PreauthLimits.for_max_clients(10) == PreauthLimits(PREAUTH_MIN, PREAUTH_PER_SOURCE)
    assert PREAUTH_PER_SOURCE <= PREAUTH_MIN


def test_first_packet_timeout_is_a_few_seconds_and_never_beyond_hand_window():
    assert first_packet_timeout(60.0) == FIRST_PACKET_TIMEOUT == 5.0
    assert first_packet_timeout(2.0) == 2.0


def test_sessions_beyond_the_quota_are_refused_and_counted():
    ledger: PreauthLedger[str] = PreauthLedger(PreauthLimits(total=3, per_source=3))
    for n in range(3):
        assert ledger.admit(f"s{n}", f"198.18.0.{n}", opening=False).admitted
    refused = ledger.admit("s3", "198.18.0.9", opening=False)
    assert refused.refused == REFUSED_QUOTA and refused.evicted == ()
    assert len(ledger) == 3 and ledger.refused[REFUSED_QUOTA] == 1
    assert ledger.release("s1")
    assert ledger.admit("s3", "198.18.0.9", opening=False).admitted


def test_one_source_address_holds_at_most_per_source_sessions():
    ledger: PreauthLedger[str] = PreauthLedger(PreauthLimits(total=10, per_source=2))
    assert ledger.admit("a", "198.18.0.2", opening=False).admitted
    assert ledger.admit("b", "198.18.0.2", opening=False).admitted
    assert ledger.admit("c", "198.18.0.2", opening=False).refused == REFUSED_PER_SOURCE
    assert ledger.admit("d", "198.18.0.3", opening=False).admitted
    assert ledger.from_source("198.18.0.2") == 2 and ledger.refused[REFUSED_PER_SOURCE] == 1


def test_a_full_quota_evicts_the_oldest_idle_opening_instead_of_refusing():
    ledger: PreauthLedger[str] = PreauthLedger(PreauthLimits(total=3, per_source=3))
    assert ledger.admit("session", "198.18.0.1", opening=False).admitted
    assert ledger.admit("idle1", "198.18.0.2", opening=True).admitted
    assert ledger.admit("idle2", "198.18.0.3", opening=True).admitted
    admission = ledger.admit("new", "198.18.0.4", opening=True)
    assert admission.admitted and admission.evicted == ("idle1",)
    assert "idle1" not in ledger and "session" in ledger and ledger.evicted == 1
    assert ledger.from_source("198.18.0.2") == 0


def test_an_address_at_its_limit_evicts_its_own_oldest_opening_not_another_address():
    ledger: PreauthLedger[str] = PreauthLedger(PreauthLimits(total=10, per_source=2))
    assert ledger.admit("other", "198.18.0.9", opening=True).admitted
    assert ledger.admit("x1", "198.18.0.2", opening=True).admitted
    assert ledger.admit("x2", "198.18.0.2", opening=True).admitted
    admission = ledger.admit("x3", "198.18.0.2", opening=True)
    assert admission.evicted == ("x1",)
    assert "other" in ledger and ledger.from_source("198.18.0.2") == 2


def test_a_settled_opening_is_a_session_and_no_longer_evicted():
    ledger: PreauthLedger[str] = PreauthLedger(PreauthLimits(total=2, per_source=2))
    assert ledger.admit("first", "198.18.0.2", opening=True).admitted
    ledger.settle("first")
    assert ledger.openings == 0
    assert ledger.admit("second", "198.18.0.3", opening=True).admitted
    admission = ledger.admit("third", "198.18.0.4", opening=True)
    assert admission.evicted == ("second",)
    ledger.settle("third")
    assert ledger.admit("fourth", "198.18.0.5", opening=True).refused == REFUSED_QUOTA


def test_releasing_twice_or_an_unknown_key_is_harmless():
    ledger: PreauthLedger[str] = PreauthLedger(PreauthLimits(total=2, per_source=1))
    assert ledger.admit("a", "198.18.0.2", opening=True).admitted
    assert ledger.release("a") and not ledger.release("a") and not ledger.release("zz")
    assert len(ledger) == 0 and ledger.from_source("198.18.0.2") == 0
    with pytest.raises(ValueError, match="at least 1"):
        PreauthLimits(total=0, per_source=1)
