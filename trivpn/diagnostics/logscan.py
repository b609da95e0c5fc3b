"""``trivpn doctor --log FILE``: explain the known error lines of an OpenVPN (or trivpn) log.

Each known kind of line becomes one :class:`CheckResult` (``log.tls_timeout``,
``log.hmac_auth_failed``...) with the line numbers, how often it occurred, the first example,
what it means and what to do. Texts are OpenVPN 2.6's (docs/protocol.md §12). Lines that
match nothing are ignored. trivpn's JSON log lines are matched on their string values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from trivpn.diagnostics.auth_diag import LOG_CCD_EXCLUSIVE, LOG_NO_CREDENTIALS
from trivpn.diagnostics.model import CheckResult, Role, ok, problem

MAX_LINE_NUMBERS = 20
MAX_LINE_CHARS = 300

Describe = Callable[[re.Match[str]], tuple[str, str, str]]  # (summary, explanation, fix)


@dataclass(frozen=True, slots=True)
class LogPattern:
    id: str
    status: Literal["ok", "warn", "fail"]
    regexes: tuple[re.Pattern[str], ...]
    summary: str
    explanation: str
    fix: str
    describe: Describe | None = None  # refine the texts from the first matching line
    server_only: bool = False  # applies only to logs of a server (see guess_log_role)


def _re(*texts: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(t) for t in texts)


_DOCTOR = "Run 'trivpn doctor CLIENT.conf' on the client to find out which."


def _tls_timeout(m: re.Match[str]) -> tuple[str, str, str]:
    seconds = m.group(1)
    return (f"TLS key negotiation did not finish within {seconds} seconds",
            f"The client sent its first packet and retried for {seconds} seconds ('hand-window') "
            "without completing a TLS handshake. OpenVPN cannot tell why; the usual causes are: "
            "the server port is blocked by a firewall or not listening (wrong 'remote' or "
            "'port'), the server silently drops the packets because the tls-auth/tls-crypt key "
            "or key-direction differs, or replies come back from another address (NAT, "
            "multi-homed server).",
            f"{_DOCTOR} On the server, look for 'HMAC authentication failed' or 'tls-crypt "
            "unwrap error' lines at the same time; if there are none, packets are not arriving "
            "(check the firewall and the 'remote' host and port).")


def _verify_error(m: re.Match[str]) -> tuple[str, str, str]:
    depth, error, subject = m.group(1), m.group(2).strip(), m.group(3).strip()
    summary = f"certificate verification failed at depth {depth}: {error}"
    what = ("the peer's own certificate" if depth == "0"
            else f"a CA certificate {depth} level(s) above the peer's certificate")
    if "CRL has expired" in error or "CRL is not yet valid" in error:
        return (summary, "The certificate revocation list given to 'crl-verify' is past its "
                "nextUpdate date (or not valid yet), and OpenSSL then refuses every "
                f"certificate checked against it (here {subject}), revoked or not: no client "
                "can connect until the CRL is renewed.",
                "Renew the CRL on the CA ('easyrsa gen-crl', or 'openssl ca -gencrl'; easy-rsa "
                "makes it valid for EASYRSA_CRL_DAYS, 180 days by default), copy it to the "
                "'crl-verify' path and schedule that regularly; 'openssl crl -noout -nextupdate "
                "-in crl.pem' shows the date. Also check the clock ('date -u').")
    if "expired" in error:
        return (summary, f"The peer presented a certificate ({what}: {subject}) that has "
                "expired, so the TLS handshake was aborted.",
                "Renew that certificate on the peer (e.g. 'easyrsa renew NAME') and restart it; "
                "check both clocks with 'date -u'.")
    if "unsuitable certificate purpose" in error:
        return (summary, f"The peer's certificate ({subject}) does not carry the extended key "
                "usage this side requires ('remote-cert-tls server' needs serverAuth, "
                "'remote-cert-tls client' clientAuth): typically a client certificate installed "
                "on the server, or swapped cert files.",
                "Give the server a server certificate ('easyrsa build-server-full NAME' or "
                "'trivpn pki issue server NAME'); keep 'remote-cert-tls server' on the client, "
                "it stops other clients from impersonating the server.")
    if "not yet valid" in error:
        return (summary, f"The certificate {subject} ({what}) is not valid yet: one of the two "
                "clocks is wrong, or it was issued with a start date in the future.",
                "Check the time on both machines ('date -u') and enable NTP "
                "('timedatectl set-ntp true').")
    return (summary, f"The peer's certificate chain ({what}: {subject}) does not lead to the CA "
            f"in this side's 'ca' file ({error}), so the peer is not trusted and the handshake "
            "is aborted.",
            "Make 'ca' on this side the CA that issued the peer's certificate (compare 'openssl "
            "x509 -noout -issuer -in PEER.crt' with 'openssl x509 -noout -subject -in ca.crt'), "
            "or issue the peer a certificate from this CA.")


def _x509name(m: re.Match[str]) -> tuple[str, str, str]:
    got, want = m.group(1).strip(), m.group(2).strip()
    return (f"server name check failed: got '{got}', expected '{want}'",
            f"'verify-x509-name {want}' rejected the server's certificate subject '{got}'.",
            "Correct 'verify-x509-name' in the client config to the server certificate's name "
            "(see 'openssl x509 -noout -subject -in server.crt'), or connect to the right "
            "server.")


def _auth_failed(m: re.Match[str]) -> tuple[str, str, str]:
    reason = (m.group(1) or "").strip().strip("'\"")
    detail = f" ({reason})" if reason else ""
    return (f"authentication failed{detail}",
            "The TLS handshake succeeded but the server rejected the username/password (or a "
            "plugin/script rejected the client) and sent AUTH_FAILED; the client exits.",
            "Check the username and password in the 'auth-user-pass' file of the client "
            "config, and the server's auth log for the reason.")


def _resolve(m: re.Match[str]) -> tuple[str, str, str]:
    host = m.group(1)
    return (f"cannot resolve {host}",
            f"The name in 'remote' ({host}) did not resolve, so no packet was sent to the "
            "server.",
            f"Check the spelling of the 'remote' line, test with 'getent ahosts "
            f"{host.rsplit(':', 1)[0]}', fix DNS (/etc/resolv.conf), or use the server's IP "
            "address.")


def _mismatch(m: re.Match[str]) -> tuple[str, str, str]:
    opt = m.group(1)
    return (f"option '{opt}' differs between client and server",
            f"The peers' option strings disagree on '{opt}'. OpenVPN 2.6 only warns; it matters "
            "when it concerns the MTU, compression or the tunnel topology.",
            f"Make '{opt}' the same on both sides (or remove it from both), then restart.")


def _peer_alert(m: re.Match[str]) -> tuple[str, str, str]:
    alert = m.group(1).lower()
    if alert == "certificate revoked":
        return ("the peer rejected this side's certificate as revoked (TLS alert 'certificate "
                "revoked')",
                "The other side checked this side's certificate against its CRL ('crl-verify') "
                "and found it revoked, so it aborted the handshake. A tunnel that was up fails "
                "at its next key renegotiation or reconnect once the CRL lists the "
                "certificate.",
                "Revocation is deliberate: ask the administrator for a new certificate (or, if "
                "it was revoked by mistake, to issue a new CRL without it).")
    return (f"the peer rejected this side's certificate (TLS alert '{alert}')",
            "The other side sent a TLS alert during the handshake: it does not trust this "
            "side's certificate (wrong CA, expired, wrong EKU) or found no common TLS "
            "parameters.",
            "Check the peer's log for its VERIFY ERROR line; make sure this side's 'cert' "
            "is issued by the CA the peer has in its 'ca', is valid now and has the right "
            "extended key usage ('trivpn doctor CONFIG' checks pki.chain/validity/eku).")


def _ccd_exclusive(m: re.Match[str]) -> tuple[str, str, str]:
    cn = m.group(1)
    return (f"the server refused '{cn}': no client-config-dir file (ccd-exclusive)",
            "With 'ccd-exclusive' a client may connect only if the client-config-dir has a "
            f"file named after its certificate's common name ('{cn}'); there is none, so the "
            "server sends AUTH_FAILED, which the client reports like a wrong password "
            "(OpenVPN src/openvpn/ssl_verify.c, verify_final_auth_checks()).",
            f"Create the file '{cn}' in the server's client-config-dir (it may be empty), or "
            "remove 'ccd-exclusive' if every valid certificate may connect.")


def _weak_cert(m: re.Match[str]) -> tuple[str, str, str]:
    which, what = m.group(1), m.group(2)
    cert = "a CA certificate" if which == "ca" else ("the DH parameters" if which == "dh"
                                                   else "this side's own certificate")
    if what == "md too weak":
        return (f"OpenSSL refuses {cert}: its signature digest is too weak ({which} md too "
                "weak)",
                f"{cert[0].upper()}{cert[1:]} (or one in the chain of the 'cert' file) is "
                "signed with MD5 or SHA-1, which the OpenSSL security level in use refuses "
                "(OpenSSL 3 at 'tls-cert-profile legacy', OpenVPN's default, still refuses "
                "SHA-1 for certificate signatures; stricter profiles refuse more). OpenVPN "
                "cannot load the certificate and stops before connecting.",
                "Re-issue the certificate (and, if it is the CA's signature that is weak, the "
                "chain) with SHA-256: 'easyrsa' does by default, or 'openssl x509 -req -sha256 "
                "...'. 'openssl x509 -noout -text -in FILE | grep Signature' shows the digest. "
                "As a stop-gap only, 'tls-cert-profile insecure' lowers the security level.")
    return (f"OpenSSL refuses {cert}: its key is too small ({which} key too small)",
            f"The key of {cert} is shorter than the security level in use accepts (RSA/DH "
            "below 1024 bits at 'tls-cert-profile legacy', OpenVPN's default, which is "
            "OpenSSL security level 1; below 2048 bits at 'preferred', level 2). OpenVPN "
            "cannot load it and stops before connecting (OpenVPN src/openvpn/ssl_openssl.c, "
            "tls_ctx_set_cert_profile()).",
            "Re-issue the key and certificate with RSA 2048 bits or more (or an EC key), or "
            "'dh none' / new 2048-bit DH parameters; 'openssl x509 -noout -text -in FILE | "
            "grep Public-Key' shows the size. As a stop-gap only, 'tls-cert-profile "
            "insecure' lowers the security level.")


def _unknown_option(m: re.Match[str]) -> tuple[str, str, str]:
    where, number, option, version = m.group(1), m.group(2), m.group(3), m.group(4)
    if where == "[PUSH-OPTIONS]":
        return (f"the server pushed an option this client does not know: {option}",
                f"The server's PUSH_REPLY contains '{option}' (pushed option {number}), which "
                f"this OpenVPN ({version}) does not recognise or cannot take with these "
                "parameters: it is too new for this client, platform-specific (a Windows-only "
                "option such as 'block-outside-dns' on Linux or macOS), or malformed.",
                f"On the client, add 'pull-filter ignore \"{option}\"' to the config, or "
                "upgrade the client; on the server, push the option only to the clients that "
                "understand it (a client-config-dir file or a client-connect script).")
    return (f"unknown option '{option}' in {where} line {number}",
            f"OpenVPN {version} does not recognise '{option}' (or its parameters are wrong) "
            f"in {where} line {number}: options removed in 2.6 (for example 'keysize', "
            "'ns-cert-type', 'no-replay', 'ncp-disable'), options of a newer version, or a "
            "typo. OpenVPN refuses to start.",
            f"Fix or delete line {number} of {where} (2.6 replacements: 'remote-cert-tls "
            "server' for 'ns-cert-type server', 'data-ciphers' for 'keysize'/'ncp-disable'); "
            f"for an option only newer versions know, 'ignore-unknown-option {option}' lets "
            "this version start without it.")


def _no_tty(m: re.Match[str]) -> tuple[str, str, str]:
    prompt = m.group(1)
    key = "Private Key" in prompt
    return (f"OpenVPN had to ask '{prompt}' but has no terminal",
            f"OpenVPN needed to ask for '{prompt}' but runs without a terminal (a systemd "
            "service, --daemon, cron or a GUI) and could not ask through systemd either, so "
            "it stopped.",
            ("Give the key's passphrase in a file: 'askpass FILE' (or remove the passphrase "
             "from the key)." if key else
             "Put the username (line 1) and password (line 2) in a file and name it: "
             "'auth-user-pass FILE' (mode 600); or let a management client answer with "
             "'management-query-passwords'."))


PATTERNS: tuple[LogPattern, ...] = (
    LogPattern("log.tls_timeout", "fail",
               _re(r"TLS key negotiation failed to occur within (\d+) seconds"),
               "", "", "", _tls_timeout),
    LogPattern("log.decrypt_error", "warn",
               _re(r"AEAD Decrypt error: (?!bad packet ID)",
                   r"Authenticate/Decrypt packet error: (?!packet HMAC|bad packet ID)"),
               "data packets failed decryption and were dropped",
               "Data-channel packets arrived that do not decrypt/authenticate with the current "
               "keys (OpenVPN src/openvpn/crypto.c, openvpn_decrypt_aead() and "
               "openvpn_decrypt_v1()): packets under a key that was just replaced (a few lines "
               "around a renegotiation are normal), from a peer that restarted, a second "
               "client using the same certificate, or garbage/attack traffic sent to the "
               "tunnel's port.",
               "A few lines around a key renegotiation need nothing. If they keep coming: make "
               "sure no two clients share a certificate (or use 'duplicate-cn' knowingly), "
               "restart the client after a server restart, and check who sends to the port "
               "('tcpdump -ni any udp port PORT')."),
    LogPattern("log.hmac_auth_failed", "fail",
               _re(r"packet HMAC authentication failed",
                   r"incoming packet authentication failed from",
                   r"cannot locate HMAC in incoming packet"),
               "control packets failed tls-auth HMAC authentication",
               "Packets arrived but their tls-auth HMAC did not verify: the two sides use "
               "different tls-auth keys, complementary key-directions are missing (server 0, "
               "client 1), one side has tls-auth and the other not, or one uses tls-crypt. The "
               "packets are dropped silently, so the other side only sees a TLS timeout.",
               "Use the same static key file on both sides with 'tls-auth ta.key 0' on the "
               "server and 'tls-auth ta.key 1' on the client (or 'key-direction' with inline "
               "keys), and make sure both use tls-auth rather than one tls-crypt."),
    LogPattern("log.tls_crypt_unwrap", "fail",
               _re(r"tls-crypt unwrap error", r"tls-crypt unwrapping failed"),
               "control packets failed tls-crypt authentication",
               "Packets arrived but could not be unwrapped with the tls-crypt key: the sides "
               "use different tls-crypt keys, or one side uses tls-auth or no wrapping at all. "
               "They are dropped silently, so the client only reports a TLS timeout.",
               "Copy the server's tls-crypt key file to the client ('tls-crypt ta.key' or an "
               "inline <tls-crypt> block) and use tls-crypt on both sides."),
    LogPattern("log.cert_verify_failed", "fail",
               _re(r"VERIFY ERROR: depth=(\d+), error=([^:]+): (.*)"),
               "", "", "", _verify_error),
    LogPattern("log.tls_certificate_rejected", "fail",
               _re(r"certificate verify failed", r"tls_read_plaintext error",
                   r"TLS object -> incoming plaintext read error", r"Sent fatal SSL alert"),
               "the TLS handshake was aborted during certificate verification",
               "OpenSSL rejected a certificate during the handshake (the lines around it, e.g. "
               "'VERIFY ERROR', say which); the session is torn down and retried.",
               "Read the neighbouring VERIFY lines; usually the 'ca' file does not match the "
               "CA that issued the peer's certificate, or that certificate has expired."),
    LogPattern("log.peer_rejected_cert", "fail",
               _re(r"(?i)(?:tlsv1|sslv3|tlsv13) alert (unknown ca|bad certificate|"
                   r"certificate expired|certificate unknown|unsupported certificate|"
                   r"handshake failure|certificate required|certificate revoked)"),
               "", "", "", _peer_alert),
    LogPattern("log.verify_eku", "fail",
               _re(r"VERIFY EKU ERROR", r"VERIFY KU ERROR",
                   r"Certificate does not have key usage extension",
                   r"Certificate does not have extended key usage extension"),
               "the peer certificate lacks the key usage 'remote-cert-tls' requires",
               "'remote-cert-tls server' (or 'client') requires the peer certificate to carry "
               "a key usage and the serverAuth (clientAuth) extended key usage; this one "
               "does not, so it was rejected. A client certificate presented as the server "
               "(or swapped cert files) causes this too.",
               "Issue the server a proper server certificate ('easyrsa build-server-full NAME' "
               "or 'trivpn pki issue server NAME'); do not remove 'remote-cert-tls', it "
               "prevents other clients from impersonating the server."),
    LogPattern("log.verify_x509name", "fail",
               _re(r"VERIFY X509NAME ERROR: (.*), must be (.*)"), "", "", "", _x509name),
    LogPattern("log.cipher_negotiation", "fail",
               _re(r"No common cipher between server and client",
                   r"negotiated cipher not allowed",
                   r"failed to negotiate cipher with server",
                   r"Data channel cipher negotiation failed"),
               "client and server have no data cipher in common",
               "Since 2.5 the data cipher is negotiated from 'data-ciphers'; the lists of the "
               "two sides do not overlap (often an old 2.4 peer using only 'cipher BF-CBC' or "
               "AES-256-CBC), so the connection is refused.",
               "Make 'data-ciphers' overlap on both sides, e.g. add the old peer's cipher: "
               "'data-ciphers AES-256-GCM:AES-128-GCM:AES-256-CBC', or set "
               "'data-ciphers-fallback AES-256-CBC' for peers that cannot negotiate."),
    LogPattern("log.auth_failed", "fail",
               _re(r"AUTH: Received control message: AUTH_FAILED,?(.*)$",
                   r"SENT CONTROL \[[^\]]*\]: 'AUTH_FAILED,?([^']*)'",
                   r"Auth Username/Password verification failed for peer()"),
               "", "", "", _auth_failed),
    LogPattern("log.resolve_failed", "fail",
               _re(r"Cannot resolve host address: (\S+)"), "", "", "", _resolve),
    LogPattern("log.replay", "warn",
               _re(r"bad packet ID \(may be a replay\)",
                   r"(?i)replay-window backtrack occurred"),
               "packets rejected as replays or reordered beyond the replay window",
               "Data packets arrived with packet IDs the replay protection had already seen or "
               "that were too far out of order. Occasional lines come from network reordering "
               "(Wi-Fi, multipath, load balancers); many point to a real replay or to two "
               "clients sharing one certificate with 'duplicate-cn'.",
               "If it is reordering, widen the window with 'replay-window 512 15' on the "
               "receiving side; make sure no two clients share a certificate."),
    LogPattern("log.mtu", "warn",
               _re(r"packet too large", r"FRAG_IN error", r"FRAG_TEST error",
                   r"EMSGSIZE", r"Message too long",
                   r"'(link-mtu|tun-mtu)' is used inconsistently"),
               "MTU or fragmentation problems",
               "Packets are larger than the path (or the peer's configuration) allows; large "
               "transfers stall while small pings work, or the peers disagree on the MTU.",
               "Lower the packet size: set 'mssfix 1400' (TCP) and, if needed, 'tun-mtu 1400' "
               "on both sides; make 'tun-mtu'/'fragment' identical on client and server."),
    LogPattern("log.option_mismatch", "warn",
               _re(r"WARNING: '([^']+)' is (?:present in (?:local|remote) config but missing "
                   r"in (?:remote|local) config|used inconsistently)"),
               "", "", "", _mismatch),
    LogPattern("log.bad_tcp_length", "fail",
               _re(r"Bad encapsulated packet length from peer"),
               "the TCP peer does not speak OpenVPN's framing",
               "Over TCP every OpenVPN packet starts with a 2-byte length; the peer sent "
               "something else, so the port is served by another program (e.g. a web server), "
               "the server uses UDP, or the wrapping (tls-auth/tls-crypt) differs.",
               "Check that 'remote HOST PORT' and 'proto tcp-client' point at the OpenVPN "
               "server's TCP port ('proto tcp-server' there) and that the wrapping matches."),
    LogPattern("log.keys_out_of_sync", "warn",
               _re(r"TLS keys are out of sync"),
               "data packets for a key the receiver does not have",
               "The sender uses data-channel keys the receiver no longer knows, typically after "
               "the server restarted while the client kept sending; it resolves itself once the "
               "client's ping-restart triggers a new handshake.",
               "Nothing to do if it stops after a restart; push 'explicit-exit-notify 1' / use "
               "'keepalive 10 60' so clients notice a restarted server quickly."),
    LogPattern("log.ping_restart", "warn",
               _re(r"Inactivity timeout \(--ping-restart\)"),
               "the connection went silent and was restarted (ping-restart)",
               "No packet arrived from the peer for the ping-restart interval, so OpenVPN "
               "restarted the connection: the network path dropped, the peer restarted, or a "
               "NAT/firewall mapping expired.",
               "Use 'keepalive 10 60' on the server (it pushes ping settings) so NAT mappings "
               "stay open; check network stability between client and server."),
    LogPattern("log.peer_port_closed", "warn",
               _re(r"write UDPv[46] \[ECONNREFUSED\]"),
               "packets to a peer came back 'port unreachable'",
               "This side sent to a peer's address and port that no longer has a socket "
               "(ICMP port unreachable): the peer restarted and now uses another source port, "
               "or gave up after a failed handshake. It is a consequence; the peer's own log "
               "shows the cause.",
               "Look at the peer's log at the same time (for example its VERIFY or TLS errors) "
               "and fix that; these lines then stop."),
    LogPattern("log.peer_port_closed", "warn", _re(r"read UDPv[46] \[ECONNREFUSED\]"),
               "", "", "", server_only=True),
    LogPattern("log.connection_refused", "fail",
               _re(r"Connection refused"),
               "the server host refused the connection (nothing listening on that port)",
               "The server machine answered that nothing listens on the port (TCP RST or ICMP "
               "port unreachable): OpenVPN is not running there, listens on another port or "
               "protocol, or a firewall rejects the port.",
               "Start the server and check that 'remote HOST PORT' and 'proto' match its "
               "'port'/'proto' ('ss -lunp' or 'ss -ltnp' on the server)."),
    LogPattern("log.no_route", "fail",
               _re(r"No route to host", r"Network is unreachable"),
               "no network route to the server",
               "The client's kernel (or a router, via ICMP) has no route to the server address, "
               "so packets never left or were rejected on the way.",
               "Check the network connection and routes on the client ('ip route get "
               "SERVER_IP'), and that the 'remote' address is correct."),
    LogPattern("log.unroutable_control", "warn",
               _re(r"Unroutable control packet received from"),
               "stray control packets for a session that no longer exists",
               "Control packets arrived for a session OpenVPN had already torn down, usually "
               "the tail of a failed handshake (see the errors before it); harmless by itself.",
               "Fix the error that ended the session (the lines before it); these lines then "
               "stop."),
    LogPattern("log.no_push_reply", "fail",
               _re(r"No reply from server to push requests"),
               "the server never answered the push request",
               "The TLS handshake worked but the server did not send PUSH_REPLY, typically a "
               "server-side client-connect script or plugin that hangs or fails.",
               "Check the server log for the client's connection and any client-connect or "
               "auth script errors."),
    LogPattern("log.bind_failed", "fail",
               _re(r"Socket bind failed on local address .*Address already in use"),
               "the listening port is already in use",
               "Another program (often another OpenVPN instance) holds the port, so this one "
               "cannot start.",
               "Stop the other program ('ss -lunp sport = :PORT') or change 'port'."),
    LogPattern("log.tun_open_failed", "fail",
               _re(r"Cannot open TUN/TAP dev", r"Cannot ioctl TUNSETIFF"),
               "the tun device could not be created",
               "OpenVPN could not create its tunnel interface: /dev/net/tun is missing or the "
               "process lacks CAP_NET_ADMIN (not root, or a container without the device).",
               "Run OpenVPN as root; load the module with 'modprobe tun'; in a container add "
               "'--device /dev/net/tun --cap-add NET_ADMIN'."),
    LogPattern("log.key_mismatch", "fail",
               _re(r"Private key does not match the certificate"),
               "the private key does not belong to the certificate",
               "The 'key' file is not the private key of the 'cert' file, so OpenVPN cannot "
               "start TLS.",
               "Point 'key' and 'cert' at the two halves of the same pair ('trivpn doctor "
               "CONFIG' checks pki.key_match)."),
    # --- live and logs: the lines users paste most ---
    LogPattern("log.weak_certificate", "fail",
               _re(r"\b(ca|ee|dh) (md too weak|key too small)"), "", "", "", _weak_cert),
    LogPattern("log.tls_version_mismatch", "fail",
               _re(r"SSL routines::unsupported protocol", r"(?i)alert protocol version"),
               "the two sides have no TLS version in common",
               "The TLS handshake failed because the TLS versions the two sides allow do not "
               "overlap: 'tls-version-min'/'tls-version-max' exclude each other, or an old "
               "peer speaks only TLS 1.0/1.1, which OpenSSL 3 refuses by default.",
               "Make the ranges overlap: remove 'tls-version-max' (or set it to 1.3 on both "
               "sides) and use 'tls-version-min 1.2' at most; upgrade a peer that only speaks "
               "TLS 1.0/1.1."),
    LogPattern("log.unknown_option", "fail",
               _re(r"Unrecognized option or missing or extra parameter\(s\) in "
                   r"(\S+?):(\d+): (\S+) \(([^)]*)\)"), "", "", "", _unknown_option),
    LogPattern("log.lzo_mismatch", "warn",
               _re(r"Bad LZO decompression header byte"),
               "compression settings differ between client and server",
               "This side expects LZO-framed data packets ('comp-lzo') but the peer sends "
               "packets without that framing (no compression, or 'compress lz4'/'stub-v2'): "
               "every such packet is dropped, so the tunnel is up but carries no traffic "
               "(OpenVPN src/openvpn/lzo.c, lzo_decompress()).",
               "Use the same compression setting on both sides; best remove 'comp-lzo' / "
               "'compress' from both (compression is deprecated and insecure), or push it "
               "from the server ('push \"comp-lzo no\"') so clients follow."),
    LogPattern("log.bad_source_address", "warn",
               _re(r"MULTI: bad source address from client \[([^\]]*)\]"),
               "a client sent packets from an address the server does not route to it",
               "A client sent packets into the tunnel whose source address is neither its VPN "
               "address nor inside an 'iroute' of its client-config-dir file, so the server "
               "drops them (OpenVPN src/openvpn/multi.c, multi_process_incoming_link()): a LAN "
               "behind the client without 'iroute', a client bridging or NATing other traffic, "
               "or a stray IPv6/link-local packet from the client's OS.",
               "If a network behind that client should reach the VPN: add 'iroute NET MASK' to "
               "the client's file in client-config-dir and 'route NET MASK' to the server "
               "config; otherwise the drops are harmless (or NAT that traffic on the client)."),
    LogPattern("log.route_exists", "warn",
               _re(r"RTNETLINK answers: File exists",
                   r"Linux route add command failed because route exists",
                   r"rtnl: generic error \(-17\): File exists"),
               "a route the VPN wanted to add already exists",
               "A pushed or configured route is already in the routing table: the same "
               "route is given twice (in the client config and in the server's push), a "
               "previous run or another VPN left it behind, or the VPN's network overlaps a "
               "local one (home LAN, Docker). A route that differs wins or loses by its "
               "metric, so traffic for that network may not go through the tunnel.",
               "Compare 'ip route' with the pushed routes; renumber one of the overlapping "
               "networks (the VPN pool or the LAN), or filter the route ('pull-filter ignore "
               "\"route NET\"') if the local one is meant to win."),
    LogPattern("log.route_failed", "warn",
               _re(r"ERROR: Linux route add command failed"),
               "a route could not be added",
               "OpenVPN could not add a route (an overlapping network, a gateway that is not "
               "on a connected network, or missing privileges); traffic for it does not use "
               "the tunnel.",
               "Check the lines before it and 'ip route get NET'; fix the route or the "
               "overlapping network."),
    LogPattern("log.no_tty", "fail",
               _re(r"can't ask for '([^']*)'"), "", "", "", _no_tty),
    LogPattern("log.no_credentials", "fail",
               _re(re.escape(LOG_NO_CREDENTIALS)),
               "a client connected without username/password, which this server requires",
               "The server checks a username/password ('auth-user-pass-verify', a plugin or "
               "'management-client-auth') and a client sent none; the server drops it and "
               "the client only sees a TLS timeout or AUTH_FAILED.",
               "Add 'auth-user-pass' (or 'auth-user-pass FILE') to that client's config."),
    LogPattern("log.ccd_exclusive", "fail",
               _re(re.escape(LOG_CCD_EXCLUSIVE) + r" for common name '([^']*)'"),
               "", "", "", _ccd_exclusive),
    LogPattern("log.connection_reset", "warn",
               _re(r"Connection reset, restarting \[(-?\d+)\]"),
               "the TCP connection was closed or reset, and OpenVPN restarts it",
               "Over TCP the peer (or a middlebox) closed or reset the connection: the server "
               "restarted or aborted the TLS handshake (its log says why), or a firewall/DPI "
               "device cuts OpenVPN connections (OpenVPN src/openvpn/forward.c, "
               "read_incoming_link()).",
               "Look at the server's log at the same time; if it shows nothing for this "
               "client, suspect a middlebox ('trivpn doctor CLIENT.conf' probes the port) "
               "and try another port (443)."),
    LogPattern("log.tap_adapters_in_use", "fail",
               _re(r"All (\S+) adapters on this system are currently in use or disabled"),
               "no free TAP/wintun adapter (Windows)",
               "On Windows every adapter of the driver OpenVPN uses is taken (another VPN "
               "connection or another program holds it) or disabled (OpenVPN "
               "src/openvpn/tun.c, tun_open_device()).",
               "Disconnect the other VPN, enable the adapter in the network settings, or add "
               "one ('tapctl create' / the 'Add a new TAP virtual ethernet adapter' shortcut); "
               "'windows-driver' selects the driver."),
    LogPattern("log.connected", "ok",
               _re(r"Initialization Sequence Completed"),
               "OpenVPN completed its start-up (Initialization Sequence Completed)", "", ""),
)


def line_text(raw: str) -> str:
    """The text to match: the line itself, or a trivpn JSON line's string values."""
    stripped = raw.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        try:
            obj = json.loads(stripped)
        except json.JSONDecodeError:
            return stripped
        if isinstance(obj, dict):
            return " ".join(str(v) for v in obj.values() if isinstance(v, str))
    return stripped


