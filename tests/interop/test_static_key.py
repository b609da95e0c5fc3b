"""Static-key peer-to-peer mode (``secret FILE [direction]``, no TLS) against the real openvpn
2.6: ``trivpn run`` and ``openvpn --secret`` carry traffic both ways over UDP and TCP, with
key directions 0/1 and bidirectional, either side waiting for the other. Namespaces: ``srv``
(198.18.0.1) and ``cli`` (198.18.0.2), tunnel 198.18.9.1 <-> 198.18.9.2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.clientkit import (
    SERVER_IP,
    Setup,
    make_setup,
    ping,
    transfer,
    wait_up,
)
from tests.interop.openvpn import OpenVpnProcess, start_openvpn
from tests.interop.trivpnproc import TrivpnProcess, start_trivpn
from tests.netns import NetnsLab

pytestmark = pytest.mark.integration

WAIT_TUN, CONNECT_TUN = "198.18.9.1", "198.18.9.2"


@pytest.fixture
def setup(lab: NetnsLab, openvpn_binary: None, tmp_path: Path) -> Setup:
    return make_setup(lab, tmp_path)


def _waiting(proto: str, direction: str, *extra: str) -> list[str]:
    """The side without 'remote' (in srv): waits for its peer's first packet."""
    return ["dev tun", f"proto {'tcp-server' if proto == 'tcp' else 'udp'}",
            f"local {SERVER_IP}", "lport 1194", f"secret static.key {direction}".strip(),
            "cipher AES-256-CBC", f"ifconfig {WAIT_TUN} {CONNECT_TUN}", "ping 1",
            "ping-restart 10", "verb 4", *extra]


def _connecting(proto: str, direction: str, *extra: str) -> list[str]:
    """The side with 'remote' (in cli)."""
    return ["dev tun", f"proto {'tcp-client' if proto == 'tcp' else 'udp'}",
            f"remote {SERVER_IP} 1194", "lport 1194", f"secret static.key {direction}".strip(),
            "cipher AES-256-CBC", f"ifconfig {CONNECT_TUN} {WAIT_TUN}", "ping 1",
            "ping-restart 10", "connect-retry 1", "verb 4", *extra]


def _both_ways(setup: Setup) -> None:
    for ns, dst in ((setup.client_ns, WAIT_TUN), (setup.server_ns, CONNECT_TUN)):
        done = ping(ns, dst)
        assert done.returncode == 0, done.stdout


def _up_openvpn(ovpn: OpenVpnProcess) -> None:
    assert ovpn.wait_for("Initialization Sequence Completed", 15), ovpn.text()[-3000:]


def _up_trivpn(proc: TrivpnProcess) -> None:
    wait_up(proc)


DIRECTIONS = [("0", "1"), ("1", "0"), ("", "")]


@pytest.mark.directive("secret", "ifconfig", "cipher", "auth")
@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize(("wait_dir", "connect_dir"), DIRECTIONS,
                         ids=["dir-0-1", "dir-1-0", "bidirectional"])
def test_trivpn_waits_and_openvpn_connects_with_a_static_key(
        setup: Setup, proto: str, wait_dir: str, connect_dir: str) -> None:
    trivpn = start_trivpn(setup.server_ns, setup.workdir, "static-wait",
                          _waiting(proto, wait_dir))
    _up_trivpn(trivpn)  # the device is up at once, before the peer (UDP and TCP, as openvpn)
    ovpn = start_openvpn(setup.client_ns, setup.workdir, "ovpn-connect",
                         _connecting(proto, connect_dir))
    _up_trivpn(trivpn)
    _up_openvpn(ovpn)
    _both_ways(setup)
    transfer(setup.client_ns, setup.server_ns, WAIT_TUN, size=1024 * 1024, timeout=20)
    transfer(setup.server_ns, setup.client_ns, CONNECT_TUN, size=1024 * 1024, timeout=20)
    assert "Static Key Encryption: Cipher 'AES-256-CBC'" in ovpn.text()


@pytest.mark.directive("secret", "remote")
@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize(("wait_dir", "connect_dir"), DIRECTIONS,
                         ids=["dir-0-1", "dir-1-0", "bidirectional"])
