"""tun-mtu-max: the largest tun-mtu a server may push, announced as IV_MTU (OpenVPN 2.6
init.c frame_finalize_options: at least 1600 and at least tun-mtu)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.openvpn import write_pki
from trivpn.config import load_config, parse_config
from trivpn.protocol.push import parse_pushed_options
from trivpn.runtime.tunnel import plan_client_tunnel
from trivpn.sessionsetup import session_config

CLIENT = ["client", "dev tun", "proto udp", "remote 198.18.0.1 1194", "ca ca.crt",
          "cert client.crt", "key client.key"]


def _peer_info(tmp_path: Path, extra: list[str]) -> str:
    write_pki(tmp_path)
    conf = tmp_path / "c.conf"
    conf.write_text("\n".join([*CLIENT, *extra]) + "\n")
    info = session_config(load_config(conf), unix_time_offset=0.0).peer_info
    assert info is not None
    return info


@pytest.mark.directive("tun-mtu-max")
@pytest.mark.parametrize(("extra", "announced"), [
    ([], 1600), (["tun-mtu-max 9000"], 9000), (["tun-mtu-max 1400"], 1600),
    (["tun-mtu 2000", "tun-mtu-max 1700"], 2000)])
def test_iv_mtu_announces_the_effective_tun_mtu_max(tmp_path: Path, extra: list[str],
                                                   announced: int) -> None:
    assert f"IV_MTU={announced}\n" in _peer_info(tmp_path, extra)


@pytest.mark.directive("tun-mtu-max")
@pytest.mark.parametrize(("extra", "mtu", "warned"), [
    ("", 1600, True), ("tun-mtu-max 9000\n", 9000, False)])
def test_a_pushed_tun_mtu_above_tun_mtu_max_is_capped_with_openvpns_hint(
        extra: str, mtu: int, warned: bool) -> None:
    options = parse_config("client\ndev tun\nremote 198.18.0.1 1194\nca ca.crt\ncert c.crt\n"
                           "key c.key\n" + extra, "/etc/c.conf")
    plan = plan_client_tunnel(options, parse_pushed_options(["tun-mtu 9000"]),
                              remote_host="198.18.0.1", net_gateway=None)
    assert plan.mtu == mtu
    hint = ("Server-pushed tun-mtu is too large, please add tun-mtu-max 9000 in the client "
            "configuration")
    assert (hint in plan.warnings) is warned