_SERVER_MARKERS = re.compile(r"\bMULTI[:_]|SENT CONTROL \[|IFCONFIG POOL|client-instance "
                             r"restarting|link local \(bound\)|peer info: IV_")


def guess_log_role(lines: Iterable[str]) -> Role | None:
    """``server`` when the log shows a multi-client server, ``client`` when it shows a client
    connecting (``link remote: [AF_INET]...``, ``[server] Peer Connection``), else None."""
    client = False
    for raw in lines:
        if _SERVER_MARKERS.search(raw):
            return "server"
        if "link remote: [AF_INET" in raw or "[server] Peer Connection" in raw or (
                "Cannot resolve host address" in raw):
            client = True
    return "client" if client else None


def patterns_for(role: Role | None) -> tuple[LogPattern, ...]:
    """The patterns that apply to a log of ``role`` (server-only ones for a server)."""
    return tuple(p for p in PATTERNS if role == "server" or not p.server_only)


def match_line(text: str, patterns: Sequence[LogPattern] = PATTERNS
               ) -> tuple[LogPattern, re.Match[str]] | None:
    """The first pattern that matches one line's text (see :func:`line_text`), with its
    match; None for a line that matches nothing."""
    for pattern in patterns:
        m = next((m for rx in pattern.regexes if (m := rx.search(text)) is not None), None)
        if m is not None:
            return pattern, m
    return None