def test_trivpn_connects_to_a_waiting_openvpn_with_a_static_key(
        setup: Setup, proto: str, wait_dir: str, connect_dir: str) -> None:
    ovpn = start_openvpn(setup.server_ns, setup.workdir, "ovpn-wait",
                         _waiting(proto, wait_dir))
    # openvpn completes its initialization at the first authenticated packet from its peer
    assert ovpn.wait_for("Data Channel MTU parms", 10), ovpn.text()[-3000:]
    trivpn = start_trivpn(setup.client_ns, setup.workdir, "static-connect",
                          _connecting(proto, connect_dir))
    _up_trivpn(trivpn)
    _up_openvpn(ovpn)
    _both_ways(setup)
    transfer(setup.server_ns, setup.client_ns, CONNECT_TUN, size=1024 * 1024, timeout=20)
    transfer(setup.client_ns, setup.server_ns, WAIT_TUN, size=1024 * 1024, timeout=20)


@pytest.mark.directive("secret")
def test_a_wrong_static_key_drops_and_counts_packets(setup: Setup) -> None:
    """openvpn with another key: its packets fail the HMAC; trivpn counts them as drops and
    keeps running, and no ping gets through."""
    other = setup.workdir / "other.key"
    key = bytearray((setup.workdir / "static.key").read_text(), "ascii")
    lines = key.decode().splitlines()
    start = lines.index("-----BEGIN OpenVPN Static key V1-----") + 1
    lines[start] = "0" * 32 if lines[start] != "0" * 32 else "1" * 32
    lines[start + 4] = "f" * 32 if lines[start + 4] != "f" * 32 else "e" * 32  # key[0] hmac
    lines[start + 12] = "f" * 32 if lines[start + 12] != "f" * 32 else "e" * 32  # key[1] hmac
    other.write_text("\n".join(lines) + "\n")
    trivpn = start_trivpn(setup.server_ns, setup.workdir, "static-wait", _waiting("udp", "0"))
    _up_trivpn(trivpn)
    ovpn = start_openvpn(setup.client_ns, setup.workdir, "ovpn-wrong",
                         [*(line.replace("static.key", "other.key")
                            for line in _connecting("udp", "1"))])
    # nothing authenticates: openvpn never completes its initialization
    assert ovpn.wait_for("link remote", 10), ovpn.text()[-3000:]
    done = ping(setup.client_ns, WAIT_TUN, count=2, timeout=8)
    assert done.returncode != 0
    assert trivpn.wait_event("packet_dropped", 15, reason="hmac_mismatch") is not None, \
        trivpn.text()[-3000:]
    assert trivpn.wait_event("exiting", 0.1) is None


@pytest.mark.directive("link-mtu")
def test_link_mtu_sets_the_same_device_mtu_on_both_ends(setup: Setup) -> None:
    """link-mtu 1400 with AES-256-CBC/SHA1 over UDP: a tun MTU of 1348 on trivpn's device and
    openvpn's; a 1348-byte packet crosses unfragmented (ping -M do)."""
    trivpn = start_trivpn(setup.server_ns, setup.workdir, "static-wait",
                          _waiting("udp", "0", "link-mtu 1400"))
    up = wait_up(trivpn)
    assert up["mtu"] == 1348, up
    ovpn = start_openvpn(setup.client_ns, setup.workdir, "ovpn-connect",
                         _connecting("udp", "1", "link-mtu 1400"))
    assert ovpn.wait_for("tun_mtu:1348 ", 10), ovpn.text()[-3000:]
    _up_openvpn(ovpn)
    done = setup.client_ns.run(["ping", "-n", "-q", "-c", "2", "-M", "do", "-s",
                                str(1348 - 28), "-W", "2", WAIT_TUN], check=False, timeout=10)
    assert done.returncode == 0, done.stdout


@pytest.mark.directive("secret", "comp-lzo")
def test_static_key_with_comp_lzo_as_the_old_samples_have_it(setup: Setup) -> None:
    """The static-home/static-office samples' optional 'comp-lzo': the compression framing
    byte on both ends (2.6 default: decompress only, so nothing is compressed)."""
    trivpn = start_trivpn(setup.server_ns, setup.workdir, "static-wait",
                          _waiting("udp", "0", "comp-lzo"))
    _up_trivpn(trivpn)
    ovpn = start_openvpn(setup.client_ns, setup.workdir, "ovpn-connect",
                         _connecting("udp", "1", "comp-lzo"))
    _up_openvpn(ovpn)
    _both_ways(setup)
    transfer(setup.client_ns, setup.server_ns, WAIT_TUN, size=256 * 1024, timeout=20)
