"""TLS keying-material export (RFC 5705) through ctypes on the ``SSL *`` of an SSLObject."""

from __future__ import annotations

import ssl

import pytest

from tests.protocol.sessionkit import client_config, server_config
from trivpn.tlsnative import NativeTlsError, keying_material_exporter

LABEL = b"EXPORTER-OpenVPN-datakeys"


def _handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext
               ) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1], server_side=False)
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    for _ in range(10):
        done = 0
        for obj in (client, server):
            try:
                obj.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        bios[2].write(bios[1].read())
        bios[0].write(bios[3].read())
        if done == 2:
            break
    return client, server


def test_both_ends_export_the_same_keying_material_per_label():
    client_ctx, server_ctx = client_config().tls_context, server_config().tls_context
    client_export = keying_material_exporter(client_ctx)
    server_export = keying_material_exporter(server_ctx)
    assert client_export is not None and server_export is not None
    client, server = _handshake(client_ctx, server_ctx)
    material = client_export(client, LABEL, 256)
    assert len(material) == 256 and material == server_export(server, LABEL, 256)
    assert client_export(client, b"EXPORTER-other", 256) != material
    other_client, _ = _handshake(client_ctx, server_ctx)
    assert client_export(other_client, LABEL, 256) != material  # per TLS session


def test_an_ssl_object_of_another_context_is_refused():
    client_ctx, server_ctx = client_config().tls_context, server_config().tls_context
    client_export = keying_material_exporter(client_ctx)
    assert client_export is not None
    _, server = _handshake(client_ctx, server_ctx)
    with pytest.raises(NativeTlsError):
        client_export(server, LABEL, 256)
