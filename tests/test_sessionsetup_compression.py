"""Compression directives → SessionConfig, as OpenVPN 2.6's options.c sets its flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.openvpn import write_pki
from trivpn.config import load_config
from trivpn.protocol.compression import Compression
from trivpn.protocol.session import SessionConfig
from trivpn.sessionsetup import session_config

CLIENT = ["client", "dev tun", "proto udp", "remote 198.18.0.1 1194", "ca ca.crt",
          "cert client.crt", "key client.key", "remote-cert-tls server"]


def _session(tmp_path: Path, *extra: str) -> SessionConfig:
    write_pki(tmp_path)
    conf = tmp_path / "test.conf"
    conf.write_text("\n".join([*CLIENT, *extra]) + "\n")
    return session_config(load_config(conf), unix_time_offset=0.0)


@pytest.mark.directive("comp-lzo")
@pytest.mark.parametrize(("lines", "kind", "adaptive"), [
    (("comp-lzo",), Compression.LZO, True),
    (("comp-lzo adaptive",), Compression.LZO, True),
    (("comp-lzo yes",), Compression.LZO, False),
    (("comp-lzo no",), Compression.LZO_STUB, False),
    (("compress lz4", "comp-lzo yes"), Compression.LZO, False),
])
def test_comp_lzo_selects_lzo_framing_receive_only(tmp_path: Path, lines: tuple[str, ...],
                                                   kind: Compression, adaptive: bool) -> None:
    cfg = _session(tmp_path, *lines)
    assert (cfg.compression, cfg.comp_adaptive) == (kind, adaptive)
    assert not cfg.compress_outgoing
    assert cfg.compression_stub_only is (kind is Compression.LZO_STUB)


@pytest.mark.directive("compress")
@pytest.mark.parametrize(("arg", "kind"), [
    ("", Compression.STUB), ("stub", Compression.STUB), ("stub-v2", Compression.STUB_V2),
    ("lzo", Compression.LZO), ("lz4", Compression.LZ4), ("lz4-v2", Compression.LZ4_V2),
])
def test_compress_selects_the_algorithm(tmp_path: Path, arg: str, kind: Compression) -> None:
    cfg = _session(tmp_path, f"compress {arg}".strip())
    assert cfg.compression is kind and not cfg.compress_outgoing
    # any compress directive lifts 2.6's stub-only default (options.c: comp.flags != 0)
    assert not cfg.compression_stub_only


@pytest.mark.directive("comp-noadapt")
def test_comp_noadapt_turns_adaptive_lzo_off(tmp_path: Path) -> None:
    assert _session(tmp_path, "comp-lzo").comp_adaptive
    assert not _session(tmp_path, "comp-lzo", "comp-noadapt").comp_adaptive


@pytest.mark.directive("allow-compression")
@pytest.mark.parametrize(("lines", "outgoing", "stub_only"), [
    ((), False, True),  # 2.6's default: stub framings only, pushed compression refused
    (("comp-lzo no",), False, True),
    (("allow-compression asym",), False, False),
    (("allow-compression asym", "comp-lzo yes"), False, False),
    (("comp-lzo yes", "allow-compression yes"), True, False),
    (("allow-compression yes",), True, False),
    (("allow-compression no", "compress stub-v2"), False, True),
])
def test_allow_compression_modes(tmp_path: Path, lines: tuple[str, ...], outgoing: bool,
                                 stub_only: bool) -> None:
    cfg = _session(tmp_path, *lines)
    assert (cfg.compress_outgoing, cfg.compression_stub_only) == (outgoing, stub_only)
    assert (cfg.lzo_compress is not None) is outgoing


@pytest.mark.directive("comp-lzo")
def test_real_compression_announces_the_algorithms_in_peer_info(tmp_path: Path) -> None:
    info = _session(tmp_path, "comp-lzo yes").peer_info or ""
    assert "IV_LZ4=1\nIV_LZ4v2=1\nIV_LZO=1\nIV_COMP_STUB=1\nIV_COMP_STUBv2=1\n" in info
    assert "IV_LZO_STUB" not in info
    stub = _session(tmp_path, "compress stub-v2").peer_info or ""
    assert "IV_LZO_STUB=1" in stub and "IV_LZ4" not in stub


@pytest.mark.directive("comp-lzo")
def test_receive_only_warning_is_given(tmp_path: Path) -> None:
    write_pki(tmp_path)
    conf = tmp_path / "test.conf"
    conf.write_text("\n".join([*CLIENT, "comp-lzo yes"]) + "\n")
    warnings = [w.message for w in load_config(conf).warnings]
    assert any("sent packets are not compressed unless 'allow-compression yes'" in w
               for w in warnings), warnings


@pytest.mark.directive("fragment")
@pytest.mark.parametrize(("lines", "fragment", "encap", "mssfix"), [
    (("fragment 500",), 500, 0, (500, True)),  # options.c: mssfix defaults to the fragment
    (("fragment 500", "mssfix"), 500, 0, (500, True)),
    (("fragment 1300 mtu", "mssfix 1400"), 1300, 28, (1400, False)),
])
def test_fragment_reaches_the_session_and_sets_the_default_mssfix(
        tmp_path: Path, lines: tuple[str, ...], fragment: int, encap: int,
        mssfix: tuple[int, bool]) -> None:
    write_pki(tmp_path)
    conf = tmp_path / "test.conf"
    conf.write_text("\n".join([*CLIENT, *lines]) + "\n")
    options = load_config(conf)
    assert (options.mssfix.max, options.mssfix.mtu) == mssfix
    cfg = session_config(options, unix_time_offset=0.0)
    assert (cfg.fragment, cfg.fragment_encap) == (fragment, encap)
    assert "mtu-dynamic" in cfg.options_string  # options.c options_string: fragment
