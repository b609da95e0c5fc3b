"""index.txt, OpenSSL ``ca``'s database: parsed and written field for field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from trivpn.pki.errors import PkiError
from trivpn.pki.index import (
    IndexEntry,
    format_index,
    format_time,
    parse_index,
    serial_hex,
    subject_oneline,
)

# Lines as easy-rsa 3.1 / OpenSSL 3 wrote them (tests/pki/test_easyrsa.py checks the real tool).
EASYRSA_INDEX = (
    "V\t290308022705Z\t\t4035CE9BA4BF0536FCD9649D3C655BE2\tunknown\t/CN=server\n"
    "R\t290308022705Z\t261204022714Z,keyCompromise\t29ADC718970D26DD2D044738FB26DBF5\tunknown"
    "\t/CN=alice\n"
    "R\t290308022705Z\t261204022714Z\t0F47296E6E94B8D83C9F41871B124476\tunknown\t/CN=bob\n"
)


def test_an_easyrsa_index_round_trips_byte_for_byte() -> None:
    entries = parse_index(EASYRSA_INDEX)
    assert format_index(entries) == EASYRSA_INDEX


def test_parsed_fields() -> None:
    server, alice, bob = parse_index(EASYRSA_INDEX)
    assert (server.status, server.common_name, server.revoked_at) == ("V", "server", None)
    assert server.expires == datetime(2029, 3, 8, 2, 27, 5, tzinfo=UTC)
    assert alice.status == "R" and alice.reason == "keyCompromise"
    assert alice.revoked_at == datetime(2026, 12, 4, 2, 27, 14, tzinfo=UTC)
    assert alice.serial == 0x29ADC718970D26DD2D044738FB26DBF5
    assert bob.reason is None and bob.filename == "unknown"


def test_revoking_an_entry_writes_date_and_reason() -> None:
    server = parse_index(EASYRSA_INDEX)[0]
    when = datetime(2026, 12, 5, 1, 2, 3, tzinfo=UTC)
    line = format_index([server.revoked(when, "superseded")])
    assert line == ("R\t290308022705Z\t261205010203Z,superseded\t"
                    "4035CE9BA4BF0536FCD9649D3C655BE2\tunknown\t/CN=server\n")


def test_serials_are_upper_case_hex_of_even_length() -> None:
    assert serial_hex(0xF47) == "0F47"
    assert serial_hex(0xABCD) == "ABCD"


def test_times_from_2050_use_four_digit_years_both_ways() -> None:
    late = datetime(2051, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert format_time(late) == "20510102030405Z"
    line = f"V\t{format_time(late)}\t\t01\tunknown\t/CN=x\n"
    assert parse_index(line)[0].expires == late


def test_subject_in_openssl_oneline_form() -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "alice")])
    assert subject_oneline(name) == "/C=US/O=Example/CN=alice"


@pytest.mark.parametrize(("line", "message"), [
    ("V\t290308022705Z\t\t01\tunknown", "expected 6 tab-separated fields, found 5"),
    ("X\t290308022705Z\t\t01\tunknown\t/CN=a", "unknown status 'X'"),
    ("V\t290308022705Z\t\tZZ\tunknown\t/CN=a", "bad serial 'ZZ'"),
    ("V\t2903080227Z\t\t01\tunknown\t/CN=a", "bad time '2903080227Z'"),
    ("R\t290308022705Z\t\t01\tunknown\t/CN=a", "revoked certificate without a revocation"),
])
def test_a_malformed_line_is_named_by_file_and_line(line: str, message: str) -> None:
    with pytest.raises(PkiError, match=message) as info:
        parse_index("V\t290308022705Z\t\t02\tunknown\t/CN=ok\n" + line + "\n", "pki/index.txt")
    assert str(info.value).startswith("pki/index.txt:2: ")


def test_unknown_reason_is_refused_on_write() -> None:
    entry = IndexEntry("R", datetime(2029, 1, 1, tzinfo=UTC), 1, "/CN=a",
                       datetime(2026, 1, 1, tzinfo=UTC), "lostLaptop")
    with pytest.raises(PkiError, match="unknown revocation reason 'lostLaptop'"):
        format_index([entry])
