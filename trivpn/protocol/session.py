"""One OpenVPN peer session: control channel, key states, data channel, keepalive.

Sans-IO: the caller feeds datagrams (``receive_datagram``) and TUN packets (``encrypt_data``)
with the current time, runs ``handle_timer(now)`` at ``next_timer()``, and collects what to do
with ``take_datagrams()``, ``take_tun_packets()`` and ``take_events()``.

A session holds up to three key states (docs/protocol.md §11): the primary, a lame duck during the
transition window, and one being negotiated. Codec errors never escape ``receive_datagram``:
they become counted drops (``drops``).

What may follow what -- a key's phases, a client's pull, a server's admission of its client --
is one transition table per machine in :mod:`trivpn.protocol.states`. Errors are split by whose
fault they are (:mod:`trivpn.protocol.errors`): what the peer gets wrong (a
:class:`~trivpn.protocol.errors.PeerViolation` or another codec error) is dropped and counted,
never raised; what the caller gets wrong (``accept()`` twice, a message before there is a
control channel) raises :class:`~trivpn.protocol.errors.CallerMisuse` and is never counted.
"""

from __future__ import annotations

import hashlib
import os
import random
import ssl
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from trivpn.protocol import events as ev
from trivpn.protocol import states
from trivpn.protocol.challenge import AuthToken, pushed_auth_token
from trivpn.protocol.compression import STUBS, Compression, Compressor
from trivpn.protocol.compression import frame as compression_frame
from trivpn.protocol.controlmsg import (
    AuthFailed,
    AuthPending,
    ControlMessageReader,
    Exit,
    Halt,
    PushReply,
    PushRequest,
    Restart,
    encode_message,
    parse_control_message,
)
from trivpn.protocol.datachannel import CIPHERS, DataKey, normalize_cipher
from trivpn.protocol.digests import digest_info
from trivpn.protocol.errors import (
    CallerMisuse,
    CertificateRejected,
    DecodeError,
    HandshakeError,
    ProtocolError,
    StateError,
)
from trivpn.protocol.fragment import HEADER_SIZE as FRAGMENT_HEADER_SIZE
from trivpn.protocol.fragment import FragmentLayer, max_fragment_size
from trivpn.protocol.keymethod import (
    IncompleteError,
    KeyMethod2,
    decode_key_method2,
    encode_key_method2,
)
from trivpn.protocol.keys import (
    EKM_LABEL,
    DirectionalKeys,
    KeySource,
    derive_key_block_prf,
    directional_keys,
)
from trivpn.protocol.ncp import choose_cipher
from trivpn.protocol.occ import (
    MAGIC_FIRST_BYTES,
    PING_MAGIC,
    OccOpcode,
    build_occ,
    is_ping,
    parse_occ,
)
from trivpn.protocol.packets import (
    ControlPacket,
    Opcode,
    decode_control,
    encode_control,
    split_byte0,
)
from trivpn.protocol.peerinfo import (
    IV_PROTO_CC_EXIT_NOTIFY,
    IV_PROTO_DATA_V2,
    IV_PROTO_NCP_P2P,
    IV_PROTO_REQUEST_PUSH,
    IV_PROTO_TLS_KEY_EXPORT,
    PeerInfo,
    parse_peer_info,
)
from trivpn.protocol.push import (
    PullPolicy,
    PushAccumulator,
    PushedOptions,
    build_push_replies,
    pushed_cipher_allowed,
)
from trivpn.protocol.reliable import (
    ACKS_PER_ACK_PACKET,
    ACKS_PER_CONTROL,
    AckQueue,
    ReliableReceiver,
    ReliableSender,
)
from trivpn.protocol.replay import ReplayWindow
from trivpn.protocol.states import (
    ACCEPT_TRANSITIONS,
    KEY_TRANSITIONS,
    PULL_TRANSITIONS,
    AcceptState,
    KeyPhase,
    PullState,
)
from trivpn.protocol.staticmode import StaticDataKey
from trivpn.protocol.tls import (
    CAUSE_CERT_VERIFY_FAILED,
    KeyExporter,
    PeerCertificate,
    PeerVerification,
    TlsEndpoint,
    check_peer_certificate,
)
from trivpn.protocol.tlscryptv2 import (
    EARLY_NEG_START,
    MAX_WKC_LEN,
    TlsCryptV2,
    from_v2,
    parse_early_negotiation,
)
from trivpn.protocol.userauth import UNDEF_COMMON_NAME
from trivpn.protocol.wrap import ControlWrap, NoWrap, TlsCrypt

DEFAULT_DATA_CIPHERS = ("AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305")
PUSH_REQUEST_INTERVAL = 5.0
P2P_PEER_ID = 0x76706E  # 'vpn': OpenVPN's peer-id in TLS peer-to-peer mode without TLS-EKM
P2P_PEERID_LABEL = b"EXPORTER-OpenVPN-p2p-peerid"  # ssl_ncp.c, p2p_ncp_set_options()
PUSH_REPLY_HOLDOFF = 30.0  # push.c: a repeated PUSH_REQUEST within 30 s of the reply is ignored
TLS_CHANNEL_BUF_SIZE = 2048  # OpenVPN's largest control packet (common.h), before wrapping
TLS_OUT_LIMIT = 128 * 1024  # our TLS ciphertext waiting for the peer's acks, per key state
KEY_METHOD_LIMIT = 16 * 1024  # plaintext buffered before the peer's key method block parses
VOLUME_CHECK_INTERVAL = 1.0  # reneg-bytes / reneg-pkts are checked this often
PACKET_ID_CHECK_INTERVAL = 10.0  # 2**24 ids before the wrap: minutes even at 100 kpps
IP_UDP_OVERHEAD = 28  # IPv4 + UDP, counted by OpenVPN even over TCP
_MAX_KEY_STATES = 3
_CONTROL_OPCODES = frozenset({
    Opcode.CONTROL_SOFT_RESET_V1, Opcode.CONTROL_V1, Opcode.ACK_V1,
    Opcode.CONTROL_HARD_RESET_CLIENT_V2, Opcode.CONTROL_HARD_RESET_SERVER_V2,
})
_PUSHED_COMPRESSION = {"lzo-stub": Compression.LZO_STUB, "stub": Compression.STUB,
                       "stub-v2": Compression.STUB_V2, "lzo": Compression.LZO,
                       "lzo-adaptive": Compression.LZO, "lz4": Compression.LZ4,
                       "lz4-v2": Compression.LZ4_V2}
