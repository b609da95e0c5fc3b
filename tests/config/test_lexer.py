"""The tokenizer follows OpenVPN's parse_line() rules."""

from __future__ import annotations

import pytest

from trivpn.config import ConfigError, tokenize_line


@pytest.mark.parametrize(
    ("line", "tokens"),
    [
        ("port 1194", ["port", "1194"]),
        ("  \tport\t 1194  ", ["port", "1194"]),
        ("", []),
        ("# a comment", []),
        ("; a comment", []),
        ("   ;indented comment", []),
        ("remote vpn.example.com 1194 # main server", ["remote", "vpn.example.com", "1194"]),
        ("remote vpn.example.com 1194 ;backup", ["remote", "vpn.example.com", "1194"]),
        ("setenv a#b c;d", ["setenv", "a#b", "c;d"]),
        ('push "route 198.18.100.0 255.0.0.0"', ["push", "route 198.18.100.0 255.0.0.0"]),
        ('push "dhcp-option DNS 198.18.100.1" # dns', ["push", "dhcp-option DNS 198.18.100.1"]),
        ("x 'single # quoted'", ["x", "single # quoted"]),
        ("x 'back\\slash'", ["x", "back\\slash"]),
        ('x "a\\"b"', ["x", 'a"b']),
        ('x "a\\\\b"', ["x", "a\\b"]),
        ("x a\\ b", ["x", "a b"]),
        ("x c:\\\\dir\\\\f.key", ["x", "c:\\dir\\f.key"]),
        ('x ""', ["x", ""]),
        ('x "ab"cd', ["x", "ab", "cd"]),
        ('x a"b', ["x", 'a"b']),
        ("x a'b", ["x", "a'b"]),
        ("port 1194\r", ["port", "1194"]),
        ("x \\#not-a-token", ["x"]),
    ],
)
def test_tokenize_line_splits_like_openvpn(line: str, tokens: list[str]) -> None:
    assert tokenize_line(line) == tokens


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('x "open', 'unterminated " quote'),
        ("x 'open", "unterminated ' quote"),
        ("x c:\\dir", "bad backslash usage '\\d': only '\\\\', '\\\"' and '\\ ' are allowed "
                      "(double the backslashes in Windows paths)"),
        ("x abc\\", "backslash at end of line: use '\\\\' for a literal backslash"),
        ("x" + " a" * 16, "too many arguments (OpenVPN allows at most 16 tokens)"),
        ("x " + "a" * 257, "argument is longer than 256 characters"),
    ],
)
def test_tokenize_line_rejects_what_openvpn_rejects(line: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        tokenize_line(line, "c.conf", 7)
    assert info.value.reason == reason
    assert str(info.value) == f"c.conf:7: {reason}"


def test_tokenize_line_allows_sixteen_tokens() -> None:
    assert len(tokenize_line("x" + " a" * 15)) == 16
