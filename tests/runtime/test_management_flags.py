"""The management flags (management-query-remote, -query-proxy, -signal, -forget-disconnect,
-up-down, -client) on the management interface itself, with a fake client runtime; the real
client against openvpn 2.6 is in tests/interop/test_client_management_flags.py."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from tests.runtime.test_management import Client
from trivpn.config import ConfigError, load_config
from trivpn.config.options import HttpProxy, Remote
from trivpn.logging import get_logger
from trivpn.runtime.client import _proto_name, _with_proxy
from trivpn.runtime.management import (
    ManagementServer,
    ProxyAnswer,
    RemoteAnswer,
    parse_proxy_answer,
    parse_remote_answer,
)
from trivpn.runtime.stats import LogHistory, OperatorState
from trivpn.runtime.supervisor import RemoteSchedule

BANNER = ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info"


class FakeClientRuntime:
    is_server = False

    def status_lines(self, version: int) -> list[str]:
        return ["END"]

    def kill(self, target: str) -> str:
        return "ERROR"

    def bytecount_lines(self) -> list[str]:
        return []


def _server(path: Path, signals: list[signal.Signals], *, up_down: bool = False,
            connect_out: bool = False) -> ManagementServer:
    return ManagementServer(FakeClientRuntime(), LogHistory(), OperatorState(), get_logger(),
                            host=str(path), port=None, unix=True,
                            send_signal=signals.append, up_down=up_down,
                            connect_out=connect_out)


async def _connected(server: ManagementServer, path: Path) -> Client:
    client = Client(await trio.open_unix_socket(str(path)))
    assert await client.line() == BANNER
    return client


@pytest.mark.parametrize(("words", "answer"), [
    (["ACCEPT"], RemoteAnswer("ACCEPT")),
    (["SKIP"], RemoteAnswer("SKIP", skip=1)),
    (["SKIP", "3"], RemoteAnswer("SKIP", skip=3)),
    (["MOD", "vpn.example", "1195"], RemoteAnswer("MOD", "vpn.example", 1195)),
    (["MOD", "vpn.example"], None),
    (["MOD", "vpn.example", "port"], None),
    (["MOD", "h" * 80, "1195"], None),
    (["accept"], None),
])
def test_remote_answers_parse_as_openvpn_reads_them(words: list[str],
                                                     answer: RemoteAnswer | None) -> None:
    assert parse_remote_answer(words) == answer


@pytest.mark.parametrize(("words", "answer"), [
    (["NONE"], ProxyAnswer("NONE")),
    (["HTTP", "198.18.0.1", "8888"], ProxyAnswer("HTTP", "198.18.0.1", 8888)),
    (["HTTP", "198.18.0.1", "8888", "nct"], ProxyAnswer("HTTP", "198.18.0.1", 8888, True)),
    (["SOCKS", "198.18.0.1", "1080"], ProxyAnswer("SOCKS", "198.18.0.1", 1080)),
    (["SOCKS", "198.18.0.1"], ProxyAnswer(None)),
    (["FTP", "198.18.0.1", "21"], ProxyAnswer(None)),
])
def test_proxy_answers_parse_as_openvpn_reads_them(words: list[str],
                                                    answer: ProxyAnswer) -> None:
    assert parse_proxy_answer(words) == answer


@pytest.mark.directive("management-query-remote")
def test_remote_names_its_protocol_as_openvpn_does() -> None:
    assert _proto_name(Remote("h", 1, "udp", None, 1)) == "udp"
    assert _proto_name(Remote("h", 1, "udp", 6, 1)) == "udp6"
    assert _proto_name(Remote("h", 1, "tcp-client", 4, 1)) == "tcp4-client"
    assert _proto_name(Remote("h", 1, "tcp-client", None, 1)) == "tcp-client"


@pytest.mark.directive("management-query-proxy")
def test_proxy_answer_replaces_the_proxy_of_this_attempt_only() -> None:
    remote = Remote("198.18.1.2", 1194, "tcp-client", None, 1,
                    http_proxy=HttpProxy("198.18.0.9", 3128, auth="auto"))
    http = _with_proxy(remote, ProxyAnswer("HTTP", "198.18.0.1", 8888, nct=True))
    assert http.http_proxy == HttpProxy("198.18.0.1", 8888, auth="auto-nct")
    socks = _with_proxy(remote, ProxyAnswer("SOCKS", "198.18.0.1", 1080))
    assert socks.socks_proxy is not None and socks.socks_proxy.port == 1080
    assert _with_proxy(remote, ProxyAnswer("NONE")) == remote
    assert _with_proxy(remote, ProxyAnswer(None)) == remote


@pytest.mark.directive("management-query-remote")
def test_skip_moves_the_schedule_on_and_reports_the_wrap() -> None:
    schedule = RemoteSchedule(["a", "b", "c"])
    schedule.first()
    assert schedule.skip(1) is False and schedule.remotes[schedule.index] == "b"
    assert schedule.skip(2) is True and schedule.remotes[schedule.index] == "a"
    assert schedule.unsuccessful == 4


@pytest.mark.directive("management-query-remote")
async def test_remote_query_is_shown_to_a_gui_connecting_later(tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    server = _server(path, [])
    answers: list[RemoteAnswer] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)

        async def ask() -> None:
            answers.append(await server.query_remote("198.18.0.1", 1194, "udp"))

        nursery.start_soon(ask)
        await trio.sleep(0.05)
        client = await _connected(server, path)
        assert await client.line() == ">REMOTE:198.18.0.1,1194,udp"
        await client.send("remote MOD")
        assert await client.line() == "ERROR: remote command failed"
        await client.send("remote MOD 198.18.0.5 1195")
        assert await client.line() == "SUCCESS: remote command succeeded"
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert answers == [RemoteAnswer("MOD", "198.18.0.5", 1195)]


@pytest.mark.directive("management-up-down")
async def test_updown_lists_the_environment_then_end(tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    server = _server(path, [], up_down=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        client = await _connected(server, path)
        server.up_down("UP", {"dev": "tun0", "ifconfig_local": "198.18.8.2"})
        assert [await client.line() for _ in range(4)] == [
            ">UPDOWN:UP", ">UPDOWN:ENV,dev=tun0", ">UPDOWN:ENV,ifconfig_local=198.18.8.2",
            ">UPDOWN:ENV,END"]
        nursery.cancel_scope.cancel()


async def test_updown_is_silent_without_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    server = _server(path, [])
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        client = await _connected(server, path)
        server.up_down("UP", {"dev": "tun0"})
        await client.send("pid")
        assert (await client.line()).startswith("SUCCESS: pid=")
        nursery.cancel_scope.cancel()


@pytest.mark.directive("management-signal", "management-forget-disconnect")
async def test_disconnect_runs_the_hooks_but_stopping_does_not(tmp_path: Path) -> None:
    path = tmp_path / "m.sock"
    server = _server(path, [])
    called: list[str] = []
    server.disconnect_hooks.append(lambda: called.append("left"))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        client = await _connected(server, path)
        await client.stream.aclose()
        with trio.fail_after(5):
            while not called:
                await trio.sleep(0.01)
        still_open = await _connected(server, path)
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()  # trivpn stops: no hook for the open connection
    await still_open.stream.aclose()
    assert called == ["left"]


@pytest.mark.directive("management-client")
async def test_management_client_connects_out_and_signals_sigterm_when_closed(
        tmp_path: Path) -> None:
    path = tmp_path / "gui.sock"
    listener = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await listener.bind(str(path))
    listener.listen(1)
    signals: list[signal.Signals] = []
    server = _server(path, signals, connect_out=True)
    async with trio.open_nursery() as nursery:
        await server.open()
        await nursery.start(server.serve)
        sock, _ = await listener.accept()
        client = Client(trio.SocketStream(sock))
        assert await client.line() == BANNER
        await client.stream.aclose()
        with trio.fail_after(5):
            while not signals:
                await trio.sleep(0.01)
    assert signals == [signal.SIGTERM]
    listener.close()


@pytest.mark.directive("management-client")
async def test_management_client_with_nobody_listening_fails_to_open(tmp_path: Path) -> None:
    server = _server(tmp_path / "nobody.sock", [], connect_out=True)
    with pytest.raises(OSError):
        await server.open()


def _config(tmp_path: Path, *lines: str) -> Path:
    conf = tmp_path / "c.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


@pytest.mark.directive("management-signal")
def test_a_server_refuses_the_client_only_flags(tmp_path: Path) -> None:
    for name in ("ca.crt", "server.crt", "server.key"):
        (tmp_path / name).write_text("")
    conf = _config(tmp_path, "mode server", "tls-server", "dev tun", "dh none",
                   "server 198.18.8.0 255.255.255.0", "ca ca.crt", "cert server.crt",
                   "key server.key", "management 127.0.0.1 7505", "management-signal")
    with pytest.raises(ConfigError, match="'management-signal' is not supported by trivpn on "
                                          "a server yet"):
        load_config(conf)


@pytest.mark.directive("management-client")
async def test_management_client_connects_out_over_tcp_on_loopback() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    signals: list[signal.Signals] = []
    server = ManagementServer(FakeClientRuntime(), LogHistory(), OperatorState(), get_logger(),
                              host="127.0.0.1", port=port, unix=False,
                              send_signal=signals.append, connect_out=True)
    async with trio.open_nursery() as nursery:
        await server.open()
        await nursery.start(server.serve)
        client = Client(await listeners[0].accept())
        assert await client.line() == BANNER
        assert server.where == f"127.0.0.1:{port}"
        nursery.cancel_scope.cancel()
    await client.stream.aclose()
    await listeners[0].aclose()