def describe(pattern: LogPattern, m: re.Match[str]) -> tuple[str, str, str]:
    """(summary, explanation, fix) of a matched line."""
    if pattern.describe is not None:
        return pattern.describe(m)
    return pattern.summary, pattern.explanation, pattern.fix


@dataclass(slots=True)
class _Hits:
    pattern: LogPattern
    lines: list[int]
    first: str
    match: re.Match[str]


def _clip(text: str) -> str:
    return text if len(text) <= MAX_LINE_CHARS else text[:MAX_LINE_CHARS - 1] + "…"


def scan_lines(lines: Sequence[str], role: Role | None = None) -> list[CheckResult]:
    """One result per known kind of line found, in pattern order; ``log.scan`` ok if none.
    ``role`` defaults to :func:`guess_log_role`."""
    if role is None:
        role = guess_log_role(lines)
    hits: dict[str, _Hits] = {}
    total = len(lines)
    patterns = patterns_for(role)
    for number, raw in enumerate(lines, start=1):
        text = line_text(raw)
        if not text:
            continue
        found = match_line(text, patterns)
        if found is None:
            continue
        pattern, m = found
        if pattern.id in hits:
            hits[pattern.id].lines.append(number)
        else:
            hits[pattern.id] = _Hits(pattern, [number], raw.rstrip("\n"), m)
    results: list[CheckResult] = []
    for pid in dict.fromkeys(p.id for p in PATTERNS):
        h = hits.get(pid)
        if h is None:
            continue
        pattern = next(p for p in PATTERNS if p.id == pid)
        summary, explanation, fix = describe(pattern, h.match)
        count = len(h.lines)
        evidence: dict[str, Any] = {
            "count": count, "lines": h.lines[:MAX_LINE_NUMBERS], "first_line": h.lines[0],
            "example": _clip(h.first),
        }
        if count > MAX_LINE_NUMBERS:
            evidence["lines_truncated"] = True
        tally = f" ({count} line{'s' if count > 1 else ''}, first at line {h.lines[0]})"
        if pattern.status == "ok":
            results.append(ok(pattern.id, summary + tally, **evidence))
        else:
            results.append(problem(pattern.id, pattern.status, summary + tally,
                                   explanation=explanation, fix=fix, **evidence))
    if not results:
        results.append(ok("log.scan", f"no known error lines in {total} lines", lines=total))
    return results


@dataclass(frozen=True, slots=True)
class LogScan:
    role: Role | None
    results: tuple[CheckResult, ...]


def scan_log_file(path: Path) -> LogScan:
    """Read ``path`` (OSError propagates), guess whose log it is, and scan it."""
    with path.open(encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    role = guess_log_role(lines)
    return LogScan(role, tuple(scan_lines(lines, role)))
