"""Text control messages inside TLS (docs/protocol.md §8): framing, parsing and formatting.

Framing: ASCII text terminated by one NUL, one message per TLS write, at most 2047 bytes of
text. The reader splits on NUL regardless of TLS record boundaries (as 2.6.12+ does), strips
trailing CR/LF and drops messages with characters outside printable ASCII (counted in
:attr:`ControlMessageReader.dropped_invalid`).

Dispatch follows 2.6 ``forward.c`` ``parse_incoming_control_channel_command()``: first
matching prefix among AUTH_FAILED, PUSH_, RESTART, HALT, INFO_PRE, INFO, CR_RESPONSE,
AUTH_PENDING, EXIT; anything else is :class:`Unknown`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from trivpn.protocol.errors import DecodeError, ProtocolError

#: Longest text (without NUL) we send: TLS_CHANNEL_BUF_SIZE (2048) minus the NUL.
MAX_MESSAGE_LEN = 2047
#: Longest text the reader accepts (one byte of slack over what 2.6 can send).
MAX_RECEIVE_LEN = 2048

_PRINTABLE_RE = re.compile(r"[\x20-\x7e]*\Z")


class ControlMessageReader:
    """Split a stream of decrypted control-channel bytes into text messages."""

    def __init__(self) -> None:
        self._pending = bytearray()
        #: Messages dropped because they contained non-printable characters.
        self.dropped_invalid = 0

    @property
    def pending(self) -> int:
        """Bytes buffered without a terminating NUL yet."""
        return len(self._pending)

    def feed(self, data: bytes) -> list[str]:
        """Add bytes; return every complete, valid message (empty ones are skipped).

        Raises :class:`DecodeError` (and discards the buffer) if a message grows beyond
        :data:`MAX_RECEIVE_LEN` bytes.
        """
        self._pending += data
        out: list[str] = []
        while True:
            nul = self._pending.find(b"\x00")
            if nul < 0:
                if len(self._pending) > MAX_RECEIVE_LEN:
                    size = len(self._pending)
                    self._pending.clear()
                    raise DecodeError(f"{size} bytes without a NUL terminator",
                                      "control message", reason="too_long")
                return out
            raw = bytes(self._pending[:nul])
            del self._pending[:nul + 1]
            if len(raw) > MAX_RECEIVE_LEN:
                self._pending.clear()
                raise DecodeError(f"message of {len(raw)} bytes is too long", "control message",
                                  reason="too_long")
            text = raw.rstrip(b"\r\n").decode("latin-1")
            if not text:
                continue
            if not _PRINTABLE_RE.match(text):
                self.dropped_invalid += 1
                continue
            out.append(text)


def encode_message(text: str) -> bytes:
    """ASCII text plus the terminating NUL; raises :class:`ProtocolError` if it cannot be sent."""
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise ProtocolError("control message is not ASCII", "control message",
                            reason="bad_argument") from None
    if b"\x00" in raw:
        raise ProtocolError("control message contains a NUL", "control message",
                            reason="bad_argument")
    if len(raw) > MAX_MESSAGE_LEN:
        raise ProtocolError(f"control message of {len(raw)} bytes exceeds {MAX_MESSAGE_LEN}",
                            "control message", reason="too_long")
    return raw + b"\x00"


# --------------------------------------------------------------------------------------------
# Parsed messages


@dataclass(frozen=True, slots=True)
class PushRequest:
    pass


@dataclass(frozen=True, slots=True)
class PushReply:
    """``PUSH_REPLY[,opt...]``. ``options`` excludes ``push-continuation``, whose value (1 = last
    part, 2 = more follow) is ``continuation``; ``None`` when absent (single message)."""

    options: tuple[str, ...] = ()
    continuation: int | None = None


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """``AUTH_FAILED[,reason]``.

    ``temp``: ``AUTH_FAILED,TEMP[flags]:message`` — retry later; ``backoff`` seconds and
    ``advance`` (``no``/``addr``/``remote``) come from the flags, ``message`` is the text after
    ``:``. ``session``: ``SESSION:`` prefix (auth-token expired). ``challenge``: the body of a
    ``CRV1:`` dynamic challenge. For other reasons ``message`` equals ``reason``.
    """

    reason: str | None = None
    temp: bool = False
    backoff: int | None = None
    advance: str | None = None
    message: str = ""
    session: bool = False
    challenge: str | None = None


@dataclass(frozen=True, slots=True)
class AuthPending:
    """``AUTH_PENDING[,timeout N]``; ``timeout`` is None when not given."""

    timeout: int | None = None


@dataclass(frozen=True, slots=True)
class Restart:
    """``RESTART[,[flags]message]``: ``N`` flag = advance to the next server,
    ``P`` = keep the cached password."""

    message: str = ""
    advance: bool = False
    keep_password: bool = False


@dataclass(frozen=True, slots=True)
class Halt:
    """``HALT[,[flags]message]``: disconnect and do not reconnect."""

    message: str = ""
    keep_password: bool = False


@dataclass(frozen=True, slots=True)
class Exit:
    """``EXIT`` (control-channel exit notification)."""


@dataclass(frozen=True, slots=True)
class Info:
    """``INFO,text`` or ``INFO_PRE,text`` (``pre=True``), e.g. ``OPEN_URL:...``."""

    pre: bool
    text: str


@dataclass(frozen=True, slots=True)
class CrResponse:
    """``CR_RESPONSE,base64`` (client's answer to a CRTEXT challenge)."""

    response: str


@dataclass(frozen=True, slots=True)
class Unknown:
    text: str


ControlMessage = (PushRequest | PushReply | AuthFailed | AuthPending | Restart | Halt | Exit
                  | Info | CrResponse | Unknown)

_PUSH_REPLY = "PUSH_REPLY"
_PUSH_REQUEST = "PUSH_REQUEST"


def _argument(text: str, prefix: str) -> str:
    """The text after ``PREFIX,``, or ``""`` (2.6's ``buf_advance`` + ``','`` check)."""
    rest = text[len(prefix):]
    if rest.startswith(","):
        return rest[1:]
    return ""


def _signal_flags(message: str) -> tuple[str, str]:
    """Split ``[PN]rest`` into (flags, rest); no bracket → ("", message)."""
    if message.startswith("["):
        end = message.find("]")
        if end >= 0:
            return message[1:end], message[end + 1:]
        return message[1:], ""
    return "", message


def _parse_push_reply(text: str) -> PushReply:
    rest = text[len(_PUSH_REPLY):]
    if rest == "":
        return PushReply()
    if not rest.startswith(","):
        raise DecodeError(f"bad push/pull message {text[:64]!r}", "PUSH_REPLY",
                          reason="bad_push")
    options: list[str] = []
    continuation: int | None = None
    for item in rest[1:].split(","):
        words = item.split()
        if not words:
            continue
        if words[0] == "push-continuation":
            if len(words) != 2 or words[1] not in ("1", "2"):
                raise DecodeError(f"bad push-continuation {item!r}", "PUSH_REPLY",
                                  reason="bad_push")
            continuation = int(words[1])
            continue
        options.append(item.strip())
    return PushReply(options=tuple(options), continuation=continuation)


def _parse_auth_failed(text: str) -> AuthFailed:
    if not text.startswith("AUTH_FAILED,") or text == "AUTH_FAILED,":
        return AuthFailed()
    reason = text[len("AUTH_FAILED,"):]
    if reason.startswith("TEMP"):
        body = reason[len("TEMP"):]
        backoff: int | None = None
        advance: str | None = None
        if body.startswith("[") and "]" in body:
            end = body.index("]")
            for flag in (f for f in body[1:end].split(",") if f):
                if flag.startswith("backoff "):
                    m = re.match(r"backoff\s+([0-9]{1,9})\Z", flag)
                    backoff = int(m.group(1)) if m else None
                elif flag.startswith("advance "):
                    value = flag[len("advance "):]
                    if value in ("no", "addr", "remote"):
                        advance = value
            body = body[end + 1:]
        message = body[1:] if body.startswith(":") else ""
        return AuthFailed(reason=reason, temp=True, backoff=backoff, advance=advance,
                          message=message)
    if reason.startswith("SESSION:"):
        return AuthFailed(reason=reason, session=True, message=reason[len("SESSION:"):])
    if reason.startswith("CRV1:"):
        return AuthFailed(reason=reason, message=reason, challenge=reason[len("CRV1:"):])
    return AuthFailed(reason=reason, message=reason)


def _parse_auth_pending(text: str) -> AuthPending:
    timeout: int | None = None
    for keyword in _argument(text, "AUTH_PENDING").split(","):
        m = re.fullmatch(r"timeout\s+([0-9]{1,10})", keyword.strip())
        if m is not None:
            timeout = int(m.group(1))
    return AuthPending(timeout=timeout)


def parse_control_message(text: str) -> ControlMessage:
    """Classify one control message (already split off and validated by the reader).

    Raises :class:`DecodeError` only for a ``PUSH_*`` message that is neither a valid
    PUSH_REQUEST nor PUSH_REPLY (2.6: "Received bad push/pull message").
    """
    if text.startswith("AUTH_FAILED"):
        return _parse_auth_failed(text)
    if text.startswith("PUSH_"):
        if text.startswith(_PUSH_REQUEST):
            return PushRequest()
        if text.startswith(_PUSH_REPLY):
            return _parse_push_reply(text)
        raise DecodeError(f"bad push/pull message {text[:64]!r}", "PUSH_", reason="bad_push")
    if text.startswith("RESTART"):
        flags, message = _signal_flags(_argument(text, "RESTART"))
        return Restart(message=message, advance="N" in flags, keep_password="P" in flags)
    if text.startswith("HALT"):
        flags, message = _signal_flags(_argument(text, "HALT"))
        return Halt(message=message, keep_password="P" in flags)
    if text.startswith("INFO_PRE"):
        return Info(pre=True, text=_argument(text, "INFO_PRE"))
    if text.startswith("INFO"):
        return Info(pre=False, text=_argument(text, "INFO"))
    if text.startswith("CR_RESPONSE"):
        return CrResponse(response=_argument(text, "CR_RESPONSE"))
    if text.startswith("AUTH_PENDING"):
        return _parse_auth_pending(text)
    if text.startswith("EXIT"):
        return Exit()
    return Unknown(text=text)


# --------------------------------------------------------------------------------------------
# Formatting (what a 2.6 server/client sends)


def format_auth_failed(reason: str | None = None) -> str:
    return "AUTH_FAILED" if not reason else f"AUTH_FAILED,{reason}"


def format_auth_failed_temp(message: str = "", *, backoff: int | None = None,
                            advance: str | None = None) -> str:
    """``AUTH_FAILED,TEMP[backoff N,advance X]:message`` (only to clients with IV_PROTO bit 8)."""
    flags = []
    if backoff is not None:
        flags.append(f"backoff {backoff}")
    if advance is not None:
        if advance not in ("no", "addr", "remote"):
            raise ValueError("advance must be no, addr or remote")
        flags.append(f"advance {advance}")
    flag_text = f"[{','.join(flags)}]" if flags else ""
    return f"AUTH_FAILED,TEMP{flag_text}:{message}"


def format_auth_pending(timeout: int | None = None) -> str:
    """Keyword form only for clients with IV_PROTO bit 4 (AUTH_PENDING_KW)."""
    return "AUTH_PENDING" if timeout is None else f"AUTH_PENDING,timeout {timeout}"


def format_restart(message: str = "", *, advance: bool = False,
                   keep_password: bool = False) -> str:
    flags = ("P" if keep_password else "") + ("N" if advance else "")
    body = (f"[{flags}]" if flags else "") + message
    return f"RESTART,{body}" if body else "RESTART"


def format_halt(message: str = "") -> str:
    return f"HALT,{message}" if message else "HALT"


PUSH_REQUEST = _PUSH_REQUEST
EXIT = "EXIT"
