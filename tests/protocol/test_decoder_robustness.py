"""Every decoder, fed garbage or damaged packets, raises only ProtocolError subclasses."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trivpn.protocol.compression import Compression, unframe
from trivpn.protocol.datachannel import SUPPORTED_CIPHERS, DataKey
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.keys import directional_keys
from trivpn.protocol.occ import OCC_MAGIC, parse_occ
from trivpn.protocol.packets import decode_control, parse_data_header
from trivpn.protocol.statickey import StaticKey
from trivpn.protocol.wrap import ControlWrap, TlsAuth, TlsCrypt

KEY = StaticKey(bytes(range(256)))
SAMPLE_CONTROL = bytes.fromhex(
    "20 31e7f7c06bd93f39 02 00000001 00000000 2f4bbbc2b6136626 00000002 1603030005")


@st.composite
def damaged(draw: st.DrawFn, good: bytes) -> bytes:
    """A valid packet, truncated and/or with a few bytes changed, or extended."""
    data = bytearray(good[:draw(st.integers(0, len(good)))])
    for _ in range(draw(st.integers(0, 3))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data) + draw(st.binary(max_size=4))


def only_protocol_errors(decode: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)


garbage = st.binary(max_size=120)


@given(st.one_of(garbage, damaged(SAMPLE_CONTROL)))
def test_decode_control(data: bytes) -> None:
    only_protocol_errors(decode_control, data)


@given(garbage)
def test_parse_data_header(data: bytes) -> None:
    only_protocol_errors(parse_data_header, data)


WRAPPERS: dict[str, tuple[ControlWrap, ControlWrap]] = {
    "tls-auth-sha1": (TlsAuth(KEY, 1), TlsAuth(KEY, 0)),
    "tls-auth-sha512": (TlsAuth(KEY, 1, "SHA512"), TlsAuth(KEY, 0, "SHA512")),
    "tls-crypt": (TlsCrypt(KEY, False), TlsCrypt(KEY, True)),
}


@pytest.mark.parametrize("name", WRAPPERS)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_unwrap(name: str, data: st.DataObject) -> None:
    sender, receiver = WRAPPERS[name]
    good = sender.wrap(SAMPLE_CONTROL, 3, 1000)
    wire = data.draw(st.one_of(garbage, damaged(good)))
    only_protocol_errors(receiver.unwrap, wire)


KEYS = directional_keys(bytes(range(256)), is_server=False)
PEER_KEYS = directional_keys(bytes(range(256)), is_server=True)


@pytest.mark.parametrize("cipher", SUPPORTED_CIPHERS)
@given(data=st.data())
def test_datakey_decrypt(cipher: str, data: st.DataObject) -> None:
    sender = DataKey(cipher, PEER_KEYS, 0, peer_id=data.draw(st.sampled_from([None, 1])))
    receiver = DataKey(cipher, KEYS, 0)
    good = sender.encrypt(data.draw(st.binary(min_size=1, max_size=40)))
    wire = data.draw(st.one_of(garbage, damaged(good)))
    only_protocol_errors(lambda b: receiver.decrypt(b, now=0.0), wire)


@pytest.mark.parametrize("kind", list(Compression))
@given(data=garbage)
def test_unframe(kind: Compression, data: bytes) -> None:
    only_protocol_errors(lambda b: unframe(kind, b), data)


@given(st.one_of(garbage, st.binary(max_size=20).map(lambda b: OCC_MAGIC + b)))
def test_parse_occ(data: bytes) -> None:
    only_protocol_errors(parse_occ, data)
