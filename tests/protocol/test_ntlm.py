"""NTLM for HTTP proxies as OpenVPN 2.6 does it (ntlm.c), against MS-NLMP's test vectors
(section 4.2: User "User", Domain "Domain", Password "Password", server challenge
0123456789abcdef)."""

from __future__ import annotations

import base64
import struct

import pytest

from trivpn.protocol.ntlm import (
    NEGOTIATE,
    NtlmError,
    authenticate,
    nt_hash,
    ntlmv1_response,
    ntlmv2_hash,
    ntlmv2_response,
    parse_challenge,
)

CHALLENGE = bytes.fromhex("0123456789abcdef")
# MS-NLMP 4.2.4.1.3: MsvAvNbDomainName "Domain", MsvAvNbComputerName "Server", MsvAvEOL
AV_PAIRS = bytes.fromhex("02000c0044006f006d00610069006e00"
                         "01000c00530065007200760065007200" "00000000")


def _type2(target: bytes = b"", flags: int = 0x00000202) -> str:
    msg = bytearray(48)
    msg[0:8] = b"NTLMSSP\0"
    msg[8] = 2
    if target:
        flags |= 0x00800000
        struct.pack_into("<HHI", msg, 0x28, len(target), len(target), 48)
    struct.pack_into("<I", msg, 0x14, flags)
    msg[24:32] = CHALLENGE
    return base64.b64encode(bytes(msg) + target).decode()


def test_negotiate_is_openvpns_minimal_type_1_message() -> None:
    raw = base64.b64decode(NEGOTIATE)
    assert raw[:8] == b"NTLMSSP\0" and raw[8] == 1
    assert struct.unpack_from("<I", raw, 12)[0] == 0x0202  # negotiate OEM + NTLM


def test_nt_hash_is_ms_nlmp_ntowfv1() -> None:
    assert nt_hash("Password").hex() == "a4f49c406510bdcab6824ee7c30fd852"


def test_ntlmv1_response_is_ms_nlmp_ntchallengeresponse() -> None:
    assert (ntlmv1_response("Password", CHALLENGE).hex()
            == "67c43011f30298a2ad35ece64f16331c44bdbed927841f94")


def test_ntlmv2_hash_is_ms_nlmp_ntowfv2() -> None:
    assert ntlmv2_hash("User", "Domain", "Password").hex() == "0c868a403bfd7a93a3001ef22ef02e3f"


def test_ntlmv2_response_has_ms_nlmp_ntproofstr() -> None:
    # MS-NLMP 4.2.4: time 0 (FILETIME), client challenge aa * 8, the AV pairs above
    response = ntlmv2_response("User", "Domain", "Password", CHALLENGE, target_info=AV_PAIRS,
                               unix_time=-11644473600, nonce=b"\xaa" * 8)
    assert response[:16].hex() == "68cd0ab851e51c96aabc927bebef6a1c"
    assert response[16:] == (b"\x01\x01\0\0" + b"\0" * 12 + b"\xaa" * 8 + b"\0" * 4
                             + AV_PAIRS + b"\0" * 4)


def test_challenge_and_target_information_are_read_from_the_type_2_message() -> None:
    challenge, flags, target = parse_challenge(_type2(AV_PAIRS))
    assert (challenge, target) == (CHALLENGE, AV_PAIRS) and flags & 0x00800000


@pytest.mark.directive("http-proxy")
@pytest.mark.parametrize("v2", [False, True])
def test_authenticate_carries_the_user_domain_and_nt_response(v2: bool) -> None:
    raw = base64.b64decode(authenticate(_type2(AV_PAIRS), "Domain\\User", "Password", v2=v2,
                                        unix_time=-11644473600, nonce=b"\xaa" * 8))
    assert raw[:9] == b"NTLMSSP\0\x03"

    def field(offset: int) -> bytes:
        length, _, pos = struct.unpack_from("<HHI", raw, offset)
        return raw[pos:pos + length]

    assert field(0x24) == b"User" and field(0x1C) == b"Domain"
    nt = field(0x14)
    if v2:
        assert nt[:16].hex() == "68cd0ab851e51c96aabc927bebef6a1c"
    else:
        assert nt.hex() == "67c43011f30298a2ad35ece64f16331c44bdbed927841f94"
    assert raw[0x3C:0x3E] == b"\x02\x02"


def test_a_challenge_that_is_not_base64_is_an_ntlm_error() -> None:
    with pytest.raises(NtlmError):
        parse_challenge("not base64!")
