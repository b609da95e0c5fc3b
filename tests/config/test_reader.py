"""File syntax: BOM, leading --, inline blocks, includes, cd and relative paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.helpers import CLIENT_BASE
from trivpn.config import ConfigError, Directive, load_config, parse_config, read_config_text


def names(text: str) -> list[tuple[str, tuple[str, ...], int]]:
    return [(d.name, d.args, d.line) for d in read_config_text(text, "x.conf").directives]


def test_comments_and_blank_lines_are_skipped_but_counted() -> None:
    assert names("# c\n\n; c\n  port 1194 # c\n") == [("port", ("1194",), 4)]


def test_utf8_bom_is_ignored() -> None:
    assert names("\ufeffport 1194\n") == [("port", ("1194",), 1)]


def test_leading_double_dash_is_tolerated() -> None:
    assert names("--port 1194\n--persist-key\n") == [("port", ("1194",), 1),
                                                      ("persist-key", (), 2)]


def test_crlf_line_endings() -> None:
    assert names("port 1194\r\nverb 3\r\n") == [("port", ("1194",), 1), ("verb", ("3",), 2)]


def test_inline_block_content_is_verbatim_and_lines_are_counted() -> None:
    text = "verb 3\n<ca>\n  line one\n\n# not a comment\n</ca>\nport 1\n"
    got = read_config_text(text, "x.conf").directives
    assert got[1] == Directive("ca", (), got[1].path, 2, "  line one\n\n# not a comment\n")
    assert (got[2].name, got[2].line) == ("port", 7)


def test_inline_end_tag_may_be_indented_and_followed_by_text() -> None:
    got = read_config_text("<key>\nk\n   </key> trailing\n", "x.conf").directives
    assert got[0].inline == "k\n"


def test_inline_block_missing_end_tag_names_file_and_opening_line() -> None:
    with pytest.raises(ConfigError) as info:
        read_config_text("verb 3\n<cert>\nabc\n</ca>\n", "x.conf")
    assert str(info.value) == "x.conf:2: inline block <cert> has no end tag </cert>"


def test_auth_user_pass_inline_block() -> None:
    o = parse_config("client\ndev tun\nremote a\nca ca.crt\n"
                     "<auth-user-pass>\nalice\ns3cret\n</auth-user-pass>\n", "c.conf")
    assert o.auth_user_pass != "prompt" and o.auth_user_pass is not None
    assert o.auth_user_pass.read_text() == "alice\ns3cret\n"
    assert "s3cret" not in repr(o)


def test_inline_tls_auth_takes_direction_only_from_key_direction() -> None:
    o = parse_config(CLIENT_BASE + "<tls-auth>\nkey\n</tls-auth>\n", "c.conf")
    assert o.key_direction is None
    o = parse_config(CLIENT_BASE + "<tls-auth>\nkey\n</tls-auth>\nkey-direction 1\n", "c.conf")
    assert o.key_direction == 1


def test_relative_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    o = parse_config(CLIENT_BASE, tmp_path / "sub" / "client.conf")
    assert o.ca is not None and o.ca.path == tmp_path / "sub" / "ca.crt"


def test_absolute_paths_stay_absolute(tmp_path: Path) -> None:
    o = parse_config(CLIENT_BASE.replace("ca ca.crt", "ca /etc/pki/ca.crt"),
                     tmp_path / "client.conf")
    assert o.ca is not None and o.ca.path == Path("/etc/pki/ca.crt")


@pytest.mark.directive("cd")
def test_cd_changes_the_directory_for_relative_paths(tmp_path: Path) -> None:
    o = parse_config("cd keys\n" + CLIENT_BASE + "status st.log\n", tmp_path / "client.conf")
    assert o.ca is not None and o.ca.path == tmp_path / "keys" / "ca.crt"
    assert o.status is not None and o.status.path == tmp_path / "keys" / "st.log"
    assert o.base_dir == tmp_path / "keys"


@pytest.mark.directive("config")
def test_config_include_is_expanded_in_place(tmp_path: Path) -> None:
    (tmp_path / "common.conf").write_text("verb 4\npersist-key\n")
    (tmp_path / "client.conf").write_text(CLIENT_BASE + "config common.conf\nmute 5\n")
    o = load_config(tmp_path / "client.conf", read_files=False)
    assert (o.verb, o.persist_key, o.mute) == (4, True, 5)
    assert o.location("verb") == (tmp_path / "common.conf", 1)
    assert o.location("mute") == (tmp_path / "client.conf", 9)


def test_error_inside_include_names_the_included_file(tmp_path: Path) -> None:
    (tmp_path / "common.conf").write_text("verb 3\nverb loud\n")
    with pytest.raises(ConfigError) as info:
        parse_config(CLIENT_BASE + "config common.conf\n", tmp_path / "client.conf")
    assert (info.value.path, info.value.line) == (tmp_path / "common.conf", 2)


def test_missing_include_names_the_including_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("verb 3\nconfig nope.conf\n", tmp_path / "client.conf")
    assert info.value.reason == (f"cannot read included config file '{tmp_path / 'nope.conf'}':"
                                 " No such file or directory")
    assert (info.value.path, info.value.line) == (tmp_path / "client.conf", 2)


def test_includes_nest_up_to_ten_files(tmp_path: Path) -> None:
    for i in range(1, 10):
        (tmp_path / f"{i}.conf").write_text(f"config {i + 1}.conf\n" if i < 9 else "verb 5\n")
    o = parse_config(CLIENT_BASE + "config 1.conf\n", tmp_path / "client.conf")
    assert o.verb == 5


def test_self_include_stops_after_ten_levels(tmp_path: Path) -> None:
    (tmp_path / "loop.conf").write_text("config loop.conf\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "loop.conf")
    assert info.value.reason == ("'config loop.conf' exceeds 10 levels of nested config files "
                                 "(does a file include itself?)")


def test_unreadable_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.conf")
    assert str(info.value) == (f"{tmp_path / 'absent.conf'}: cannot read config file: "
                               "No such file or directory")



def test_line_length_limit_is_openvpns() -> None:
    line = "setenv X " + "a" * 245
    assert len(line) == 254
    assert names(line + "\n")[0][0] == "setenv"
    with pytest.raises(ConfigError) as info:
        read_config_text(line + "a\n", "x.conf")
    assert str(info.value) == ("x.conf:1: line is longer than 254 bytes "
                               "(OpenVPN's maximum line length)")
