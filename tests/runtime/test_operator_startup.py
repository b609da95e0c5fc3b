"""Operator tools start before privileges are dropped, and a failure is a startup error."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from tests.config.helpers import server
from trivpn.logging import get_logger
from trivpn.runtime.operator import OperatorError, OperatorTools


def fake_server(extra: str, base_dir: Path) -> SimpleNamespace:
    from dataclasses import replace

    options = replace(server(extra), base_dir=base_dir)
    return SimpleNamespace(options=options, log=get_logger(), table=[], tap=False)


@pytest.mark.directive("management")
async def test_password_file_is_read_and_the_socket_bound_by_open(tmp_path: Path):
    (tmp_path / "pw.txt").write_text("s3cret\n")
    tools = OperatorTools()
    await tools.open_server(fake_server(
        f"management {tmp_path / 'm.sock'} unix pw.txt\n", tmp_path))
    assert tools.management is not None and tools.management.password == "s3cret"
    assert (tmp_path / "m.sock").is_socket()  # bound now, not when serving starts


@pytest.mark.directive("management")
async def test_a_missing_password_file_is_an_operator_error(tmp_path: Path):
    tools = OperatorTools()
    with pytest.raises(OperatorError, match="cannot read the management password file"):
        await tools.open_server(fake_server(
            f"management {tmp_path / 'm.sock'} unix nothere.txt\n", tmp_path))


@pytest.mark.directive("management")
async def test_a_management_port_in_use_is_an_operator_error(tmp_path: Path):
    (tmp_path / "pw").write_text("x\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        tools = OperatorTools()
        with pytest.raises(OperatorError, match="cannot start the management interface"):
            await tools.open_server(fake_server(
                f"management 127.0.0.1 {port} pw\n", tmp_path))
        metrics = OperatorTools(metrics_listen=("127.0.0.1", port))
        with pytest.raises(OperatorError, match="cannot start the metrics endpoint"):
            await metrics.open_server(fake_server("", tmp_path))
    await trio.lowlevel.checkpoint()


@pytest.mark.directive("management")
async def test_a_client_whose_management_cannot_start_exits_1_before_connecting(
        tmp_path: Path):
    from structlog.testing import capture_logs

    from tests.interop.openvpn import write_pki
    from tests.interop.serverkit import client_lines
    from trivpn.config import load_config
    from trivpn.runtime.client import run_client

    write_pki(tmp_path)
    conf = tmp_path / "client.conf"
    conf.write_text("\n".join(client_lines(server_ip="198.18.0.1", extra=[
        f"management {tmp_path / 'm.sock'} unix nothere.txt"])) + "\n")
    with capture_logs() as logs:
        code = await run_client(load_config(conf), get_logger(), OperatorTools())
    assert code == 1
    events = [e["event"] for e in logs]
    assert "setup_failed" in events and "link_open" not in events
