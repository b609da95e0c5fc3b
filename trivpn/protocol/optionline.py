"""OpenVPN's option-line syntax (``options.c`` ``parse_line()``): config files and pushed options.

Config files (``trivpn.config``, which adds file and line to errors) and the options a server
pushes (``trivpn.protocol.push``) are read with the same rules, so the tokenizer lives here, below
both: the protocol layer imports nothing of the config layer.
"""

from __future__ import annotations

MAX_TOKENS = 16  # MAX_PARMS
MAX_TOKEN_CHARS = 256  # OPTION_PARM_SIZE

_TOO_MANY = f"too many arguments (OpenVPN allows at most {MAX_TOKENS} tokens)"
_SPACE = " \t\n\v\f\r"
_INITIAL, _UNQUOTED, _DQUOTED, _SQUOTED = range(4)


class OptionLineError(ValueError):
    """A line that OpenVPN's ``parse_line()`` refuses; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def split_option_line(line: str) -> list[str]:  # noqa: PLR0912 - one state machine
    """Split one option line into tokens, exactly as OpenVPN's ``parse_line()`` does.

    - whitespace separates tokens; a token starting with ``#`` or ``;`` ends the line (inside a
      token they are ordinary characters: ``a#b`` is one token);
    - a token *starting* with ``"`` runs to the next unescaped ``"``, one starting with ``'``
      to the next ``'`` (no escapes inside); the closing quote ends the token, and a quote
      in the middle of a token is an ordinary character;
    - outside single quotes ``\\\\`` → ``\\``, ``\\"`` → ``"``, backslash+space → space (also
      inside unquoted tokens); any other backslash sequence is an error, as in OpenVPN.
    """
    line = line.split("\0", 1)[0]
    tokens: list[str] = []
    buf: list[str] = []
    state = _INITIAL
    backslash = False

    for ch in line:
        if not backslash and ch == "\\" and state != _SQUOTED:
            backslash = True
            continue
        out: str | None = None
        done = False
        if state == _INITIAL:
            if ch not in _SPACE:
                if ch in "#;":  # even right after a backslash, as in OpenVPN
                    backslash = False
                    break
                if not backslash and ch == '"':
                    state = _DQUOTED
                elif not backslash and ch == "'":
                    state = _SQUOTED
                else:
                    out, state = ch, _UNQUOTED
        elif state == _UNQUOTED:
            if not backslash and ch in _SPACE:
                done = True
            else:
                out = ch
        elif state == _DQUOTED:
            if not backslash and ch == '"':
                done = True
            else:
                out = ch
        elif ch == "'":  # _SQUOTED
            done = True
        else:
            out = ch
        if done:
            tokens.append("".join(buf))
            buf, state = [], _INITIAL
            if len(tokens) > MAX_TOKENS:
                raise OptionLineError(_TOO_MANY)
        if backslash and out is not None and out not in '\\"' and out not in _SPACE:
            raise OptionLineError(
                f"bad backslash usage '\\{out}': only '\\\\', '\\\"' and '\\ ' are allowed "
                "(double the backslashes in Windows paths)")
        backslash = False
        if out is not None:
            if len(buf) >= MAX_TOKEN_CHARS:
                raise OptionLineError(f"argument is longer than {MAX_TOKEN_CHARS} characters")
            buf.append(out)

    if backslash and state != _INITIAL:
        raise OptionLineError("backslash at end of line: use '\\\\' for a literal backslash")
    if state == _DQUOTED:
        raise OptionLineError('unterminated " quote')
    if state == _SQUOTED:
        raise OptionLineError("unterminated ' quote")
    if state == _UNQUOTED:
        tokens.append("".join(buf))
        if len(tokens) > MAX_TOKENS:
            raise OptionLineError(_TOO_MANY)
    return tokens
