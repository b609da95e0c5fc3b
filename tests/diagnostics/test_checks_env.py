"""env.tun and env.privileges."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import require_root
from tests.diagnostics.doctorkit import CLIENT, by_id, context, write_config, write_pki
from tests.netns import NetnsLab
from trivpn.diagnostics.checks_env import CHECKS, effective_caps, has_net_admin

TUN = by_id(CHECKS, "env.tun")
PRIVILEGES = by_id(CHECKS, "env.privileges")

STATUS = "Name:\tpython\nCapInh:\t0000000000000000\nCapPrm:\t{0}\nCapEff:\t{0}\n"


@pytest.mark.parametrize(("mask", "expected"), [
    ("000001ffffffffff", True),     # root
    ("0000000000001000", True),     # only CAP_NET_ADMIN (bit 12)
    ("0000000000000000", False),
    ("0000000000000400", False),    # CAP_NET_BIND_SERVICE only
])
def test_net_admin_is_read_from_capeff(mask: str, expected: bool) -> None:
    assert effective_caps(STATUS.format(mask)) == int(mask, 16)
    assert has_net_admin(STATUS.format(mask)) is expected


async def test_tun_device_can_be_created_in_a_namespace(netns_lab: NetnsLab,
                                                        tmp_path: Path) -> None:
    ns = netns_lab.add("t")
    ctx = context(write_config(tmp_path, "x"), netns=ns.name)
    result = await TUN.run(ctx)
    assert result.status == "ok"
    assert result.evidence["device"] == "10:200"
    assert result.evidence["created"].startswith("tvdoc")
    # the probe device was not left behind
    assert "tvdoc" not in ns.run(["ip", "-o", "link"]).stdout


async def test_privileges_ok_as_root(tmp_path: Path) -> None:
    require_root()
    result = await PRIVILEGES.run(context(write_config(tmp_path, "x")))
    assert result.status == "ok"
    assert result.evidence["cap_net_admin"] is True
    assert result.evidence["euid"] == os.geteuid()


async def test_privileges_runs_without_a_parsed_config(tmp_path: Path) -> None:
    result = await PRIVILEGES.run(context(write_config(tmp_path, "not a config\n")))
    assert "cap_net_admin" in result.evidence


async def test_unknown_user_to_drop_to_fails(tmp_path: Path) -> None:
    write_pki(tmp_path)
    path = write_config(tmp_path, CLIENT + "user trivpn-no-such-user\n")
    result = await PRIVILEGES.run(context(path))
    assert result.status == "fail"
    assert result.evidence["user"] == "trivpn-no-such-user"
    assert f"{path}:12" in result.fix


async def test_unknown_group_fails(tmp_path: Path) -> None:
    write_pki(tmp_path)
    result = await PRIVILEGES.run(context(write_config(tmp_path, CLIENT + "group nogrp-xyz\n")))
    assert result.status == "fail"
    assert "groupadd nogrp-xyz" in result.fix
