"""Text control messages (docs/protocol.md §8.1, §8.4)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trivpn.protocol.controlmsg import (
    AuthFailed,
    AuthPending,
    ControlMessageReader,
    CrResponse,
    Exit,
    Halt,
    Info,
    PushReply,
    PushRequest,
    Restart,
    Unknown,
    encode_message,
    format_auth_failed,
    format_auth_failed_temp,
    format_auth_pending,
    format_halt,
    format_restart,
    parse_control_message,
)
from trivpn.protocol.errors import DecodeError, ProtocolError

# --- reader --------------------------------------------------------------------------------


def test_reader_splits_several_messages_in_one_read():
    reader = ControlMessageReader()
    assert reader.feed(b"AUTH_PENDING\x00INFO_PRE,OPEN_URL:x\x00") == [
        "AUTH_PENDING", "INFO_PRE,OPEN_URL:x"]


def test_reader_joins_a_message_split_across_reads():
    reader = ControlMessageReader()
    assert reader.feed(b"PUSH_RE") == []
    assert reader.pending == 7
    assert reader.feed(b"PLY,ping 3\x00PUSH") == ["PUSH_REPLY,ping 3"]
    assert reader.feed(b"_REQUEST\x00") == ["PUSH_REQUEST"]
    assert reader.pending == 0


def test_reader_strips_trailing_cr_lf_and_skips_empty_messages():
    reader = ControlMessageReader()
    assert reader.feed(b"EXIT\r\n\x00\x00\r\n\x00") == ["EXIT"]
    assert reader.dropped_invalid == 0


@pytest.mark.parametrize("bad", [b"INFO,a\tb", b"INFO,caf\xc3\xa9", b"IN\nFO", b"\x7fEXIT"])
def test_reader_drops_and_counts_non_printable_messages(bad):
    reader = ControlMessageReader()
    assert reader.feed(bad + b"\x00EXIT\x00") == ["EXIT"]
    assert reader.dropped_invalid == 1


def test_reader_accepts_2048_bytes_but_not_more_without_nul():
    reader = ControlMessageReader()
    assert reader.feed(b"I" * 2048) == []
    with pytest.raises(DecodeError):
        reader.feed(b"I")
    assert reader.pending == 0


def test_reader_rejects_an_overlong_terminated_message():
    with pytest.raises(DecodeError):
        ControlMessageReader().feed(b"I" * 3000 + b"\x00")


@given(st.lists(st.binary(max_size=600), max_size=8))
def test_reader_raises_only_decode_errors_and_returns_printable_text(chunks):
    reader = ControlMessageReader()
    for chunk in chunks:
        try:
            messages = reader.feed(chunk)
        except DecodeError:
            continue
        for message in messages:
            assert message and all(" " <= ch <= "~" for ch in message)


# --- encoding ------------------------------------------------------------------------------


def test_encode_appends_one_nul():
    assert encode_message("PUSH_REQUEST") == b"PUSH_REQUEST\x00"


def test_encode_accepts_2047_bytes():
    assert len(encode_message("x" * 2047)) == 2048


@pytest.mark.parametrize("text", ["x" * 2048, "caf\u00e9", "a\x00b"])
def test_encode_rejects_what_cannot_be_sent(text):
    with pytest.raises(ProtocolError):
        encode_message(text)


def test_encoded_messages_round_trip_through_the_reader():
    data = b"".join(encode_message(t) for t in ["PUSH_REQUEST", "EXIT"])
    assert ControlMessageReader().feed(data) == ["PUSH_REQUEST", "EXIT"]


# --- parsing -------------------------------------------------------------------------------

PARSE_CASES = {
    "PUSH_REQUEST": PushRequest(),
    "PUSH_REPLY": PushReply(),
    "PUSH_REPLY,ping 3,ping-restart 30": PushReply(("ping 3", "ping-restart 30"), None),
    "PUSH_REPLY,route 198.18.1.0 255.255.255.0,push-continuation 2": PushReply(
        ("route 198.18.1.0 255.255.255.0",), 2),
    "PUSH_REPLY,push-continuation 1": PushReply((), 1),
    "PUSH_REPLY,,ping 3,": PushReply(("ping 3",), None),
    "AUTH_FAILED": AuthFailed(),
    "AUTH_FAILED,": AuthFailed(),
    "AUTH_FAILED,Data channel cipher negotiation failed (no shared cipher)": AuthFailed(
        reason="Data channel cipher negotiation failed (no shared cipher)",
        message="Data channel cipher negotiation failed (no shared cipher)"),
    "AUTH_FAILED,SESSION:token expired": AuthFailed(
        reason="SESSION:token expired", session=True, message="token expired"),
    "AUTH_FAILED,TEMP[backoff 30,advance remote]:try later": AuthFailed(
        reason="TEMP[backoff 30,advance remote]:try later", temp=True, backoff=30,
        advance="remote", message="try later"),
    "AUTH_FAILED,TEMP:busy": AuthFailed(reason="TEMP:busy", temp=True, message="busy"),
    "AUTH_FAILED,TEMP[advance sideways,frobnicate]": AuthFailed(
        reason="TEMP[advance sideways,frobnicate]", temp=True),
    "AUTH_FAILED,CRV1:R,E:Om01u7Fh4LrGBS7uh0SWmzwabUiGiW6l:Y3Ixw==:Enter PIN": AuthFailed(
        reason="CRV1:R,E:Om01u7Fh4LrGBS7uh0SWmzwabUiGiW6l:Y3Ixw==:Enter PIN",
        message="CRV1:R,E:Om01u7Fh4LrGBS7uh0SWmzwabUiGiW6l:Y3Ixw==:Enter PIN",
        challenge="R,E:Om01u7Fh4LrGBS7uh0SWmzwabUiGiW6l:Y3Ixw==:Enter PIN"),
    "AUTH_PENDING": AuthPending(),
    "AUTH_PENDING,timeout 120": AuthPending(timeout=120),
    "AUTH_PENDING,colour blue,timeout 30": AuthPending(timeout=30),
    "RESTART": Restart(),
    "RESTART,[N]": Restart(advance=True),
    "RESTART,[PN]server shutting down": Restart("server shutting down", advance=True,
                                                keep_password=True),
    "RESTART,bye": Restart("bye"),
    "RESTARTX": Restart(),
    "HALT": Halt(),
    "HALT,[P]go away": Halt("go away", keep_password=True),
    "EXIT": Exit(),
    "INFO,hello": Info(pre=False, text="hello"),
    "INFO_PRE,OPEN_URL:https://example.org/auth": Info(pre=True,
                                                       text="OPEN_URL:https://example.org/auth"),
    "INFO": Info(pre=False, text=""),
    "CR_RESPONSE,dGVzdA==": CrResponse("dGVzdA=="),
    "HELLO": Unknown("HELLO"),
    "push_reply,ping 3": Unknown("push_reply,ping 3"),
}


@pytest.mark.parametrize("text", sorted(PARSE_CASES))
def test_parse_control_message(text):
    assert parse_control_message(text) == PARSE_CASES[text]


def test_auth_failed_is_matched_before_auth_pending_and_push():
    # Prefix order of forward.c: AUTH_FAILED first, then PUSH_, ..., AUTH_PENDING, EXIT.
    assert isinstance(parse_control_message("AUTH_FAILED,PUSH_REPLY"), AuthFailed)
    assert isinstance(parse_control_message("INFO_PREx"), Info)
    assert parse_control_message("INFO_PREx") == Info(pre=True, text="")


@pytest.mark.parametrize("text", [
    "PUSH_REPLYX", "PUSH_UPDATE,route x", "PUSH_REPLY,push-continuation 3",
    "PUSH_REPLY,push-continuation", "PUSH_REPLY,push-continuation two",
])
def test_malformed_push_messages_are_decode_errors(text):
    with pytest.raises(DecodeError):
        parse_control_message(text)


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200))
def test_parse_raises_only_protocol_errors(text):
    with contextlib.suppress(ProtocolError):
        parse_control_message(text)


@given(st.sampled_from(["AUTH_FAILED", "PUSH_REPLY,", "RESTART,[", "AUTH_PENDING,",
                        "AUTH_FAILED,TEMP[", "HALT,"]),
       st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80))
def test_parse_of_prefixed_garbage_raises_only_protocol_errors(prefix, rest):
    with contextlib.suppress(ProtocolError):
        parse_control_message(prefix + rest)


# --- formatting round trips ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    (format_auth_failed(), AuthFailed()),
    (format_auth_failed("bad password"), AuthFailed(reason="bad password",
                                                    message="bad password")),
    (format_auth_failed_temp("later", backoff=10, advance="no"),
     AuthFailed(reason="TEMP[backoff 10,advance no]:later", temp=True, backoff=10,
                advance="no", message="later")),
    (format_auth_pending(), AuthPending()),
    (format_auth_pending(60), AuthPending(timeout=60)),
    (format_restart(), Restart()),
    (format_restart(advance=True), Restart(advance=True)),
    (format_restart("bye", keep_password=True), Restart("bye", keep_password=True)),
    (format_halt("done"), Halt("done")),
])
def test_formatted_messages_parse_back(text, expected):
    assert parse_control_message(text) == expected


def test_explicit_exit_notify_restart_forms_are_the_2_6_texts():
    assert format_restart() == "RESTART"
    assert format_restart(advance=True) == "RESTART,[N]"
