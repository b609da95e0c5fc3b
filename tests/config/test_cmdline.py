"""OpenVPN's command-line form (config/cmdline.py): ``--name args...`` as directives, ``--config``
read in place, ``--cd``, and errors that name the argument's position."""

from __future__ import annotations

from pathlib import Path

import pytest

from trivpn.config import COMMAND_LINE, ConfigError, load_command_line, split_arguments
from trivpn.config.reader import Directive

CLIENT_ARGS = ["--client", "--dev", "tun", "--proto", "udp", "--remote", "198.18.0.1", "1194",
               "--ca", "ca.crt", "--cert", "c.crt", "--key", "c.key", "--nobind"]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_each_double_dash_name_starts_a_directive_with_the_arguments_that_follow() -> None:
    found = split_arguments(["--remote", "198.18.0.1", "1194", "--nobind", "--verb", "4"])
    assert [(d.name, d.args, d.line) for d in found] == [
        ("remote", ("198.18.0.1", "1194"), 1), ("nobind", (), 4), ("verb", ("4",), 5)]
    assert all(d.path == COMMAND_LINE for d in found)


def test_a_single_argument_without_dashes_is_a_config_file() -> None:
    assert split_arguments(["client.conf"]) == [
        Directive("config", ("client.conf",), COMMAND_LINE, 1)]


def test_a_leading_argument_without_dashes_among_others_is_an_error_naming_its_position() -> None:
    with pytest.raises(ConfigError) as info:
        split_arguments(["client.conf", "--verb", "4"], first_position=2)
    assert str(info.value).startswith("command line, argument 2: 'client.conf' is not an option")


def test_options_alone_on_the_command_line_make_a_client(tmp_path: Path) -> None:
    o = load_command_line(CLIENT_ARGS, cwd=tmp_path, read_files=False)
    assert o.role == "client" and o.nobind and o.dev == "tun"
    assert [(r.host, r.port, r.proto) for r in o.remotes] == [("198.18.0.1", 1194, "udp")]
    assert o.ca is not None and o.ca.path == tmp_path / "ca.crt"
    assert o.config_path == COMMAND_LINE


def test_a_command_line_error_names_the_argument_position() -> None:
    with pytest.raises(ConfigError) as info:
        load_command_line([*CLIENT_ARGS, "--verb", "4", "5"], read_files=False)
    assert str(info.value) == "command line, argument 16: 'verb' takes 1 argument, got 2"


def test_an_unknown_option_is_refused_like_in_a_file() -> None:
    with pytest.raises(ConfigError, match=r"^command line, argument 1: unknown directive "
                                          r"'frobnicate'"):
        load_command_line(["--frobnicate", *CLIENT_ARGS], read_files=False)


def test_a_later_argument_overrides_the_config_file(tmp_path: Path) -> None:
    conf = _write(tmp_path / "c.conf", "tun-mtu 1400\nverb 3\n")
    o = load_command_line([*CLIENT_ARGS, "--config", str(conf), "--tun-mtu", "1300"],
                          cwd=tmp_path, read_files=False)
    assert (o.tun_mtu, o.verb) == (1300, 3)


def test_the_config_file_overrides_an_earlier_argument(tmp_path: Path) -> None:
    # the real openvpn 2.6: `--tun-mtu 1300 --config f` with `tun-mtu 1400` in f runs 1400
    # (tests/interop/test_openvpn_claims.py checks it)
    conf = _write(tmp_path / "c.conf", "tun-mtu 1400\n")
    o = load_command_line(["--tun-mtu", "1300", "--config", str(conf), *CLIENT_ARGS],
                          cwd=tmp_path, read_files=False)
    assert o.tun_mtu == 1400


def test_an_option_given_twice_on_the_command_line_keeps_the_last() -> None:
    o = load_command_line([*CLIENT_ARGS, "--verb", "5", "--verb", "2"], read_files=False)
    assert o.verb == 2


