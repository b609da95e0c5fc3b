"""What trivpn's compression messages say OpenVPN 2.6 does, checked against the real binary
(OpenVPN src/openvpn/options.c add_option() 'allow-compression', 'comp-lzo', 'compress';
comp.c check_compression_settings_valid; show_compression_warning)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.openvpn import openvpn_output
from tests.netns import NetnsLab
from trivpn.config import ConfigError, load_config
from trivpn.config.directives import RECEIVE_ONLY_WARNING

pytestmark = pytest.mark.integration

CLIENT = ["client", "dev tun", "proto udp", "remote 198.18.0.9 1194", "nobind", "ca ca.crt",
          "cert client.crt", "key client.key", "verb 4"]


def _openvpn(lab: NetnsLab, workdir: Path, extra: list[str]) -> str:
    """openvpn on the same config for at most 2 s, in a namespace of its own; its output."""
    conf = workdir / "ovpn.conf"
    conf.write_text("\n".join([*CLIENT, *extra]) + "\n")
    return openvpn_output(lab, workdir, ["--config", conf.name])


def _trivpn(workdir: Path, extra: list[str]) -> ConfigError | list[str]:
    conf = workdir / "t.conf"
    conf.write_text("\n".join([*CLIENT, *extra]) + "\n")
    try:
        return [w.message for w in load_config(conf).warnings]
    except ConfigError as exc:
        return exc


@pytest.mark.directive("allow-compression")
@pytest.mark.parametrize(("extra", "theirs"), [
    (["comp-lzo yes", "allow-compression no"],
     "'--allow-compression no' conflicts with  enabling compression"),
    (["allow-compression no", "comp-lzo yes"],
     "Compression is not allowed since allow-compression is set to 'stub-only'"),
    (["allow-compression no", "compress lz4-v2"],
     "Compression is not allowed since allow-compression is set to 'stub-only'"),
    (["allow-compression no", "allow-compression yes"],
     "Cannot set allow-compression to 'yes' after set to 'no'"),
])
def test_compression_refusals_that_say_openvpn_refuses_too(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, extra: list[str],
        theirs: str) -> None:
    out = _openvpn(lab, workdir, extra)
    assert f"Options error: {theirs}" in out, out[-3000:]
    ours = _trivpn(workdir, extra)
    assert isinstance(ours, ConfigError), ours
    assert "OpenVPN 2.6 refuses this too" in str(ours)
    assert f"t.conf:{len(CLIENT) + 2}:" in str(ours)


@pytest.mark.directive("comp-lzo", "compress")
@pytest.mark.parametrize("directive", ["comp-lzo", "comp-lzo yes", "comp-lzo adaptive",
                                       "compress lzo", "compress lz4", "compress lz4-v2"])
def test_compression_is_accepted_receive_only_as_openvpn_says(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, directive: str) -> None:
    out = _openvpn(lab, workdir, [directive])
    assert ("WARNING: Compression for receiving enabled. Compression has been used in the past "
            "to break encryption. Sent packets are not compressed unless \"allow-compression "
            "yes\" is also set.") in out, out[-3000:]
    assert "Options error" not in out, out[-3000:]
    ours = _trivpn(workdir, [directive])
    assert isinstance(ours, list) and RECEIVE_ONLY_WARNING in ours, ours
    assert "as OpenVPN 2.6" in RECEIVE_ONLY_WARNING


@pytest.mark.directive("comp-lzo", "compress")
@pytest.mark.parametrize("directive", ["comp-lzo no", "compress", "compress stub-v2",
                                       "allow-compression yes\ncomp-lzo yes"])
def test_stubs_and_allow_compression_yes_give_no_receive_only_warning(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, directive: str) -> None:
    lines = directive.split("\n")
    out = _openvpn(lab, workdir, lines)
    assert "Compression for receiving enabled" not in out and "Options error" not in out, \
        out[-3000:]
    ours = _trivpn(workdir, lines)
    assert isinstance(ours, list) and RECEIVE_ONLY_WARNING not in ours, ours


@pytest.mark.directive("fragment")
@pytest.mark.parametrize(("extra", "theirs"), [
    (["fragment 60"], "--fragment needs to be at least 68"),
    (["fragment 500 foo"], "Unknown parameter to --fragment: foo"),
    (["proto tcp", "fragment 500"], "--fragment can only be used with --proto udp"),
])
def test_fragment_refusals_that_say_openvpn_refuses_too(
        lab: NetnsLab, openvpn_binary: None, workdir: Path, extra: list[str],
        theirs: str) -> None:
    out = _openvpn(lab, workdir, extra)
    assert f"Options error: {theirs}" in out, out[-3000:]
    ours = _trivpn(workdir, extra)
    assert isinstance(ours, ConfigError), ours
    assert "OpenVPN 2.6 refuses this too" in str(ours)
