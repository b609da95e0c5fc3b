"""Digest proxy authentication (RFC 2617), used under http-proxy ... auto."""

from __future__ import annotations

import pytest

from trivpn.protocol.proxy_http import (
    ProxyError,
    digest_authorization,
    digest_params,
    digest_response,
)

RFC_CHALLENGE = ('realm="testrealm@host.com", qop="auth,auth-int", '
                 'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
                 'opaque="5ccc069c403ebaf9f0171e9517f40e41"')


def test_challenge_parameters_are_read_quoted_or_not() -> None:
    params = digest_params(RFC_CHALLENGE + ", algorithm=MD5, stale=false")
    assert params["realm"] == "testrealm@host.com"
    assert params["qop"] == "auth,auth-int"
    assert (params["algorithm"], params["stale"]) == ("MD5", "false")


def test_response_matches_rfc_2617_example() -> None:
    # RFC 2617 section 3.5: Mufasa / "Circle Of Life", GET /dir/index.html
    got = digest_response(digest_params(RFC_CHALLENGE), "Mufasa", "Circle Of Life",
                          "/dir/index.html", "0a4f113b", method="GET")
    assert got == "6629fae49393a05397450978507c4ef1"


def test_authorization_names_the_connect_target_as_uri_and_echoes_opaque() -> None:
    value = digest_authorization(RFC_CHALLENGE, "Mufasa", "Circle Of Life",
                                 host="198.18.0.1", port=1194, cnonce="abc")
    expected = digest_response(digest_params(RFC_CHALLENGE), "Mufasa", "Circle Of Life",
                               "198.18.0.1:1194", "abc")
    assert value == ('Digest username="Mufasa", realm="testrealm@host.com", '
                     'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="198.18.0.1:1194", '
                     f'qop=auth, nc=00000001, cnonce="abc", response="{expected}", '
                     'opaque="5ccc069c403ebaf9f0171e9517f40e41"')


def test_a_challenge_without_nonce_is_refused() -> None:
    with pytest.raises(ProxyError):
        digest_authorization('realm="x"', "u", "p", host="h", port=1, cnonce="c")