def test_remotes_from_file_and_command_line_accumulate_in_order(tmp_path: Path) -> None:
    conf = _write(tmp_path / "c.conf", "remote 198.18.0.2 1195\n")
    o = load_command_line([*CLIENT_ARGS, "--config", str(conf), "--remote", "198.18.0.3"],
                          cwd=tmp_path, read_files=False)
    assert [r.host for r in o.remotes] == ["198.18.0.1", "198.18.0.2", "198.18.0.3"]


def test_an_error_in_the_config_file_names_the_file_and_line(tmp_path: Path) -> None:
    conf = _write(tmp_path / "c.conf", "verb 4\nverb x\n")
    with pytest.raises(ConfigError) as info:
        load_command_line(["--config", str(conf), *CLIENT_ARGS], cwd=tmp_path)
    assert str(info.value).startswith(f"{conf}:2: 'verb' expects")


def test_an_unreadable_config_file_names_its_argument(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_command_line(["--verb", "3", "--config", "missing.conf"], cwd=tmp_path)
    assert str(info.value).startswith(
        f"command line, argument 3: cannot read config file '{tmp_path / 'missing.conf'}'")


def test_command_line_files_resolve_against_the_working_directory_and_file_lines_against_the_file(
        tmp_path: Path) -> None:
    conf = _write(tmp_path / "vpn" / "c.conf", "ca ca.crt\n")
    o = load_command_line(["--config", "vpn/c.conf", *CLIENT_ARGS[:8], "--cert", "my.crt",
                           "--key", "my.key"], cwd=tmp_path, read_files=False)
    assert o.config_path == conf
    assert o.ca is not None and o.ca.path == tmp_path / "vpn" / "ca.crt"
    assert o.cert is not None and o.cert.path == tmp_path / "my.crt"


@pytest.mark.directive("cd")
def test_cd_first_changes_where_the_config_and_every_relative_file_are_found(
        tmp_path: Path) -> None:
    # openvpn@.service: --cd /etc/openvpn --config NAME.conf --writepid ...
    _write(tmp_path / "etc" / "x.conf", "ca ca.crt\n")
    o = load_command_line(["--cd", "etc", "--config", "x.conf", *CLIENT_ARGS[:8],
                           "--cert", "c.crt", "--key", "c.key", "--writepid", "x.pid"],
                          cwd=tmp_path, read_files=False)
    etc = tmp_path / "etc"
    assert o.ca is not None and o.ca.path == etc / "ca.crt"
    assert o.cert is not None and o.cert.path == etc / "c.crt"
    assert o.writepid == etc / "x.pid"


def test_cd_to_a_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^command line, argument 1: cd to .* failed"):
        load_command_line(["--cd", "nowhere", *CLIENT_ARGS], cwd=tmp_path, read_files=False)


def test_inline_blocks_cannot_be_given_on_the_command_line() -> None:
    with pytest.raises(ConfigError, match=r"inline blocks .* only be written in a config file"):
        load_command_line([*CLIENT_ARGS, "--<ca>"], read_files=False)


def test_command_line_files_are_read_with_the_files_of_the_config(tmp_path: Path) -> None:
    _write(tmp_path / "ca.crt", "CA TEXT\n")
    _write(tmp_path / "c.crt", "CERT\n")
    _write(tmp_path / "c.key", "KEY\n")
    o = load_command_line(CLIENT_ARGS, cwd=tmp_path)
    assert o.ca is not None and o.ca.text == "CA TEXT\n"
    with pytest.raises(ConfigError, match=r"^command line, argument 11: cannot read cert"):
        load_command_line([*CLIENT_ARGS[:10], "--cert", "gone.crt", *CLIENT_ARGS[12:]],
                          cwd=tmp_path)


def test_setenv_opt_on_the_command_line_warns_for_an_unknown_option() -> None:
    o = load_command_line([*CLIENT_ARGS, "--setenv", "opt", "block-outside-dns"],
                          read_files=False)
    assert any("block-outside-dns" in str(w) and str(w).startswith("command line, argument 16")
               for w in o.warnings)
