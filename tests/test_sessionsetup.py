"""Options → SessionConfig: TLS, wrapping, options string, ciphers, keepalive."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from tests.interop.openvpn import write_pki
from tests.protocol.sessionkit import Pair, make_test_pki
from trivpn.config import ConfigError, load_config
from trivpn.logging import configure_logging, get_logger
from trivpn.pki.certs import certificate_pem
from trivpn.pki.keys import private_key_pem
from trivpn.protocol import events as ev
from trivpn.protocol.compression import Compression
from trivpn.protocol.keymethod import options_string
from trivpn.protocol.peerinfo import build_peer_info
from trivpn.protocol.session import SessionConfig
from trivpn.protocol.wrap import NoWrap, TlsAuth, TlsCrypt
from trivpn.runtime.datapath import mss_limit_for
from trivpn.sessionsetup import drop_aggregator, session_config
from trivpn.tlscontext import build_context

CLIENT = ["client", "dev tun", "proto udp", "remote 198.18.0.1 1194", "ca ca.crt",
          "cert client.crt", "key client.key", "remote-cert-tls server"]
SERVER = ["port 1194", "proto udp", "dev tun", "ca ca.crt", "cert server.crt",
          "key server.key", "dh none", "server 198.18.8.0 255.255.255.0", "keepalive 10 120"]


def _config(tmp_path: Path, lines: list[str]):
    write_pki(tmp_path)
    conf = tmp_path / "test.conf"
    conf.write_text("\n".join(lines) + "\n")
    return load_config(conf)


def test_client_config_announces_openvpn_26_peer_info_with_ekm(tmp_path):
    cfg = session_config(_config(tmp_path, CLIENT), unix_time_offset=0.0)
    assert not cfg.is_server
    assert cfg.peer_info is not None and "IV_CIPHERS=AES-256-GCM:AES-128-GCM" in cfg.peer_info
    proto = int(cfg.peer_info.split("IV_PROTO=")[1].split("\n")[0])
    assert proto & 2 and proto & 4 and proto & 8 and not proto & 512
    assert cfg.key_exporter is not None
    assert cfg.options_string.endswith("tls-client")
    assert isinstance(cfg.wrap, NoWrap)
    assert cfg.verification.remote_cert_tls == "server"


def test_server_keepalive_gives_ping_and_doubled_ping_restart(tmp_path):
    cfg = session_config(_config(tmp_path, SERVER), unix_time_offset=0.0)
    assert cfg.is_server and cfg.peer_info is None
    assert (cfg.ping_interval, cfg.ping_restart) == (10.0, 240.0)


@pytest.mark.directive("tls-auth", "key-direction", "auth")
def test_tls_auth_with_key_direction_and_auth_digest(tmp_path):
    cfg = session_config(_config(tmp_path, [*CLIENT, "tls-auth static.key 1", "auth SHA256"]),
                         unix_time_offset=0.0)
    assert isinstance(cfg.wrap, TlsAuth)
    assert "keydir 1" in cfg.options_string and "tls-auth" in cfg.options_string


@pytest.mark.directive("tls-crypt")
def test_tls_crypt_wrap_by_role(tmp_path):
    cfg = session_config(_config(tmp_path, [*SERVER, "tls-crypt static.key"]),
                         unix_time_offset=0.0)
    assert isinstance(cfg.wrap, TlsCrypt)


def test_bad_static_key_names_the_config_line(tmp_path):
    (tmp_path / "bad.key").write_text("not a key\n")
    options = _config(tmp_path, [*CLIENT, "tls-crypt bad.key"])
    with pytest.raises(ConfigError) as info:
        session_config(options, unix_time_offset=0.0)
    assert "test.conf:9" in str(info.value) and "static key" in str(info.value)


@pytest.mark.directive("data-ciphers")
def test_unimplemented_data_cipher_is_a_config_error(tmp_path):
    options = _config(tmp_path, [*CLIENT, "data-ciphers AES-256-GCM:BF-CBC"])
    with pytest.raises(ConfigError, match="BF-CBC, which trivpn does not implement"):
        session_config(options, unix_time_offset=0.0)


@pytest.mark.directive("comp-lzo")
def test_comp_lzo_no_selects_the_lzo_stub_framing(tmp_path):
    cfg = session_config(_config(tmp_path, [*CLIENT, "comp-lzo no"]), unix_time_offset=0.0)
    assert cfg.compression is Compression.LZO_STUB


@pytest.mark.directive("auth-user-pass")
def test_auth_user_pass_file_supplies_credentials(tmp_path):
    (tmp_path / "up.txt").write_text("alice\ns3cret\n")
    cfg = session_config(_config(tmp_path, [*CLIENT, "auth-user-pass up.txt"]),
                         unix_time_offset=0.0)
    assert (cfg.username, cfg.password) == ("alice", "s3cret")
    assert "s3cret" not in repr(cfg)


@pytest.mark.directive("reneg-sec", "reneg-bytes", "reneg-pkts", "tran-window", "hand-window",
                       "tls-timeout")
def test_renegotiation_directives_reach_the_session(tmp_path):
    cfg = session_config(_config(tmp_path, [
        *CLIENT, "reneg-sec 100", "reneg-bytes 1000000", "reneg-pkts 5000", "tran-window 30",
        "hand-window 20", "tls-timeout 3"]), unix_time_offset=0.0)
    assert (cfg.reneg_seconds, cfg.reneg_bytes, cfg.reneg_packets) == (100.0, 1_000_000, 5000)
    assert (cfg.transition_window, cfg.hand_window, cfg.tls_timeout) == (30.0, 20.0, 3.0)


def test_zero_reneg_limits_are_off_as_in_openvpn(tmp_path):
    cfg = session_config(_config(tmp_path, [*CLIENT, "reneg-sec 0", "reneg-bytes 0",
                                            "reneg-pkts 0"]), unix_time_offset=0.0)
    assert (cfg.reneg_seconds, cfg.reneg_bytes, cfg.reneg_packets) == (None, None, None)


@pytest.mark.directive("ping-exit")
def test_ping_exit_and_ping_restart_are_one_timer_the_last_one_wins(tmp_path):
    cfg = session_config(_config(tmp_path, [*CLIENT, "ping-restart 60", "ping-exit 20"]),
                         unix_time_offset=0.0)
    assert (cfg.ping_restart, cfg.ping_exit) == (20.0, True)
    cfg = session_config(_config(tmp_path, [*CLIENT, "ping-exit 20", "ping-restart 60"]),
                         unix_time_offset=0.0)
    assert (cfg.ping_restart, cfg.ping_exit) == (60.0, False)


@pytest.mark.directive("inactive", "session-timeout")
def test_inactive_and_session_timeout_reach_the_session(tmp_path):
    cfg = session_config(_config(tmp_path, [*SERVER, "inactive 600 100000",
                                            "session-timeout 3600"]), unix_time_offset=0.0)
    assert (cfg.inactive, cfg.inactive_bytes, cfg.session_timeout) == (600.0, 100000, 3600.0)
    cfg = session_config(_config(tmp_path, [*CLIENT, "inactive 0", "session-timeout 0"]),
                         unix_time_offset=0.0)
    assert (cfg.inactive, cfg.session_timeout) == (None, None)  # 0: off, as in OpenVPN


def _client_without_cert(*, cred: str | None = None) -> SessionConfig:
    pki = make_test_pki()
    ca = certificate_pem(pki.ca.cert).decode()
    cert = key = None
    if cred is not None:  # "untrusted": a certificate from another CA
        holder = pki.foreign_client if cred == "untrusted" else pki.client
        cert = certificate_pem(holder.cert).decode()
        key = private_key_pem(holder.key).decode()
    ctx = build_context(server_side=False, ca_pem=ca, cert_pem=cert, key_pem=key)
    return SessionConfig(is_server=False, tls_context=ctx,
                         options_string=options_string(is_server=False),
                         peer_info=build_peer_info(ciphers=("AES-256-GCM",), iv_proto=6),
                         data_ciphers=("AES-256-GCM",))


def _server_from(tmp_path: Path, extra: list[str]) -> SessionConfig:
    pki = make_test_pki()
    (tmp_path / "ca.crt").write_bytes(certificate_pem(pki.ca.cert))
    (tmp_path / "server.crt").write_bytes(certificate_pem(pki.server.cert))
    (tmp_path / "server.key").write_bytes(private_key_pem(pki.server.key))
    conf = tmp_path / "s.conf"
    conf.write_text("\n".join([*SERVER, *extra]) + "\n")
    return session_config(load_config(conf), unix_time_offset=0.0)


@pytest.mark.directive("verify-client-cert")
@pytest.mark.parametrize(("client_cert", "admitted"), [(None, False), ("untrusted", False),
                                                       ("trusted", True)])
def test_verify_client_cert_require_refuses_a_client_without_a_trusted_certificate(
        tmp_path: Path, client_cert: str | None, admitted: bool):
    server = _server_from(tmp_path, ["verify-client-cert require"])
    pair = Pair.create(_client_without_cert(cred=client_cert), server)
    pair.run_until(lambda: pair.server is not None and any(
        isinstance(e, (ev.ClientAuthenticated, ev.HandshakeFailed))
        for e in pair.server_events), seconds=30)
    authenticated = any(isinstance(e, ev.ClientAuthenticated) for e in pair.server_events)
    assert authenticated == admitted, pair.server_events


@pytest.mark.directive("verify-client-cert")
@pytest.mark.parametrize(("lines", "message"), [
    ([*SERVER, "verify-client-cert none"], "'verify-client-cert none' must be used with "
     "'management-client-auth', an 'auth-user-pass-verify' script, or 'plugin'"),
    ([*SERVER, "verify-client-cert optional"], "'verify-client-cert optional' must be used"),
    ([*CLIENT, "verify-client-cert none"], "'verify-client-cert' requires 'mode server'"),
])
def test_verify_client_cert_without_password_checks_is_refused_as_by_openvpn(
        tmp_path: Path, lines: list[str], message: str):
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        _config(tmp_path, lines)
    assert f"test.conf:{len(lines)}" in str(info.value)


@pytest.mark.directive("mute-replay-warnings")
@pytest.mark.parametrize("muted", [True, False])
def test_mute_replay_warnings_silences_replay_drops_but_counts_them(
        tmp_path: Path, muted: bool):
    lines = [*CLIENT, *(["mute-replay-warnings"] if muted else [])]
    drops = drop_aggregator(_config(tmp_path, lines))
    out = io.StringIO()
    configure_logging(verb=3, fmt="json", stream=out)
    drops.merge({"replay": 5, "hmac_mismatch": 1})
    drops.flush(get_logger(), 0.0)
    logged = [json.loads(line)["reason"] for line in out.getvalue().splitlines()]
    assert logged == (["hmac_mismatch"] if muted else ["hmac_mismatch", "replay"])
    assert drops.totals["replay"] == 5


@pytest.mark.directive("server-poll-timeout", "connect-timeout")
@pytest.mark.parametrize("name", ["server-poll-timeout", "connect-timeout"])
def test_server_poll_timeout_and_its_alias_reach_the_client_session(tmp_path, name):
    cfg = session_config(_config(tmp_path, [*CLIENT, f"{name} 7"]), unix_time_offset=0.0)
    assert cfg.server_poll_timeout == 7.0
    cfg = session_config(_config(tmp_path, [*SERVER, f"{name} 7"]), unix_time_offset=0.0)
    assert cfg.server_poll_timeout is None  # a client-side timer


@pytest.mark.directive("replay-window", "max-packet-size", "data-ciphers-fallback",
                       "ncp-ciphers", "data-ciphers")
def test_data_channel_directives_reach_the_session(tmp_path):
    cfg = session_config(_config(tmp_path, [
        *CLIENT, "replay-window 128 30", "max-packet-size 1000", "ncp-ciphers AES-128-GCM",
        "data-ciphers-fallback AES-256-GCM"]), unix_time_offset=0.0)
    assert (cfg.replay_window, cfg.replay_time, cfg.max_packet_size) == (128, 30.0, 1000)
    assert cfg.data_ciphers == ("AES-128-GCM",)  # ncp-ciphers is data-ciphers' old name
    assert cfg.data_ciphers_fallback == "AES-256-GCM"
    assert cfg.peer_info is not None and "IV_CIPHERS=AES-128-GCM\n" in cfg.peer_info


@pytest.mark.directive("mssfix")
@pytest.mark.parametrize(("extra", "mss"), [
    # AES-256-GCM adds 24 bytes (opcode/peer-id 4, packet id 4, tag 16); inner IPv4+TCP 40
    ([], 1492 - 20 - 8 - 24 - 40),  # the default 'mssfix 1492 mtu': the whole outer packet
    (["mssfix 1400"], 1400 - 24 - 40),  # the outer UDP payload
    (["mssfix 1400 fixed"], 1400 - 40),  # the inner packet
    (["mssfix 0"], None),  # off
])
def test_mssfix_sets_the_mss_tcp_syns_are_clamped_to(tmp_path, extra, mss):
    options = _config(tmp_path, [*CLIENT, *extra])
    assert mss_limit_for(options, ("AES-256-GCM",), "udp") == mss


@pytest.mark.directive("compress")
@pytest.mark.parametrize(("line", "framing"), [("compress", Compression.STUB),
                                               ("compress stub", Compression.STUB),
                                               ("compress stub-v2", Compression.STUB_V2)])
def test_compress_stub_selects_the_framing_the_data_channel_uses(tmp_path, line, framing):
    cfg = session_config(_config(tmp_path, [*CLIENT, line]), unix_time_offset=0.0)
    assert cfg.compression is framing
    assert session_config(_config(tmp_path, CLIENT), unix_time_offset=0.0).compression is \
        Compression.NONE


def _v2_keys(tmp_path: Path) -> None:
    from trivpn.pki.statickeys import (
        generate_tls_crypt_v2_client_key,
        generate_tls_crypt_v2_server_key,
    )
    server = generate_tls_crypt_v2_server_key()
    (tmp_path / "v2s.key").write_text(server)
    (tmp_path / "v2c.key").write_text(generate_tls_crypt_v2_client_key(server, unix_now=0))


@pytest.mark.directive("tls-crypt-v2")
def test_tls_crypt_v2_gives_a_server_its_key_and_a_client_its_own_wrapper(tmp_path):
    from trivpn.protocol.tlscryptv2 import ServerKey, TlsCryptV2
    _v2_keys(tmp_path)
    server = session_config(_config(tmp_path, [*SERVER, "tls-crypt-v2 v2s.key",
                                               "tls-crypt-v2-max-age 30"]),
                            unix_time_offset=0.0)
    assert isinstance(server.wrap, ServerKey) and server.tls_crypt_v2_max_age == 30
    client = session_config(_config(tmp_path, [*CLIENT, "tls-crypt-v2 v2c.key"]),
                            unix_time_offset=0.0)
    assert isinstance(client.wrap, TlsCryptV2) and len(client.wrap.wkc) > 256


def test_a_server_key_where_a_client_key_belongs_names_the_line(tmp_path):
    _v2_keys(tmp_path)
    options = _config(tmp_path, [*CLIENT, "tls-crypt-v2 v2s.key"])
    with pytest.raises(ConfigError) as info:
        session_config(options, unix_time_offset=0.0)
    assert "test.conf:9" in str(info.value) and "tls-crypt-v2 client key" in str(info.value)


def test_tls_crypt_v2_allow_noncookie_is_refused_naming_the_line(tmp_path):
    _v2_keys(tmp_path)
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, [*SERVER, "tls-crypt-v2 v2s.key allow-noncookie"])
    assert "test.conf:10" in str(info.value) and "allow-noncookie" in str(info.value)


def _p12(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import (
        NoEncryption,
        load_pem_private_key,
        pkcs12,
    )
    key = load_pem_private_key((tmp_path / "client.key").read_bytes(), None)
    cert = x509.load_pem_x509_certificate((tmp_path / "client.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    (tmp_path / "c.p12").write_bytes(pkcs12.serialize_key_and_certificates(
        b"c", key, cert, [ca], NoEncryption()))  # type: ignore[arg-type]


@pytest.mark.directive("pkcs12")
@pytest.mark.parametrize("with_ca", [True, False])
def test_pkcs12_bundle_gives_the_tls_context_its_certificate_and_ca(tmp_path, with_ca):
    write_pki(tmp_path)
    _p12(tmp_path)
    lines = [line for line in CLIENT if not line.startswith(("cert ", "key "))
             and (with_ca or not line.startswith("ca "))]
    cfg = session_config(_config(tmp_path, [*lines, "pkcs12 c.p12"]), unix_time_offset=0.0)
    assert cfg.tls_context.cert_store_stats()["x509_ca"] == 1


def test_pkcs12_beside_cert_and_key_is_refused(tmp_path):
    write_pki(tmp_path)
    _p12(tmp_path)
    with pytest.raises(ConfigError, match="pkcs12"):
        _config(tmp_path, [*CLIENT, "pkcs12 c.p12"])