_V2_OPCODES = frozenset({Opcode.CONTROL_HARD_RESET_CLIENT_V3, Opcode.CONTROL_WKC_V1})
_RESETS = frozenset({Opcode.CONTROL_HARD_RESET_CLIENT_V2, Opcode.CONTROL_HARD_RESET_SERVER_V2,
                     Opcode.CONTROL_SOFT_RESET_V1})


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Everything a session needs, already parsed and validated."""

    is_server: bool
    tls_context: ssl.SSLContext
    options_string: str
    verification: PeerVerification = field(default_factory=PeerVerification)
    wrap: ControlWrap = field(default_factory=NoWrap)
    peer_info: str | None = None  # client: sent in key method 2
    data_ciphers: tuple[str, ...] = DEFAULT_DATA_CIPHERS
    data_ciphers_fallback: str | None = None
    auth: str = "SHA1"
    username: str | None = None
    password: str | None = None
    tls_timeout: float = 2.0
    hand_window: float = 60.0
    reneg_seconds: float | None = 3600.0
    reneg_bytes: int | None = None  # data-channel bytes of one key, both ways (reneg-bytes)
    reneg_packets: int | None = None  # data-channel packets of one key, both ways (reneg-pkts)
    transition_window: float = 3600.0
    max_packet_size: int = 1250
    replay_window: int = 64
    replay_time: float = 15.0
    ping_interval: float | None = None
    ping_restart: float | None = None  # seconds without an authenticated packet from the peer
    ping_exit: bool = False  # ... then end for good (ping-exit), not restart (ping-restart)
    inactive: float | None = None  # end after this long with too little tunnel traffic
    inactive_bytes: int = 0  # ... fewer than this many bytes (in + out) per period
    session_timeout: float | None = None  # end this long after the timers start
    server_poll_timeout: float | None = None  # client: give up if the server never answers
    compression: Compression = Compression.NONE
    compress_outgoing: bool = False  # allow-compression yes
    comp_adaptive: bool = False  # comp-lzo adaptive (and bare), unless comp-noadapt
    compression_stub_only: bool = True  # allow-compression no (2.6's default): refuse pushed
    decompress_limit: int = 1600  # largest decompressed packet (OpenVPN: the payload size)
    lzo_compress: Callable[[bytes], bytes] | None = field(default=None, compare=False)
    lzo_decompress: Callable[[bytes, int], bytes] | None = field(default=None, compare=False)
    fragment: int = 0  # fragment N: no datagram payload above N bytes (0: no fragment layer)
    fragment_encap: int = 0  # fragment N mtu: the outer IP+UDP header counts too
    pull_policy: PullPolicy = field(default_factory=PullPolicy)  # client: pull-filter etc.
    unix_time_offset: float = 0.0  # now + offset = Unix time, for tls-auth/tls-crypt stamps
    # client: after the certificate checks, wait for the caller's peer_verdict() before the
    # key method goes out (tls-verify runs an external program on the certificate chain)
    defer_peer_verdict: bool = False
    tls_crypt_v2_max_age: int = 0  # server: refuse client keys older than this many days
    # TLS-EKM (docs/protocol.md §6.3): None = the legacy PRF only, and never announced
    key_exporter: KeyExporter | None = None
    client_cert_optional: bool = False  # server: verify-client-cert none|optional
    auth_token: AuthToken | None = None  # client: sent instead of username/password if set
    replay: bool = True  # False with no-replay: data packets are not checked for replays
    # --- client breadth a ---
    # TLS peer-to-peer mode (tls-client without pull, tls-server without 'mode server'): no
    # push; the cipher, peer-id and key derivation come from both ends' peer-info
    # (_p2p_negotiate()); a p2p server sends its peer_info in its key method and never
    # waits for accept()
    p2p: bool = False
    # --- srvleft ---
    # server: a renegotiated key whose client sent its credentials again (ClientReauthenticating)
    # gets no data keys until reauth_verdict() (OpenVPN: the key stays KS_AUTH_DEFERRED and its
    # data packets are dropped, ssl_verify.c / ssl.c)
    hold_reauth: bool = False
    # --- more ---
    # replay-persist: (time, id) the control-channel replay window starts from
    wrap_replay_start: tuple[int, int] | None = None
    # --- static ---
    # static-key mode (secret FILE [direction]): no TLS; the data channel uses these keys
    # from start() on, with cipher data_ciphers_fallback (protocol/staticmode.py)
    static_keys: DirectionalKeys | None = None

    def __repr__(self) -> str:
        role = "server" if self.is_server else "client"
        return f"SessionConfig(<{role}>)"


_SETTLED = frozenset({KeyPhase.ACTIVE, KeyPhase.DATA_READY, KeyPhase.FAILED})  # no hand window
_NEGOTIATING = frozenset({KeyPhase.PRE_START, KeyPhase.START, KeyPhase.ACTIVE})


@dataclass(slots=True, eq=False)
class _KeyState:
    key_id: int
    created: float
    deadline: float
    sender: ReliableSender
    receiver: ReliableReceiver = field(default_factory=ReliableReceiver)
    acks: AckQueue = field(default_factory=AckQueue)
    phase: KeyPhase = KeyPhase.PRE_START
    last_phase: str = ev.PHASE_RESET_SENT
    tls: TlsEndpoint | None = None
    tls_out: bytearray = field(default_factory=bytearray)
    plain_in: bytearray = field(default_factory=bytearray)
    reader: ControlMessageReader = field(default_factory=ControlMessageReader)
    local_source: KeySource | None = None
    remote_km: KeyMethod2 | None = None
    km_sent: bool = False
    peer_reset: bool = False
    peer: PeerCertificate | None = None
    peer_hash: bytes = b""  # SHA-256 of the peer's certificate (DER)
    awaiting_verdict: bool = False  # defer_peer_verdict: peer_verdict() not called yet
    awaiting_reauth: bool = False  # hold_reauth: reauth_verdict() not called yet
    data_key: DataKey | None = None
    retire_at: float | None = None

    def move(self, phase: KeyPhase) -> None:
        """Enter ``phase`` along an edge of :data:`~trivpn.protocol.states.KEY_TRANSITIONS`."""
        self.phase = states.transition(KEY_TRANSITIONS, self.phase, phase, f"key {self.key_id}")

    def fail(self) -> None:
        """Enter FAILED, from whatever phase (h11's ERROR); it is never left."""
        self.phase = KeyPhase.FAILED


@dataclass(frozen=True, slots=True)
class P2PDecision:
    """What TLS peer-to-peer NCP decides from the peer's peer-info (:func:`p2p_decision`)."""

    cipher: str | None  # None: no common cipher (the fallback cipher, if any, is used)
    peer_id: int | None  # None: P_DATA_V1
    peer_id_from_ekm: bool  # the peer-id is 3 bytes of EXPORTER-OpenVPN-p2p-peerid
    key_derivation: str | None  # "tls-ekm" or None (the PRF)
    flags: tuple[str, ...]  # protocol-flags, as a server would push them ("cc-exit")


def p2p_decision(peer: PeerInfo, data_ciphers: Sequence[str], *, is_server: bool,
                 can_export: bool) -> P2PDecision:
    """TLS peer-to-peer NCP as OpenVPN 2.6 decides it on either end (ssl_ncp.c):
    get_p2p_ncp_cipher() takes the TLS server's first cipher that the TLS client also lists
    (the server's preference, so both ends agree), and none if the peer sent no IV_CIPHERS;
    p2p_ncp_set_options() does the rest only if the peer sets IV_PROTO_NCP_P2P: P_DATA_V2
    with peer-id 0x76706e if it sets DATA_V2, cc-exit if it sets CC_EXIT_NOTIFY, and TLS-EKM
    keys (with the peer-id from EXPORTER-OpenVPN-p2p-peerid) if it sets TLS_KEY_EXPORT and
    this end can export keying material."""
    cipher: str | None = None
    if peer.announces_ciphers:
        if is_server:
            cipher = next((c for c in data_ciphers if pushed_cipher_allowed(c, peer.ciphers)),
                          None)
        else:
            cipher = next((c for c in peer.ciphers if pushed_cipher_allowed(c, data_ciphers)),
                          None)
    if not peer.iv_proto & IV_PROTO_NCP_P2P:
        return P2PDecision(cipher, None, False, None, ())
    ekm = bool(peer.iv_proto & IV_PROTO_TLS_KEY_EXPORT) and can_export
    data_v2 = bool(peer.iv_proto & IV_PROTO_DATA_V2)
    flags = ("cc-exit",) if peer.iv_proto & IV_PROTO_CC_EXIT_NOTIFY else ()
    return P2PDecision(cipher, P2P_PEER_ID if data_v2 else None, data_v2 and ekm,
                       "tls-ekm" if ekm else None, flags)


def is_new_peer_reset(data: bytes, wrap: ControlWrap, remote_session_id: bytes | None) -> bool:
    """TLS peer-to-peer server: is ``data`` a client's hard reset that opens a new session
    (another session id than the current peer's) and passes the control-channel wrap
    (tls-auth/tls-crypt)? OpenVPN starts a new TLS session for such a packet (ssl.c,
    tls_pre_decrypt(): "Initial packet from ..."), which replaces the current one."""
    if len(data) < 9 or data[0] >> 3 != Opcode.CONTROL_HARD_RESET_CLIENT_V2 or data[0] & 7:
        return False
    if remote_session_id is not None and data[1:9] == remote_session_id:
        return False
    try:
        wrap.unwrap(data)
    except (ProtocolError, ValueError):
        return False
    return True


class Session:
    """One peer. Create it, call :meth:`start` (client) or feed the peer's reset (server)."""

    def __init__(self, config: SessionConfig, now: float, *,
                 rng: Callable[[int], bytes] = os.urandom) -> None:
        self._real_username = config.username
        self.auth_token = config.auth_token  # client: the token sent as password, if any
        if config.auth_token is not None:
            config = replace(config, username=config.auth_token.username,
                             password=config.auth_token.token)
        self.config = config
        self._rng = rng
        self.local_session_id = self._new_session_id()
        self.remote_session_id: bytes | None = None
        self.drops: Counter[str] = Counter()
        self.peer_info: PeerInfo | None = None
        self.peer_id: int | None = None  # client: pushed; server: assigned at accept()
        self.cipher: str | None = None
        self.cc_exit = False
        self.failed = False
        self.established = False
        self.pushed: PushedOptions | None = None
        self._keys: dict[int, _KeyState] = {}
        self._primary: _KeyState | None = None
        self._out: list[bytes] = []
        self._tun: list[bytes] = []
        self._events: list[ev.Event] = []
        # tls-crypt-v2 client: the first replay id says "I do early negotiation" (ssl.c,
        # tls_session_init); _resend_wkc: the server asked for WKc in our first control packet
        self._v2 = isinstance(config.wrap, TlsCryptV2)
        self._wrap_packet_id = EARLY_NEG_START if self._v2 and not config.is_server else 0
        self._resend_wkc = False
        self.key_derivation = "prf"  # "tls-ekm" once both ends agreed on TLS-EKM
        self._wrap_time = int(now + config.unix_time_offset)
        self._wrap_replay = ReplayWindow(config.replay_window, config.replay_time)
        if config.wrap_replay_start is not None:  # replay-persist
            self._wrap_replay.restore(*config.wrap_replay_start)
        wrap_overhead = config.wrap.overhead + (16 if isinstance(config.wrap, TlsCrypt) else 0)
        self._control_packet_limit = max(TLS_CHANNEL_BUF_SIZE, config.max_packet_size) \
            + wrap_overhead + (MAX_WKC_LEN if self._v2 else 0)
        self._init_data_layers(config, rng)
        self._ping_interval = config.ping_interval
        self._ping_restart = config.ping_restart
        self._last_sent = now
        self._last_received = now
        self._keepalive_fired = False
        self._rejected_data = False  # the last data packet did not authenticate
        # ping-exit / inactive / session-timeout (OpenVPN: do_init_timers, forward.c)
        self._ping_exit = config.ping_exit
        self._inactive = config.inactive or None
        self._inactive_min = config.inactive_bytes
        self._inactive_count = 0
        self._last_activity = now
        self._session_timeout = config.session_timeout or None
        self._timers_started = now
        self._exit_fired = False
        self._poll_deadline = (now + config.server_poll_timeout
                               if config.server_poll_timeout and not config.is_server else None)
        # client: the pull (states.PULL_TRANSITIONS) and its timers
        self._pull = PullState.IDLE
        self._push = PushAccumulator(policy=config.pull_policy)
        self._push_requested_at = now  # meaningful once REQUESTING
        self._push_deadline: float | None = None
        # server: the client's admission (states.ACCEPT_TRANSITIONS)
        self._accept = AcceptState.HANDSHAKING
        self._push_options: tuple[str, ...] = ()
        self._push_requested = False  # the client asked (PUSH_REQUEST or IV_PROTO_REQUEST_PUSH)
        self._push_reply_expiry = 0.0
        self._reneg_at: float | None = None
        self._volume_check_at: float | None = None
        self._locked_peer: tuple[str, bytes] | None = None  # server: CN and certificate hash
        # server, tls-crypt-v2: the metadata of the client's key (for tls-crypt-v2-verify)
        self.client_key_metadata: bytes | None = None

    def _init_data_layers(self, config: SessionConfig, rng: Callable[[int], bytes]) -> None:
        """Compression and fragment layers: off the data path unless configured."""
        self._compression = self._compressor_for(config.compression, config.comp_adaptive)
        self._fragment: FragmentLayer | None = None
        if config.fragment:
            self._fragment = FragmentLayer(
                max_fragment_size(config.fragment, aead=True, encap=config.fragment_encap),
                max_packet=config.decompress_limit + 64, seq_id=rng(1)[0])
            self.encrypt_data = self._encrypt_data_fragmented  # type: ignore[method-assign]
        self._inbound = self._unwrap if (self._fragment is not None
                                         or self._compression is not None) else None

    @classmethod
    def after_stateless_reset(cls, config: SessionConfig, now: float, *, local_session_id: bytes,
                              remote_session_id: bytes,
                              rng: Callable[[int], bytes] = os.urandom) -> Session:
        """Server: a session whose reset exchange already happened statelessly
        (:mod:`trivpn.protocol.cookie`): the client's reset (id 0) was received and acked, our
        reset (id 0) was sent with wrap replay id 1 and has been acked by the client."""
        if not config.is_server:
            raise CallerMisuse("only a server answers resets statelessly", "stateless reset")
        session = cls(config, now, rng=rng)
        session.local_session_id = local_session_id
        session.remote_session_id = remote_session_id
        session._wrap_packet_id = 1
        key = session._new_key_state(0, now)
        key.receiver.expected = 1
        key.sender.next_id = 1
        key.peer_reset = True
        session._phase(key, ev.PHASE_RESET_RECEIVED, now)
        session._phase(key, ev.PHASE_RESET_SENT, now)
        return session

    # ------------------------------------------------------------------ public API

    def start(self, now: float) -> None:
        """Client: send P_CONTROL_HARD_RESET_CLIENT_V2. Static-key mode (either side): the
        data channel is ready at once."""
        if self.config.static_keys is not None:
            self._start_static(now)
            return
        if self.config.is_server:
            raise CallerMisuse("a server session starts when the client's reset arrives",
                               "start")
        if self._keys or self.remote_session_id is not None:
            raise CallerMisuse("the session has already started", "start")
        key = self._new_key_state(0, now)
        key.sender.queue(Opcode.CONTROL_HARD_RESET_CLIENT_V2, b"")
        self._phase(key, ev.PHASE_RESET_SENT, now)
        self._flush(now)

    def receive_datagram(self, data: bytes, now: float) -> None:
        """Feed one packet from the link (UDP datagram or one TCP record)."""
        if self.config.static_keys is not None:  # no opcode byte: every packet is data
            packet = self.decrypt_data(data, now)
            if packet is not None:
                self._tun.append(packet)
            self._flush(now)
            return
        try:
            if not data:
                raise DecodeError("empty packet", "byte 0")
            opcode, _ = split_byte0(data[0])
            if opcode in (Opcode.DATA_V1, Opcode.DATA_V2):
                packet = self.decrypt_data(data, now)
                if packet is not None:
                    self._tun.append(packet)
                return
            if opcode not in _CONTROL_OPCODES and not (self._v2 and opcode in _V2_OPCODES):
                raise DecodeError(f"unsupported opcode {opcode.name}", "byte 0",
                                  reason="bad_opcode")
            if len(data) > self._control_packet_limit:
                raise DecodeError(f"control packet of {len(data)} bytes, at most "
                                  f"{self._control_packet_limit} expected", opcode.name,
                                  reason="oversize_control")
            self._receive_control(data, now)
        except CallerMisuse:
            raise
        except ProtocolError as exc:
            self.drops[exc.reason] += 1
        self._flush(now)

    def encrypt_data(self, packet: bytes, now: float) -> bytes | None:
        """Encrypt a TUN packet with the newest data key; None (and a counted drop) if none."""
        key = self._primary
        data_key = None if key is None else key.data_key
        if data_key is None:
            self.drops["no_key"] += 1
            return None
        compression = self._compression
        try:
            wire = data_key.encrypt(packet if compression is None
                                    else compression.frame(packet, now))
        except ProtocolError as exc:
            self.drops[exc.reason] += 1
            return None
        self._last_sent = now
        if self._inactive is not None:  # tunnel traffic, counted as sent (forward.c)
            count = self._inactive_count + len(wire)
            if count >= self._inactive_min:
                count = 0
                self._last_activity = now
            self._inactive_count = count
        return wire

    def _encrypt_internal(self, payload: bytes, now: float) -> bytes | None:
        """A ping or OCC message: like :meth:`encrypt_data`, but not tunnel activity."""
        key = self._primary
        data_key = None if key is None else key.data_key
        if data_key is None:
            self.drops["no_key"] += 1
            return None
        compression = self._compression
        try:
            if compression is not None:
                payload = compression.frame(payload, now)
            if self._fragment is not None:
                payload = self._fragment.fragment(payload)[0]  # pings and OCC: always whole
            wire = data_key.encrypt(payload)
        except ProtocolError as exc:
            self.drops[exc.reason] += 1
            return None
        self._last_sent = now
        return wire

    def encrypt_data_many(self, packet: bytes, now: float) -> list[bytes]:
        """:meth:`encrypt_data` for a caller that sends what the fragment layer (``fragment``)
        makes of one TUN packet: one datagram, or several fragments."""
        frag = self._fragment
        if frag is None:
            wire = self.encrypt_data(packet, now)
            return [] if wire is None else [wire]
        key = self._primary
        data_key = None if key is None else key.data_key
        if data_key is None:
            self.drops["no_key"] += 1
            return []
        compression = self._compression
        try:
            parts = frag.fragment(packet if compression is None
                                  else compression.frame(packet, now))
            wires = [data_key.encrypt(part) for part in parts]
        except ProtocolError as exc:
            self.drops[exc.reason] += 1
            return []
        self._last_sent = now
        if self._inactive is not None:
            count = self._inactive_count + sum(map(len, wires))
            if count >= self._inactive_min:
                count = 0
                self._last_activity = now
            self._inactive_count = count
        return wires

    def _encrypt_data_fragmented(self, packet: bytes, now: float) -> bytes | None:
        """encrypt_data with a fragment layer: the first datagram; any further fragments go
        out with the session's other datagrams (:meth:`take_datagrams`)."""
        wires = self.encrypt_data_many(packet, now)
        if not wires:
            return None
        self._out.extend(wires[1:])
        return wires[0]

    def _unwrap(self, payload: bytes, now: float) -> bytes | None:
        """After decryption, when configured: reassembly, then compression framing."""
        if self._fragment is not None:
            whole = self._fragment.receive(payload, now)
            if whole is None:
                return None
            payload = whole
        if self._compression is not None:
            payload = self._compression.unframe(payload)
        return payload

    def authenticate_data(self, data: bytes, now: float) -> tuple[bool, bytes | None]:
        """:meth:`decrypt_data` for a packet whose sender is in question (a server's float):
        (whether it authenticated under one of this session's data keys, the TUN packet)."""
        self._rejected_data = False
        packet = self.decrypt_data(data, now)
        return not self._rejected_data, packet

    def decrypt_data(self, data: bytes, now: float) -> bytes | None:
        """Authenticate and decrypt a data packet; returns the TUN packet, or None when it was a
        ping, an OCC message or a drop. Raises nothing."""
        try:
            if not data:
                raise DecodeError("empty packet", "byte 0")
            key = self._keys.get(data[0] & 0x07)
            data_key = None if key is None else key.data_key
            if data_key is None:
                raise StateError("no data key for this key id", "data", reason="no_key")
            payload = data_key.decrypt(data, now)
        except ProtocolError as exc:  # did not authenticate (zero cost when nothing raises)
            self.drops[exc.reason] += 1
            self._rejected_data = True
            return None
        self._last_received = now
        self._keepalive_fired = False
        inbound = self._inbound
        if inbound is not None:
            try:
                unwrapped = inbound(payload, now)
            except ProtocolError as exc:  # authenticated, but not a packet we can deliver
                self.drops[exc.reason] += 1
                return None
            if unwrapped is None:  # a fragment: the packet is not complete yet
                return None
            payload = unwrapped
        if payload and payload[0] in MAGIC_FIRST_BYTES:  # else neither a ping nor OCC
            if is_ping(payload):
                return None
            try:
                occ = parse_occ(payload)
            except ProtocolError as exc:  # magic, then no or an unknown opcode: as OpenVPN,
                self.drops[f"occ_{exc.reason}"] += 1  # ignored (and counted)
                return None
            if occ is not None:
                self._handle_occ(occ[0])
                return None
        if self._inactive is not None:  # tunnel traffic, counted as written to the TUN
            count = self._inactive_count + len(payload)
            if count >= self._inactive_min:
                count = 0
                self._last_activity = now
            self._inactive_count = count
        return payload

    def handle_timer(self, now: float) -> None:
        """Run whatever is due: retransmits, handshake windows, push retries, keepalive,
        renegotiation, key retirement."""
        for key in list(self._keys.values()):
            if key.retire_at is not None and now >= key.retire_at:
                self._retire(key, now)
                continue
            if key.phase not in _SETTLED and now >= key.deadline:
                self._fail_key(key, self._timeout_cause(key),
                               f"no progress after {self.config.hand_window:g} s "
                               f"(last phase: {key.last_phase})", now)
        self._client_push_timers(now)
        if (self._poll_deadline is not None and now >= self._poll_deadline
                and self.remote_session_id is None):
            self._poll_deadline = None
            self._events.append(ev.ServerPollTimeout(self.config.server_poll_timeout or 0.0))
        self._exit_timers(now)
        self._keepalive_timers(now)
        if self._reneg_at is not None and now >= self._reneg_at:
            if self._negotiating():
                self._reneg_at = None  # the peer's renegotiation is running; it reschedules
            else:
                self._begin_renegotiation(now)
        if self._volume_check_at is not None and now >= self._volume_check_at:
            self._check_volume(now)
        self._flush(now)

    def next_timer(self) -> float | None:
        deadlines: list[float] = []
        for key in self._keys.values():
            d = key.sender.next_deadline()
            if d is not None and key.phase is not KeyPhase.FAILED:
                deadlines.append(d)
            if key.phase not in _SETTLED:
                deadlines.append(key.deadline)
            if key.retire_at is not None:
                deadlines.append(key.retire_at)
        if self._pull is PullState.REQUESTING and not self.failed:
            deadlines.append(self._push_requested_at + PUSH_REQUEST_INTERVAL)
            if self._push_deadline is not None:
                deadlines.append(self._push_deadline)
        if self._poll_deadline is not None and self.remote_session_id is None:
            deadlines.append(self._poll_deadline)
        if not self._exit_fired:
            if self._inactive is not None:
                deadlines.append(self._last_activity + self._inactive)
            if self._session_timeout is not None:
                deadlines.append(self._timers_started + self._session_timeout)
            if self._ping_restart and not self._keepalive_fired:
                deadlines.append(self._last_received + self._ping_restart)
        if self.established:
            if self._ping_interval:
                deadlines.append(self._last_sent + self._ping_interval)
            if self._reneg_at is not None:
                deadlines.append(self._reneg_at)
            if self._volume_check_at is not None:
                deadlines.append(self._volume_check_at)
        return min(deadlines, default=None)

    def take_datagrams(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def take_tun_packets(self) -> list[bytes]:
        out, self._tun = self._tun, []
        return out

    def take_events(self) -> list[ev.Event]:
        out, self._events = self._events, []
        return out

    def send_control_message(self, text: str, now: float, *, key_id: int | None = None) -> None:
        """Send a text control message (``EXIT``, ``RESTART``...) on the primary key, or on
        ``key_id`` (OpenVPN's peer reads control messages of its newest key only: a renewed
        auth-token goes on the renegotiated key)."""
        key = self._message_key()
        if key_id is not None:
            chosen = self._keys.get(key_id)
            if chosen is not None and chosen.tls is not None and chosen.tls.handshake_complete:
                key = chosen
        if key is None:
            raise CallerMisuse("no established control channel to send on",
                               "control message")
        self._send_text(key, text)
        self._flush(now)

    def exit_notify(self, now: float) -> None:
        """Client going away: ``EXIT`` if cc-exit was negotiated, else one OCC_EXIT packet."""
        if self.cc_exit and self._message_key() is not None:
            self.send_control_message("EXIT", now)
            return
        wire = self._encrypt_internal(build_occ(OccOpcode.EXIT), now)
        if wire is not None:
            self._out.append(wire)

    def renegotiate(self, now: float) -> None:
        """Start a new key negotiation now (reneg-sec reached, or asked for)."""
        if not self._negotiating():
            self._begin_renegotiation(now)
            self._flush(now)

    @property
    def control_acked(self) -> bool:
        """Every control message sent so far has been acknowledged by the peer."""
        return all(k.sender.all_acked for k in self._keys.values()
                   if k.phase is not KeyPhase.FAILED)

    @property
    def key_ids(self) -> tuple[int, ...]:
        return tuple(self._keys)

    @property
    def wrap_replay_state(self) -> tuple[int, int]:
        """(time, highest id) of the peer's tls-auth/tls-crypt packets (replay-persist)."""
        return self._wrap_replay.time, self._wrap_replay.highest

    @property
    def data_key(self) -> DataKey | None:
        """The data key new packets are encrypted with (its counters feed reneg-bytes,
        reneg-pkts and the packet-id check), or None."""
        return self._primary.data_key if self._primary is not None else None

    @property
    def primary_key_id(self) -> int | None:
        return self._primary.key_id if self._primary is not None else None

    # server-side decisions ------------------------------------------------------

    def accept(self, now: float, push_options: Sequence[str], *, peer_id: int | None = None,
               cipher: str | None = None) -> None:
        """Server: admit the client. ``push_options`` are the config pushes, the ``server`` and
        ``keepalive`` helper pushes and the client's ``ifconfig``; the session appends
        ``peer-id``, ``cipher`` and ``protocol-flags`` as a 2.6 server does."""
        if not self.config.is_server:
            raise CallerMisuse("only a server accepts clients", "accept")
        states.require(ACCEPT_TRANSITIONS, self._accept, AcceptState.ACCEPTED, "accept")
        info = self.peer_info or parse_peer_info(None)
        chosen = cipher or choose_cipher(self.config.data_ciphers, info,
                                         self._remote_options(), self.config.data_ciphers_fallback)
        if chosen is None:
            self.reject(now, "Data channel cipher negotiation failed (no shared cipher)",
                        cause=ev.CAUSE_NO_COMMON_CIPHER)
            return
        self.cipher = chosen
        extra = list(push_options)
        if info.iv_proto & IV_PROTO_DATA_V2 and peer_id is not None:
            self.peer_id = peer_id
            extra.append(f"peer-id {peer_id}")
        if info.announces_ciphers or info.ncp >= 2:
            extra.append(f"cipher {chosen}")
        # TLS-EKM when the client announces it and we can export (push.c, prepare_push_reply)
        ekm = bool(info.iv_proto & IV_PROTO_TLS_KEY_EXPORT) and self.config.key_exporter is not None
        if ekm:
            self.key_derivation = "tls-ekm"
        if info.iv_proto & IV_PROTO_CC_EXIT_NOTIFY:
            self.cc_exit = True
            extra.append("protocol-flags cc-exit tls-ekm" if ekm else "protocol-flags cc-exit")
        elif ekm:
            extra.append("key-derivation tls-ekm")
        self._push_options = tuple(extra)
        self._accept = states.transition(ACCEPT_TRANSITIONS, self._accept, AcceptState.ACCEPTED,
                                         "accept")
        first = self._keys.get(0)
        if first is not None and first.peer is not None and self._locked_peer is None:
            self._locked_peer = (first.peer.common_name, first.peer_hash)
        if info.iv_proto & IV_PROTO_REQUEST_PUSH:
            self._push_requested = True
        key = self._keys.get(0)
        if key is not None:
            self._maybe_install_keys(key, now)
        self._maybe_send_push_reply(now)
        self._flush(now)

    def reject(self, now: float, reason: str | None = None, *,
               cause: str = ev.CAUSE_AUTH_FAILED, detail: str | None = None,
               key_id: int | None = None) -> None:
        """Server: refuse the client with AUTH_FAILED[,reason]; ``detail`` (default: the
        reason) is what the HandshakeFailed event reports. ``key_id``: send it on that key
        (a refused renegotiation: the client reads control messages of its newest key)."""
        if not self.config.is_server:
            raise CallerMisuse("only a server rejects clients", "reject")
        self._accept = states.transition(ACCEPT_TRANSITIONS, self._accept, AcceptState.REJECTED,
                                         "reject")
        key = self._message_key()
        chosen = self._keys.get(key_id) if key_id is not None else None
        if chosen is not None and chosen.tls is not None and chosen.tls.handshake_complete:
            key = chosen
        text = "AUTH_FAILED" if reason is None else f"AUTH_FAILED,{reason}"
        if key is not None:
            self._send_text(key, text)
        self.failed = True
        self._events.append(ev.HandshakeFailed(0, cause,
                                               detail or reason or "authentication failed",
                                               ev.PHASE_KEY_METHOD_RECEIVED))
        self._flush(now)

    # ------------------------------------------------------------------ control channel

    def _receive_control(self, data: bytes, now: float) -> None:
        unwrapped = self.config.wrap.unwrap(data)
        packet = decode_control(unwrapped.plain)
        if self._v2:  # the v3 reset and P_CONTROL_WKC_V1 (its WKc already stripped)
            packet = from_v2(packet)
        is_client_reset = packet.opcode == Opcode.CONTROL_HARD_RESET_CLIENT_V2
        is_server_reset = packet.opcode == Opcode.CONTROL_HARD_RESET_SERVER_V2
        if (is_client_reset and not self.config.is_server) or \
                (is_server_reset and self.config.is_server):
            raise StateError("client->client or server->server connection attempted",
                             packet.opcode.name, reason="wrong_direction")
        first_contact = self.remote_session_id is None
        if first_contact:
            if not (is_client_reset or is_server_reset) or packet.key_id != 0:
                raise StateError("first packet from the peer must be its hard reset",
                                 packet.opcode.name, reason="unexpected")
            if packet.message_id != 0:
                raise StateError(f"hard reset with message id {packet.message_id}, 0 expected",
                                 packet.opcode.name, reason="unexpected")
        elif packet.session_id != self.remote_session_id:
            raise StateError("packet from an unknown peer session", "session id",
                             reason="wrong_session")
        if unwrapped.packet_id is not None:
            self._wrap_replay.check_and_add(unwrapped.packet_id, now, unwrapped.timestamp)
        if packet.acks and packet.remote_session_id != self.local_session_id:
            raise StateError("acknowledgement for another session", "ack remote session id",
                             reason="wrong_session")
        self._last_received = now  # a good control packet resets ping-restart (forward.c)
        if first_contact:
            self.remote_session_id = packet.session_id
            if self.config.is_server:
                reset = self._new_key_state(0, now)
                reset.sender.queue(Opcode.CONTROL_HARD_RESET_SERVER_V2, b"")
                self._phase(reset, ev.PHASE_RESET_SENT, now)
        key = self._keys.get(packet.key_id) or self._accept_soft_reset(packet, now)
        if packet.acks:
            key.sender.acknowledge(packet.acks)
        if packet.message_id is not None and key.receiver.receive(
                packet.message_id, packet.opcode, packet.payload):
            key.acks.add(packet.message_id)
        for opcode, payload in key.receiver.pop_ready():
            self._deliver(key, Opcode(opcode), payload, now)
        self._advance(key, now)

    def _accept_soft_reset(self, packet: ControlPacket, now: float) -> _KeyState:
        """A packet for an unknown key id: only a peer-initiated SOFT_RESET may open one."""
        if packet.opcode != Opcode.CONTROL_SOFT_RESET_V1 or packet.message_id != 0:
            raise StateError(f"key id {packet.key_id} is not known", "key id", reason="no_key")
        primary = self._primary
        if primary is None or primary.data_key is None:
            raise StateError("soft reset before the first key is established", "soft reset",
                             reason="unexpected")
        expected = self._next_key_id()
        if packet.key_id != expected:
            raise StateError(f"local/remote key ids out of sync ({expected}/{packet.key_id})",
                             "soft reset", reason="unexpected")
        self._soft_reset(now)
        key = self._new_key_state(packet.key_id, now)
        key.sender.queue(Opcode.CONTROL_SOFT_RESET_V1, b"")
        self._phase(key, ev.PHASE_RESET_SENT, now)
        return key

    def _deliver(self, key: _KeyState, opcode: Opcode, payload: bytes, now: float) -> None:
        if opcode in _RESETS:
            if (opcode is Opcode.CONTROL_HARD_RESET_SERVER_V2 and self._v2 and payload
                    and key.key_id == 0):
                self._resend_wkc = parse_early_negotiation(payload)
            if not key.peer_reset:
                key.peer_reset = True
                self._phase(key, ev.PHASE_RESET_RECEIVED, now)
            return
        if opcode != Opcode.CONTROL_V1:
            raise StateError(f"{opcode.name} in the reliable stream", "control",
                             reason="unexpected")
        if key.phase is KeyPhase.FAILED:  # acked above; a key we gave up on is never revived
            return
        if key.tls is None:
            self._start_tls(key, now)
        assert key.tls is not None
        key.tls.feed(payload)

    def _start_tls(self, key: _KeyState, now: float) -> None:
        key.tls = TlsEndpoint(self.config.tls_context, server_side=self.config.is_server,
                              exporter=self.config.key_exporter)
        key.move(KeyPhase.START)
        self._phase(key, ev.PHASE_TLS_STARTED, now)

    def _advance(self, key: _KeyState, now: float) -> None:
        """Move one key state forward as far as its inputs allow."""
        if key.phase is KeyPhase.FAILED:
            return
        try:
            self._advance_tls(key, now)
        except CallerMisuse:
            raise
        except HandshakeError as exc:
            if isinstance(exc, CertificateRejected):
                self._events.append(ev.PeerCertificateRejected(
                    key.key_id, exc.check, exc.serial, exc.common_name, exc.what))
            if key.tls is not None:
                self._pump_tls_out(key)  # let the peer see our alert
            self._fail_key(key, exc.reason, exc.what, now)
        except ProtocolError as exc:
            self._fail_key(key, exc.reason, exc.what, now)

    def _advance_tls(self, key: _KeyState, now: float) -> None:
        cfg = self.config
        if (key.phase is KeyPhase.PRE_START and not cfg.is_server and key.peer_reset
                and key.sender.all_acked):
            self._start_tls(key, now)  # the TLS client speaks first: ClientHello
        tls = key.tls
        if tls is None:
            return
        if not tls.handshake_complete:
            complete = tls.advance()
            self._pump_tls_out(key)
            if not complete or not self._on_tls_complete(key, tls, now):
                return
        plain = tls.read()
        if plain:
            key.plain_in += plain
        self._consume_plaintext(key, now)
        self._pump_tls_out(key)
        if (key.phase is KeyPhase.START and key.km_sent and key.remote_km is not None
                and key.sender.all_acked):
            key.move(KeyPhase.ACTIVE)
            self._on_active(key, now)

    def _on_tls_complete(self, key: _KeyState, tls: TlsEndpoint, now: float) -> bool:
        """Check the peer's certificate; False when the key (and the tunnel) is refused."""
        der = tls.peer_certificate_der()
        if der is None:
            if not (self.config.is_server and self.config.client_cert_optional):
                raise HandshakeError("peer sent no certificate", "tls",
                                     reason="cert_verify_failed")
            # verify-client-cert none|optional: the password check authenticates the client;
            # its common name is OpenVPN's "UNDEF" (tls_common_name()) until
            # username-as-common-name replaces it
            key.peer = PeerCertificate(subject="", common_name=UNDEF_COMMON_NAME, serial=0,
                                       not_after_unix=float("inf"))
            key.peer_hash = b""
        else:
            key.peer = check_peer_certificate(der, self.config.verification,
                                              unix_now=now + self.config.unix_time_offset)
            key.peer_hash = hashlib.sha256(der).digest()
        self._phase(key, ev.PHASE_TLS_COMPLETE, now)
        self._events.append(ev.TlsHandshakeComplete(key.key_id, tls.describe(), key.peer))
        if self._locked_peer is not None and not self._same_peer(key, key.peer, now):
            return False
        if self.config.defer_peer_verdict:
            # the key method waits for peer_verdict(): a client's is not sent, a server
            # does not read the client's (nor answer it) until then
            key.awaiting_verdict = True
        elif not self.config.is_server:
            self._send_key_method(key, now)
        return True

    def peer_verdict(self, key_id: int, accepted: bool, detail: str, now: float) -> None:
        """With ``defer_peer_verdict``: the caller's decision on the certificate of the
        handshake ``key_id`` (announced by TlsHandshakeComplete). Accepted: the key method
        goes out and the key proceeds. Refused: the key fails as a certificate failure
        (PeerCertificateRejected with check ``tls_verify``, then HandshakeFailed)."""
        key = self._keys.get(key_id)
        if key is None or not key.awaiting_verdict or key.phase is KeyPhase.FAILED:
            return  # a key that timed out or was replaced meanwhile
        key.awaiting_verdict = False
        if not accepted:
            peer = key.peer
            self._events.append(ev.PeerCertificateRejected(
                key_id, "tls_verify", peer.serial if peer else 0,
                peer.common_name if peer else "", detail))
            self._fail_key(key, CAUSE_CERT_VERIFY_FAILED, detail, now)
            return
        if not self.config.is_server:  # a server answers the client's key method
            self._send_key_method(key, now)
        self._advance(key, now)

    def reauth_verdict(self, key_id: int, accepted: bool, now: float) -> None:
        """With ``hold_reauth``: the caller's decision on the credentials a renegotiation
        brought (announced by ClientReauthenticating). Accepted: the key gets its data keys
        and takes over. Refused: the key never carries data (the caller rejects the client,
        with ``reject(key_id=...)``)."""
        key = self._keys.get(key_id)
        if key is None or not key.awaiting_reauth or not accepted:
            return  # refused: it stays held (the caller's AUTH_FAILED goes out on it)
        key.awaiting_reauth = False
        self._maybe_install_keys(key, now)
        self._flush(now)

    def _same_peer(self, key: _KeyState, peer: PeerCertificate, now: float) -> bool:
        """Server: a renegotiation must present the certificate the client was admitted with
        (OpenVPN locks the common name and the certificate hashes at client-connect:
        ``tls_lock_common_name``, ``tls_lock_cert_hash_set``). A change disables the tunnel:
        every key stops carrying data and the client gets AUTH_FAILED."""
        assert self._locked_peer is not None
        cn, digest = self._locked_peer
        if peer.common_name != cn:
            detail = (f"TLS object CN attempted to change from '{cn}' to "
                      f"'{peer.common_name}' -- tunnel disabled")
        elif key.peer_hash != digest:
            detail = (f"TLS object CN={cn} client-provided SSL certs unexpectedly changed "
                      f"during mid-session reauth")
        else:
            return True
        self.drops["peer_certificate_changed"] += 1
        if self._accept is not AcceptState.REJECTED:  # the caller may have refused it already
            self.reject(now, detail=detail)
        for other in self._keys.values():
            other.data_key = None
            other.fail()
        self._primary = None
        return False

    def _send_key_method(self, key: _KeyState, now: float) -> None:
        cfg = self.config
        assert key.tls is not None
        if cfg.is_server:
            key.local_source = KeySource(random1=self._rng(32), random2=self._rng(32))
            block = KeyMethod2(random1=key.local_source.random1,
                               random2=key.local_source.random2, options=cfg.options_string,
                               peer_info=cfg.peer_info if cfg.p2p else None)
        else:
            key.local_source = KeySource(random1=self._rng(32), random2=self._rng(32),
                                         pre_master=self._rng(48))
            block = KeyMethod2(random1=key.local_source.random1,
                               random2=key.local_source.random2,
                               pre_master=key.local_source.pre_master,
                               options=cfg.options_string, username=cfg.username,
                               password=cfg.password, peer_info=cfg.peer_info)
        key.tls.write(encode_key_method2(block, from_server=cfg.is_server))
        key.km_sent = True
        self._phase(key, ev.PHASE_KEY_METHOD_SENT, now)

    def _consume_plaintext(self, key: _KeyState, now: float) -> None:
        if key.awaiting_verdict and self.config.is_server:
            return  # the client's key method is read once its certificate is accepted
        if key.remote_km is None:
            if not key.plain_in:
                return
            try:
                block, used = decode_key_method2(bytes(key.plain_in),
                                                 from_server=not self.config.is_server)
            except IncompleteError:
                if len(key.plain_in) > KEY_METHOD_LIMIT:
                    raise DecodeError(f"key method block still incomplete after "
                                      f"{len(key.plain_in)} bytes", "key method",
                                      reason="too_long") from None
                return
            del key.plain_in[:used]
            key.remote_km = block
            self._phase(key, ev.PHASE_KEY_METHOD_RECEIVED, now)
            if self.config.is_server:
                self._on_client_key_method(key, block, now)
        if key.plain_in:
            data = bytes(key.plain_in)
            key.plain_in.clear()
            for text in key.reader.feed(data):
                self._on_control_message(text, now)

    def _on_client_key_method(self, key: _KeyState, block: KeyMethod2, now: float) -> None:
        self._send_key_method(key, now)
        if self.config.p2p:  # one peer, no admission: _p2p_negotiate() once key 0 is active
            return
        if key.key_id == 0:
            self.peer_info = parse_peer_info(block.peer_info)
            assert key.peer is not None
            if self._accept is AcceptState.HANDSHAKING:
                self._accept = states.transition(ACCEPT_TRANSITIONS, self._accept,
                                                 AcceptState.AUTHENTICATED, "key method")
                self._events.append(ev.ClientAuthenticated(key.peer, self.peer_info,
                                                           block.username, block.password,
                                                           block.options))
        elif self._accept in (AcceptState.ACCEPTED, AcceptState.REPLIED):
            key.awaiting_reauth = self.config.hold_reauth
            self._events.append(ev.ClientReauthenticating(key.key_id, block.username,
                                                          block.password))
        elif self._accept is AcceptState.REJECTED:
            key.awaiting_reauth = self.config.hold_reauth  # a refused client gets no new key

    def _on_active(self, key: _KeyState, now: float) -> None:
        if key.key_id == 0 and self._pull is PullState.IDLE and (
                self.config.p2p or not self.config.is_server):
            if self.config.p2p:
                self._p2p_negotiate(key, now)
            else:
                self._send_push_request(now)
                self._push_deadline = now + self.config.hand_window
        self._maybe_install_keys(key, now)
        self._maybe_send_push_reply(now)

    def _on_control_message(self, text: str, now: float) -> None:
        msg = parse_control_message(text)
        if isinstance(msg, PushRequest):
            if self.config.is_server:
                self._on_push_request(now)
        elif isinstance(msg, PushReply):
            if not self.config.is_server and self._pull is not PullState.PUSHED:
                self._on_push_reply(text, now)
            elif not self.config.is_server:
                self._on_late_push_reply(msg.options)
        elif isinstance(msg, AuthFailed):
            if not self.config.is_server:
                self._events.append(ev.AuthFailed(msg.reason))
                self._fail_session(ev.CAUSE_AUTH_FAILED, msg.reason or "AUTH_FAILED",
                                   ev.PHASE_PUSH_REQUEST_SENT)
        elif isinstance(msg, AuthPending):
            if self._push_deadline is not None:
                self._push_deadline = now + float(msg.timeout or self.config.hand_window)
        elif isinstance(msg, Restart):
            self._events.append(ev.RestartRequested(msg.message, msg.advance))
        elif isinstance(msg, Halt):
            self._events.append(ev.HaltRequested(msg.message))
        elif isinstance(msg, Exit):
            self._events.append(ev.PeerExited("exit"))
        else:
            self.drops["unknown_control_message"] += 1

    # ------------------------------------------------------------------ push handling

    def _on_push_request(self, now: float) -> None:
        """Server: a client's PUSH_REQUEST."""
        self._push_requested = True
        if self._accept is not AcceptState.REPLIED:
            self._maybe_send_push_reply(now)
        elif now < self._push_reply_expiry:
            self.drops["push_request_repeated"] += 1  # OpenVPN: ALREADY_REPLIED
        else:  # a request after the hold-off gets the reply again
            self._send_push_reply(now)

    def _on_push_reply(self, text: str, now: float) -> None:
        """Client: a (part of a) PUSH_REPLY while the pull is not complete."""
        try:
            result = self._push.feed(text)
        except ProtocolError as exc:
            self._fail_session(ev.CAUSE_BAD_PUSH, exc.what, ev.PHASE_PUSH_REPLY_RECEIVED)
            return
        if result is not None:
            self._apply_push(result, now)

    def _on_late_push_reply(self, options: tuple[str, ...]) -> None:
        """Client: a PUSH_REPLY after the pull completed. A 2.6 server sends one to renew the
        auth-token (ssl.c, resend_auth_token_renegotiation); only auth-token and
        auth-token-user are taken from it."""
        token: str | None = None
        token_user: str | None = None
        for option in options:
            words = option.split()
            if len(words) == 2 and words[0] == "auth-token":
                token = words[1]
            elif len(words) == 2 and words[0] == "auth-token-user":
                token_user = words[1]
        if token is not None:
            self._use_auth_token(token, token_user)

    def _use_auth_token(self, token: str | None, token_user: str | None) -> None:
        """From now on the key method sends the pushed auth-token as the password."""
        found = pushed_auth_token(token, token_user, self._real_username, self.auth_token)
        if found is None or found == self.auth_token:
            return
        self.auth_token = found
        self.config = replace(self.config, username=found.username, password=found.token)
        self._events.append(ev.AuthTokenReceived(found.username))

    def _p2p_negotiate(self, key: _KeyState, now: float) -> None:
        """TLS peer-to-peer mode, both roles: what a server would push, decided from the
        peer's peer-info (:func:`p2p_decision`). Without a common cipher, the fallback
        cipher (data-ciphers-fallback, or 'cipher' in this mode); without that either the
        session fails. The result goes through the push path, so the device is set up from
        the config's own ifconfig and routes."""
        assert key.remote_km is not None
        cfg = self.config
        info = parse_peer_info(key.remote_km.peer_info)
        self.peer_info = info
        decision = p2p_decision(info, cfg.data_ciphers, is_server=cfg.is_server,
                                can_export=cfg.key_exporter is not None)
        peer_id = decision.peer_id
        if decision.peer_id_from_ekm and key.tls is not None:
            try:
                raw = key.tls.export_keying_material(P2P_PEERID_LABEL, 3)
                peer_id = int.from_bytes(raw, "big")
            except ValueError:  # OpenVPN: "TLS key export for P2P peer id failed" (goes on)
                self.drops["p2p_peer_id_export_failed"] += 1
        cipher = decision.cipher
        if cipher is None and cfg.data_ciphers_fallback is None:
            self._fail_session(ev.CAUSE_NO_COMMON_CIPHER,
                               "failed to negotiate cipher with peer and "
                               "--data-ciphers-fallback not enabled. No usable data channel "
                               "cipher", ev.PHASE_KEY_METHOD_RECEIVED)
            return
        self._apply_push(PushedOptions(cipher=cipher or cfg.data_ciphers_fallback,
                                       peer_id=peer_id, protocol_flags=decision.flags,
                                       key_derivation=decision.key_derivation), now,
                         fallback=cipher is None)

    def _send_push_request(self, now: float) -> None:
        key = self._message_key()
        if key is None or key.tls is None:
            return
        key.tls.write(encode_message("PUSH_REQUEST"))
        self._pump_tls_out(key)
        if self._pull is PullState.IDLE:
            self._phase(key, ev.PHASE_PUSH_REQUEST_SENT, now)
        self._pull = states.transition(PULL_TRANSITIONS, self._pull, PullState.REQUESTING,
                                       "push request")
        self._push_requested_at = now

    def _client_push_timers(self, now: float) -> None:
        if self._pull is not PullState.REQUESTING or self.failed:
            return
        if self._push_deadline is not None and now >= self._push_deadline:
            self._fail_session(ev.CAUSE_TIMEOUT,
                               f"no reply from server to push requests in "
                               f"{self.config.hand_window:g} s", ev.PHASE_PUSH_REQUEST_SENT)
            return
        if now >= self._push_requested_at + PUSH_REQUEST_INTERVAL:
            self._send_push_request(now)

    def _apply_pushed_pings(self, pushed: PushedOptions) -> None:
        if pushed.ping is not None:
            self._ping_interval = float(pushed.ping)
        if pushed.ping_restart is not None:
            self._ping_restart = float(pushed.ping_restart)
            self._ping_exit = False
        if pushed.ping_exit is not None:  # the same timer as ping-restart; the last one wins
            self._ping_restart = float(pushed.ping_exit)
            self._ping_exit = True

    def _apply_push(self, pushed: PushedOptions, now: float, *, fallback: bool = False) -> None:
        cfg = self.config
        key = self._keys.get(0)
        if pushed.key_derivation is not None or "tls-ekm" in pushed.protocol_flags:
            if cfg.key_exporter is None:
                self._fail_session(ev.CAUSE_BAD_PUSH,
                                   "server pushed TLS-EKM key derivation, which trivpn did not "
                                   "announce (IV_PROTO bit 3)", ev.PHASE_PUSH_REPLY_RECEIVED)
                return
            self.key_derivation = "tls-ekm"
        cipher = pushed.cipher or cfg.data_ciphers_fallback
        # the fallback cipher is allowed whatever data-ciphers says (ssl_ncp.c,
        # check_session_cipher(): cipher_allowed_as_fallback)
        fallback = fallback or (pushed.cipher is None and cipher is not None)
        if cipher is None or not (fallback or pushed_cipher_allowed(cipher, cfg.data_ciphers)):
            self._fail_session(ev.CAUSE_NO_COMMON_CIPHER,
                               f"negotiated cipher not allowed - {cipher} not in "
                               f"{':'.join(cfg.data_ciphers)}", ev.PHASE_PUSH_REPLY_RECEIVED)
            return
        self._pull = states.transition(PULL_TRANSITIONS, self._pull, PullState.PUSHED,
                                       "push reply")
        self.pushed = pushed
        if pushed.auth_token:
            self._use_auth_token(pushed.auth_token, pushed.auth_token_user)
        self.cipher = cipher
        self.peer_id = pushed.peer_id
        self.cc_exit = "cc-exit" in pushed.protocol_flags
        self._apply_pushed_pings(pushed)
        if pushed.inactive is not None:
            self._inactive = float(pushed.inactive) or None
            self._inactive_min = pushed.inactive_bytes or 0
        if pushed.session_timeout is not None:
            self._session_timeout = float(pushed.session_timeout) or None
        if pushed.has_timer_options:
            # OpenVPN (do_deferred_options -> do_init_timers) restarts every timer from the
            # push when it carried one of them: session-timeout counts from here
            self._timers_started = now
            self._last_activity = now
            self._inactive_count = 0
            self._last_received = now
        if pushed.compression is not None or pushed.comp_noadapt:
            kind = self._compression.kind if self._compression is not None \
                else cfg.compression
            adaptive = self._compression.adaptive if self._compression is not None \
                else cfg.comp_adaptive
            if pushed.compression is not None:
                kind = _PUSHED_COMPRESSION[pushed.compression]
                adaptive = pushed.compression == "lzo-adaptive" or (
                    adaptive and pushed.compression not in ("lzo", "lzo-stub"))
            if pushed.comp_noadapt:
                adaptive = False
            if kind not in STUBS and cfg.compression_stub_only:
                # OpenVPN init.c do_deferred_options: check_compression_settings_valid
                self._fail_session(ev.CAUSE_BAD_PUSH,
                                   "server pushed compression settings that are not allowed "
                                   "(allow-compression is 'no', 2.6's default without a "
                                   "compression directive)", ev.PHASE_PUSH_REPLY_RECEIVED)
                return
            self._compression = self._compressor_for(kind, adaptive)
            self._inbound = self._unwrap
        if key is not None:
            self._phase(key, ev.PHASE_PUSH_REPLY_RECEIVED, now)
        self._events.append(ev.PushReceived(pushed))
        if key is not None:
            self._maybe_install_keys(key, now)

    def _compressor_for(self, kind: Compression, adaptive: bool) -> Compressor | None:
        if kind is Compression.NONE:
            return None
        cfg = self.config
        return Compressor(kind, max_size=cfg.decompress_limit,
                          compress_outgoing=cfg.compress_outgoing, adaptive=adaptive,
                          lzo_compress=cfg.lzo_compress, lzo_decompress=cfg.lzo_decompress)

    def _hmac_len(self) -> int:
        try:
            return digest_info(self.config.auth)[1]
        except (ProtocolError, ValueError, KeyError):
            return 20

    def data_wire_length(self, packet: bytes) -> int | None:
        """The datagram (UDP payload, or TCP packet without its length prefix) that
        :meth:`encrypt_data` would make of ``packet`` when compression does not shrink it:
        compression framing, fragment header and the data key's framing. None without a
        data key, or when the fragment layer would split ``packet`` into several."""
        key = self.data_key
        if key is None:
            return None
        framed = len(packet)
        if self._compression is not None:
            kind = self._compression.kind
            stub = {Compression.LZO: Compression.LZO_STUB, Compression.LZ4: Compression.STUB,
                    Compression.LZ4_V2: Compression.STUB_V2}.get(kind, kind)
            framed = len(compression_frame(stub, packet))
        if self._fragment is not None:
            if framed > self._fragment.max_size:
                return None
            framed += FRAGMENT_HEADER_SIZE
        return key.wire_length(framed)

    @property
    def fragment_layer(self) -> FragmentLayer | None:
        """The fragment layer (``fragment``), with its counters; None when not configured."""
        return self._fragment

    @property
    def compressor(self) -> Compressor | None:
        """The compression context in use (None: no compression framing), with its counters."""
        return self._compression

    def _maybe_send_push_reply(self, now: float) -> None:
        if self._accept is AcceptState.ACCEPTED and self._push_requested:
            self._send_push_reply(now)

    def _send_push_reply(self, now: float) -> None:
        """PUSH_REPLY on the first key, once its data key exists (else on a later call)."""
        key = self._keys.get(0)
        if key is None or key.data_key is None:
            return
        for text in build_push_replies(self._push_options):
            self._send_text(key, text)
        self._accept = states.transition(ACCEPT_TRANSITIONS, self._accept, AcceptState.REPLIED,
                                         "push reply")
        self._push_reply_expiry = now + PUSH_REPLY_HOLDOFF

    def _send_text(self, key: _KeyState, text: str) -> None:
        assert key.tls is not None
        key.tls.write(encode_message(text))
        self._pump_tls_out(key)

    # ------------------------------------------------------------------ keys

    def _maybe_install_keys(self, key: _KeyState, now: float) -> None:
        """Derive data keys once key method 2 ran both ways and the cipher is known (and a
        held renegotiation was authenticated)."""
        if key.phase is not KeyPhase.ACTIVE or self.cipher is None or key.awaiting_reauth:
            return
        if key.key_id == 0 and not self.config.is_server and self._pull is not PullState.PUSHED:
            return
        remote, local = key.remote_km, key.local_source
        assert remote is not None and local is not None
        assert self.remote_session_id is not None
        remote_source = KeySource(random1=remote.random1, random2=remote.random2,
                                  pre_master=remote.pre_master)
        if self.config.is_server:
            client, server = remote_source, local
            client_sid, server_sid = self.remote_session_id, self.local_session_id
        else:
            client, server = local, remote_source
            client_sid, server_sid = self.local_session_id, self.remote_session_id
        if self.key_derivation == "tls-ekm":
            assert key.tls is not None
            try:
                block = key.tls.export_keying_material(EKM_LABEL, 256)
            except ValueError as exc:
                self._fail_session(ev.CAUSE_KEY_EXPORT, f"TLS key export failed: {exc}",
                                   key.last_phase, key_id=key.key_id)
                return
        else:
            block = derive_key_block_prf(client, server, client_sid, server_sid)
        send_peer_id = self.peer_id
        key.data_key = DataKey(self.cipher, directional_keys(block, self.config.is_server),
                               key.key_id, auth=self.config.auth, peer_id=send_peer_id,
                               replay_backtrack=self.config.replay_window,
                               replay_time=self.config.replay_time,
                               replay=self.config.replay)
        key.move(KeyPhase.DATA_READY)
        if self._fragment is not None:  # the per-fragment budget depends on the cipher
            cipher_name = normalize_cipher(self.cipher)
            self._fragment.max_size = max_fragment_size(
                self.config.fragment, aead=CIPHERS[cipher_name][1],
                hmac_len=self._hmac_len(), encap=self.config.fragment_encap)
        renegotiated = self.established
        previous = self._primary
        self._primary = key
        if previous is not None:
            if previous.retire_at is None:  # set when its soft reset started; never extended
                previous.retire_at = now + self.config.transition_window
            for other in self._keys.values():
                if other is not previous and other is not key and other.retire_at is not None:
                    other.retire_at = min(other.retire_at, now)
        self.established = True
        self._phase(key, ev.PHASE_DATA_CHANNEL_READY, now)
        self._events.append(ev.DataChannelReady(key.key_id, self.cipher, self.peer_id,
                                                renegotiated, self.key_derivation))
        self._schedule_renegotiation(now)
        self._volume_check_at = now + self._volume_check_interval()

    def _schedule_renegotiation(self, now: float) -> None:
        seconds = self.config.reneg_seconds
        if not seconds:
            self._reneg_at = None
            return
        if self.config.is_server:  # 2.6 servers subtract up to 10 % jitter
            seconds -= random.Random(self._rng(8)).uniform(0, seconds / 10)
        self._reneg_at = now + seconds

    def _begin_renegotiation(self, now: float) -> None:
        if self.failed or self._primary is None or self._primary.data_key is None:
            return
        self._soft_reset(now)
        key = self._new_key_state(self._next_key_id(), now)
        key.sender.queue(Opcode.CONTROL_SOFT_RESET_V1, b"")
        self._phase(key, ev.PHASE_RESET_SENT, now)
        self._reneg_at = None

    def _soft_reset(self, now: float) -> None:
        """A renegotiation starts (ours or the peer's): the key in use becomes the lame duck
        and must die ``transition_window`` seconds from now, whether or not the new key ever
        completes (OpenVPN's ``key_state_soft_reset``); an older lame duck goes at once. A
        retry while the lame duck lives does not extend its life."""
        primary = self._primary
        assert primary is not None
        if primary.retire_at is None:
            primary.retire_at = now + self.config.transition_window
        for other in self._keys.values():
            if other is not primary and other.data_key is not None:
                other.retire_at = now if other.retire_at is None else min(other.retire_at, now)

    def _retire(self, key: _KeyState, now: float) -> None:
        """A key's time is up: forget it. When it still carried the data channel (no new key
        was negotiated within the transition window) the tunnel has no key any more: the
        session fails unless a negotiation is still running (then that one's outcome decides,
        as OpenVPN's hard error waits for the running handshake)."""
        del self._keys[key.key_id]
        if key is not self._primary:
            return
        self._primary = None
        self._events.append(ev.KeyExpired(key.key_id, now))
        if not self._negotiating() and not self.failed:
            self._fail_session(ev.CAUSE_KEY_EXPIRED,
                               f"key {key.key_id} expired (tran-window "
                               f"{self.config.transition_window:g} s) before a new key was "
                               f"negotiated", key.last_phase, key_id=key.key_id)

    def _volume_check_interval(self) -> float:
        cfg = self.config
        return VOLUME_CHECK_INTERVAL if cfg.reneg_bytes or cfg.reneg_packets \
            else PACKET_ID_CHECK_INTERVAL

    def _check_volume(self, now: float) -> None:
        """reneg-bytes, reneg-pkts and packet-id exhaustion (OpenVPN's ``tls_process`` soft
        reset triggers), checked from the timer so the per-packet path only counts."""
        self._volume_check_at = now + self._volume_check_interval()
        primary = self._primary
        if primary is None or primary.data_key is None or self._negotiating():
            return
        data_key = primary.data_key
        cfg = self.config
        if (data_key.needs_renegotiation
                or (cfg.reneg_packets and data_key.packets_in + data_key.packets_out
                    >= cfg.reneg_packets)
                or (cfg.reneg_bytes and data_key.wire_bytes() >= cfg.reneg_bytes)):
            self._begin_renegotiation(now)

    def _negotiating(self) -> bool:
        return any(k.phase in _NEGOTIATING for k in self._keys.values() if k is not self._primary)

    def _next_key_id(self) -> int:
        newest = max((k.key_id for k in self._keys.values()), key=self._key_age, default=0)
        return newest % 7 + 1

    def _key_age(self, key_id: int) -> float:
        return self._keys[key_id].created

    def _new_key_state(self, key_id: int, now: float) -> _KeyState:
        if len(self._keys) >= _MAX_KEY_STATES:
            oldest = min((k for k in self._keys.values() if k is not self._primary),
                         key=lambda k: k.created)
            del self._keys[oldest.key_id]
        key = _KeyState(key_id=key_id, created=now, deadline=now + self.config.hand_window,
                        sender=ReliableSender(initial_timeout=self.config.tls_timeout))
        self._keys[key_id] = key
        return key

    def _message_key(self) -> _KeyState | None:
        """The key state text control messages go out on: the primary, else key 0."""
        if self._primary is not None and self._primary.tls is not None:
            return self._primary
        key = self._keys.get(0)
        if key is not None and key.tls is not None and key.tls.handshake_complete:
            return key
        return None

    def _remote_options(self) -> str:
        key = self._keys.get(0)
        if key is None or key.remote_km is None:
            return ""
        return key.remote_km.options

    # ------------------------------------------------------------------ failures & timers

    def _timeout_cause(self, key: _KeyState) -> str:
        if key.key_id == 0 and not key.peer_reset and not self.config.is_server:
            return ev.CAUSE_NO_RESET_REPLY
        return ev.CAUSE_TIMEOUT

    def _fail_key(self, key: _KeyState, cause: str, detail: str, now: float) -> None:
        key.fail()
        if self._primary is None:  # nothing carries data: the first handshake, or the old key
            self.failed = True     # expired while this one negotiated (OpenVPN's hard error)
        self._events.append(ev.HandshakeFailed(key.key_id, cause, detail, key.last_phase))
        if key is not self._primary and self._primary is not None:
            # A failed renegotiation: the lame duck keeps working until it must die while new
            # attempts run (OpenVPN starts a fresh handshake at once). After a refusal rather
            # than a timeout, wait tls-timeout so a peer that fails every handshake at once
            # cannot make us loop at the speed of round trips.
            key.retire_at = now
            self._reneg_at = now if cause == ev.CAUSE_TIMEOUT else now + self.config.tls_timeout

    def _fail_session(self, cause: str, detail: str, phase: str, *, key_id: int = 0) -> None:
        self.failed = True
        self._events.append(ev.HandshakeFailed(key_id, cause, detail, phase))

    def _exit_timers(self, now: float) -> None:
        """inactive, session-timeout, ping-exit/ping-restart: like OpenVPN, they run from the
        start (not only once connected), in this order, and the first one due ends it."""
        if self._exit_fired:
            return
        if self._inactive is not None and now >= self._last_activity + self._inactive:
            self._fire_exit(ev.TIMEOUT_INACTIVE, now - self._last_activity)
        elif (self._session_timeout is not None
              and now >= self._timers_started + self._session_timeout):
            self._fire_exit(ev.TIMEOUT_SESSION, now - self._timers_started)
        elif (self._ping_restart and not self._keepalive_fired
                and now >= self._last_received + self._ping_restart):
            if self._ping_exit:
                self._fire_exit(ev.TIMEOUT_PING_EXIT, now - self._last_received)
            else:
                self._keepalive_fired = True
                self._events.append(ev.KeepaliveTimeout(now - self._last_received))

    def _fire_exit(self, cause: str, after: float) -> None:
        self._exit_fired = True
        self._events.append(ev.TimeoutExit(cause, after))

    def _keepalive_timers(self, now: float) -> None:
        if not self.established:
            return
        if self._ping_interval and now >= self._last_sent + self._ping_interval:
            wire = self._encrypt_internal(PING_MAGIC, now)
            if wire is not None:
                self._out.append(wire)
            else:
                self._last_sent = now  # no key (expired): try again one interval later

    def _handle_occ(self, opcode: OccOpcode) -> None:
        if opcode == OccOpcode.EXIT:
            self._events.append(ev.PeerExited("occ_exit"))
        elif opcode == OccOpcode.REQUEST and self.config.static_keys is not None:
            # static-key mode: the peer asks for our options string (occ.c, OCC_REQUEST ->
            # OCC_REPLY with the NUL-terminated string); with TLS it came in key method 2.
            # It leaves with the session's next output (the runtime's next flush).
            wire = self._encrypt_internal(
                build_occ(OccOpcode.REPLY, self.config.options_string.encode() + b"\0"),
                self._last_received)
            if wire is not None:
                self._out.append(wire)

    # --- static ---

    def _start_static(self, now: float) -> None:
        """Static-key mode: one key (id 0) for every packet, ready now; the device is set
        up from the config's own ifconfig/route lines (the same PushReceived path as TLS
        peer-to-peer mode)."""
        if self._keys:
            raise CallerMisuse("the session has already started", "start")
        cfg = self.config
        assert cfg.static_keys is not None
        cipher = cfg.data_ciphers_fallback
        if cipher is None:
            raise CallerMisuse("static-key mode needs its cipher in data_ciphers_fallback",
                               "start")
        key = self._new_key_state(0, now)
        key.phase = KeyPhase.DATA_READY
        key.data_key = StaticDataKey(cipher, cfg.static_keys, auth=cfg.auth,
                                     start_time=int(now + cfg.unix_time_offset),
                                     replay_backtrack=cfg.replay_window,
                                     replay_time=cfg.replay_time, replay=cfg.replay)
        # no key-id byte: whatever byte a packet starts with, key 0 decrypts it
        self._keys = dict.fromkeys(range(8), key)
        self._primary = key
        self.cipher = cipher
        self.established = True
        self.key_derivation = "static"
        self.pushed = PushedOptions(cipher=cipher)
        self._events.append(ev.PushReceived(self.pushed))
        self._events.append(ev.DataChannelReady(0, cipher, None, False, "static"))


    # ------------------------------------------------------------------ output

    def _phase(self, key: _KeyState, phase: str, now: float) -> None:
        key.last_phase = phase
        self._events.append(ev.PhaseReached(key.key_id, phase, now))

    def _max_payload(self) -> int:
        ack_bytes = 1 + 8 + 4 * ACKS_PER_CONTROL
        wrap = self.config.wrap.overhead
        if isinstance(self.config.wrap, TlsCrypt):
            wrap += 16  # OpenVPN also reserves a cipher block for tls-crypt
        header = 1 + 8 + ack_bytes + 4 + wrap + IP_UDP_OVERHEAD
        return max(64, self.config.max_packet_size - header)

    def _pump_tls_out(self, key: _KeyState) -> None:
        """Move TLS ciphertext into reliable CONTROL_V1 messages while the window allows.

        What does not fit waits in ``tls_out``; a peer that leaves more than
        :data:`TLS_OUT_LIMIT` bytes of it unacknowledged fails the session (counted as
        ``control_stalled``) instead of growing it without bound."""
        if key.tls is not None:
            key.tls_out += key.tls.take_ciphertext()
        limit = self._max_payload()
        while key.tls_out and key.sender.can_queue():
            chunk = bytes(key.tls_out[:limit])
            del key.tls_out[:limit]
            key.sender.queue(Opcode.CONTROL_V1, chunk)
        if len(key.tls_out) > TLS_OUT_LIMIT:
            waiting = len(key.tls_out)
            key.tls_out = bytearray()
            key.fail()
            self.drops["control_stalled"] += 1
            if not self.failed:
                self._fail_session(ev.CAUSE_CONTROL_STALLED,
                                   f"peer acknowledged none of {waiting} bytes of control "
                                   f"channel data waiting to be sent", key.last_phase,
                                   key_id=key.key_id)

    def _flush(self, now: float) -> None:
        if self.config.static_keys is not None:  # no control channel
            return
        if self.remote_session_id is None and self.config.is_server:
            return
        for key in list(self._keys.values()):
            if key.phase is not KeyPhase.FAILED or key.sender.outstanding:
                self._pump_tls_out(key)
                for out in key.sender.due(now):
                    acks = key.acks.take(ACKS_PER_CONTROL)
                    self._emit(ControlPacket(
                        opcode=Opcode(out.opcode), key_id=key.key_id,
                        session_id=self.local_session_id, acks=acks,
                        remote_session_id=self.remote_session_id if acks else None,
                        message_id=out.message_id, payload=out.payload), now)
            if key.acks.pending and self.remote_session_id is not None:
                limit = ACKS_PER_ACK_PACKET
                if not self.config.is_server and isinstance(self.config.wrap, NoWrap):
                    limit = ACKS_PER_CONTROL  # OpenVPN's SoftEther workaround for clients
                acks = key.acks.take(limit)
                self._emit(ControlPacket(
                    opcode=Opcode.ACK_V1, key_id=key.key_id, session_id=self.local_session_id,
                    acks=acks, remote_session_id=self.remote_session_id), now)

    def _emit(self, packet: ControlPacket, now: float) -> None:
        if self._v2 and not self.config.is_server:
            packet = self._to_v2(packet)
        self._wrap_packet_id += 1
        self._out.append(self.config.wrap.wrap(encode_control(packet), self._wrap_packet_id,
                                               self._wrap_time))

    def _to_v2(self, packet: ControlPacket) -> ControlPacket:
        """tls-crypt-v2 client: the reset is a v3 one, and the first control packet after it
        carries WKc again when the server asked (ssl.c, control_packet_needs_wkc)."""
        if packet.opcode is Opcode.CONTROL_HARD_RESET_CLIENT_V2:
            return replace(packet, opcode=Opcode.CONTROL_HARD_RESET_CLIENT_V3)
        if (self._resend_wkc and packet.opcode is Opcode.CONTROL_V1 and packet.key_id == 0
                and packet.message_id == 1):
            return replace(packet, opcode=Opcode.CONTROL_WKC_V1)
        return packet

    def _new_session_id(self) -> bytes:
        while True:
            sid = self._rng(8)
            if any(sid):
                return sid

