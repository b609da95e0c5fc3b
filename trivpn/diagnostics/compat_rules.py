"""The compatibility rules behind ``compat.versions``: what OpenVPN 2.4, 2.5 and 2.6 and the
common clients (OpenVPN 3 / OpenVPN Connect, NetworkManager-openvpn, OpenVPN for Android) refuse,
ignore or read differently in a profile.

Every rule names its public source (repository, file, section or function) and its basis:

- ``verified``: OpenVPN 2.6's behaviour, checked against the real 2.6 binary in
  tests/interop/test_compat_claims.py (``openvpn_args`` is what the test adds to a client
  command line, ``openvpn_says`` what 2.6 must print then), or, where it takes a peer to show,
  in the test named by ``verified_in``;
- ``documented``: what an older OpenVPN version does, as its Changes.rst section says;
- ``source``: what a client does, as read in its source file (not run here).

The table is data: :func:`~trivpn.diagnostics.checks_compat.lint` evaluates it, the tests read
it, and docs/doctor.md lists the sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Target = Literal["openvpn-2.4", "openvpn-2.5", "openvpn-2.6", "openvpn3", "nm-openvpn",
                 "android"]
Effect = Literal["refused", "ignored", "different", "renamed", "dropped"]
Basis = Literal["verified", "documented", "source"]
Role = Literal["client", "server"]

TARGETS: dict[Target, str] = {
    "openvpn-2.6": "OpenVPN 2.6",
    "openvpn-2.5": "OpenVPN 2.5",
    "openvpn-2.4": "OpenVPN 2.4",
    "openvpn3": "OpenVPN 3 (OpenVPN Connect)",
    "nm-openvpn": "NetworkManager-openvpn",
    "android": "OpenVPN for Android",
}
# Only these are warnings: OpenVPN 2.6 (what trivpn speaks) refusing, ignoring or reading a
# line differently. Everything else is a note for whoever hands the profile to other software.
WARN_TARGET: Target = "openvpn-2.6"
WARN_EFFECTS: frozenset[Effect] = frozenset({"refused", "ignored", "different"})
ANY = "*"  # a rule for every directive not in its ``except_``


@dataclass(frozen=True, slots=True)
class Source:
    repo: str
    path: str
    where: str

    def cite(self) -> str:
        return f"{self.repo} {self.path}, {self.where}"


@dataclass(frozen=True, slots=True)
class Rule:
    """One thing a target does with a directive.

    ``says``/``fix`` may use ``{name}`` (the directive), ``{arg}`` (its arguments) and
    ``{ciphers}`` (the data-ciphers in effect). ``args``: a regular expression searched in the
    arguments joined by spaces (case-insensitive). ``when``: a named condition over the whole
    profile (see checks_compat.CONDITIONS). A rule with ``directives == (ANY,)`` matches every
    directive not listed in ``except_``."""

    id: str
    target: Target
    directives: tuple[str, ...]
    effect: Effect
    says: str
    fix: str
    source: Source
    basis: Basis
    args: str | None = None
    when: str | None = None
    roles: tuple[Role, ...] = ("client", "server")
    except_: frozenset[str] = frozenset()
    openvpn_args: tuple[str, ...] = ()
    openvpn_says: str = ""
    # a 2.6 claim that needs a peer to show: the test (file::function) that checks it
    verified_in: str = ""
    severity: Literal["warn", "note"] | None = None  # None: from target and effect


def _changes(section: str) -> Source:
    return Source("OpenVPN/openvpn", "Changes.rst", section)


_OV3 = "OpenVPN/openvpn3"
_OV3_FILE = "openvpn/client/cliopt.hpp"
_NM = "GNOME/NetworkManager-openvpn"
_NM_FILE = "properties/import-export.c"
_ICS = "schwabe/ics-openvpn"
_ICS_FILE = "main/src/main/java/de/blinkt/openvpn/core/ConfigParser.java"

# Introduced in 2.5 (Changes.rst, "Overview of changes in 2.5"): unknown to 2.4.
NEW_IN_25 = ("allow-compression", "bind-dev", "block-ipv6", "data-ciphers",
             "data-ciphers-fallback", "tls-crypt-v2")
# Introduced in 2.6 (Changes.rst, "Overview of changes in 2.6"): unknown to 2.4 and 2.5.
NEW_IN_26 = ("compat-mode", "connect-freq-initial", "client-crresponse", "max-packet-size",
             "peer-fingerprint", "providers", "session-timeout", "tun-mtu-max")

# What NetworkManager-openvpn's importer reads (do_import(): one branch per option); it skips
# every other line without a word. Harmless ones (logging, NM's own process handling) are left
# out of the notes.
NM_IMPORTED = frozenset({
    "allow-compression", "allow-pull-fqdn", "auth", "auth-user-pass", "ca", "cert", "cipher",
    "client", "comp-lzo", "compress", "connect-timeout", "crl-verify", "data-ciphers",
    "data-ciphers-fallback", "dev", "dev-type", "extra-certs", "float", "fragment",
    "http-proxy", "http-proxy-retry", "ifconfig", "keepalive", "key", "key-direction",
    "keysize", "max-routes", "mssfix", "mtu-disc", "ns-cert-type", "ping", "ping-exit",
    "ping-restart", "pkcs12", "port", "proto", "push-peer-info", "remote", "remote-cert-tls",
    "remote-random", "remote-random-hostname", "reneg-sec", "route", "rport", "secret",
    "server-poll-timeout", "socks-proxy", "socks-proxy-retry", "tls-auth", "tls-cipher",
    "tls-client", "tls-crypt", "tls-crypt-v2", "tls-remote", "tls-version-max",
    "tls-version-min", "tun-ipv6", "tun-mtu", "verify-x509-name"})
NM_HARMLESS = frozenset({"auth-nocache", "mute", "mute-replay-warnings", "nobind",
                         "persist-key", "persist-tun", "resolv-retry", "verb", "pull"})
# Inline <blocks> NetworkManager's importer accepts; any other is an import error.
NM_BLOBS = ("ca", "cert", "key", "pkcs12", "extra-certs", "crl-verify", "tls-crypt",
            "tls-crypt-v2", "tls-auth", "secret")

RULES: tuple[Rule, ...] = (
    # ------------------------------------------------------------------ OpenVPN 2.6 (verified)
    Rule("v26.keysize", "openvpn-2.6", ("keysize",), "refused",
         "OpenVPN 2.6 stops at this line: --keysize was removed in 2.6",
         "Delete the 'keysize' line: the cipher determines the key size.",
         _changes("Overview of changes in 2.6, '--keysize has been removed'"), "verified",
         openvpn_args=("--keysize", "256"),
         openvpn_says="Unrecognized option or missing or extra parameter(s) in [CMD-LINE]:1: "
                      "keysize"),
    Rule("v26.key_method", "openvpn-2.6", ("key-method",), "refused",
         "OpenVPN 2.6 stops at this line: key method 2 is the only one and the option is gone",
         "Delete the 'key-method' line.",
         _changes("Overview of changes in 2.5, '--key-method 1 has been removed'"), "verified",
         openvpn_args=("--key-method", "2"),
         openvpn_says="Unrecognized option or missing or extra parameter(s) in [CMD-LINE]:1: "
                      "key-method"),
    Rule("v26.ncp_disable", "openvpn-2.6", ("ncp-disable",), "refused",
         "OpenVPN 2.6 stops at this line: --ncp-disable was removed in 2.6",
         "Delete 'ncp-disable'; to talk to a peer that cannot negotiate, put its cipher in "
         "'data-ciphers-fallback'.",
         _changes("Overview of changes in 2.6, '``ncp-disable`` has been removed'"), "verified",
         openvpn_args=("--ncp-disable",),
         openvpn_says="Unrecognized option or missing or extra parameter(s) in [CMD-LINE]:1: "
                      "ncp-disable"),
    Rule("v26.cipher_ignored", "openvpn-2.6", ("cipher",), "ignored",
         "OpenVPN 2.6 ignores 'cipher {arg}' for the data channel: it is not in data-ciphers "
         "({ciphers}) and 2.6 no longer adds it there ('DEPRECATED OPTION: --cipher set to "
         "... OpenVPN ignores --cipher for cipher negotiations'); the cipher actually used is "
         "negotiated from data-ciphers",
         "Remove 'cipher {arg}' and list the wanted ciphers in 'data-ciphers' (e.g. "
         "'data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305'); only for a peer that "
         "cannot negotiate (OpenVPN 2.3, or 2.4 with ncp-disable) add 'data-ciphers-fallback "
         "{arg}'.",
         _changes("Overview of changes in 2.6, '--cipher argument is no longer appended to "
                  "--data-ciphers'"), "verified", when="cipher_not_negotiated",
         openvpn_args=("--cipher", "AES-128-CBC"),
         openvpn_says="OpenVPN ignores --cipher for cipher negotiations"),
    Rule("v26.compression_receive_only", "openvpn-2.6", ("comp-lzo", "compress"),
         "different",
         "OpenVPN 2.6 only decompresses what it receives: it sends packets uncompressed unless "
         "'allow-compression yes' is set ('WARNING: Compression for receiving enabled ... Sent "
         "packets are not compressed unless \"allow-compression yes\" is also set')",
         "Remove compression on both sides together (a server can push 'compress stub-v2' or "
         "'comp-lzo no' to old clients while migrating); 'allow-compression yes' restores "
         "compression but exposes the tunnel to VORACLE-style attacks.",
         _changes("Overview of changes in 2.5, User-visible Changes ('--compress' ... will not "
                  "use compression outgoing) and 2.6 'Compression no longer enabled by "
                  "default'"), "verified", when="compression_without_allow",
         openvpn_args=("--compress", "lz4-v2"),
         openvpn_says="Sent packets are not compressed unless \"allow-compression yes\" is "
                      "also set"),
    Rule("v26.ncp_ciphers_renamed", "openvpn-2.6", ("ncp-ciphers",), "renamed",
         "OpenVPN 2.6 reads 'ncp-ciphers' as 'data-ciphers' (renamed in 2.5)",
         "Rename it to 'data-ciphers' unless the profile must still load on OpenVPN 2.4.",
         _changes("Overview of changes in 2.5, 'Improved Data channel cipher negotiation'"),
         "verified", openvpn_args=("--ncp-ciphers", "AES-256-GCM"),
         openvpn_says="Treating option '--ncp-ciphers' as  '--data-ciphers' (renamed in "
                      "OpenVPN 2.5)"),
    Rule("v26.bf_cbc", "openvpn-2.6", ("data-ciphers", "ncp-ciphers"), "refused",
         "OpenVPN 2.6 built on OpenSSL 3 without the legacy provider stops: 'Unsupported cipher "
         "in --data-ciphers: BF-CBC'",
         "Remove BF-CBC (a 64-bit block cipher, see SWEET32) from '{name}', or mark it "
         "optional as '?BF-CBC'; if a peer really needs it, add 'providers legacy default'.",
         _changes("Overview of changes in 2.6, 'Common errors with OpenSSL 3.0 and OpenVPN "
                  "2.6'"), "verified", args=r"(^|:)BF-CBC(:|$)",
         openvpn_args=("--data-ciphers", "AES-256-GCM:BF-CBC"),
         openvpn_says="Unsupported cipher in --data-ciphers: BF-CBC"),
    Rule("v26.tls_cipher_tls12_only", "openvpn-2.6", ("tls-cipher",), "different",
         "OpenVPN 2.6 applies 'tls-cipher' to TLS 1.2 and older only: with TLS 1.3, which it "
         "negotiates whenever both sides support it, 'tls-ciphersuites' chooses the suite and "
         "this line restricts nothing",
         "To restrict TLS 1.3 suites, use 'tls-ciphersuites'; 'tls-cipher' still applies to "
         "TLS 1.2 peers.",
         _changes("Overview of changes in 2.5, 'TLS 1.3 support' (--tls-ciphersuites)"),
         "verified", when="tls_1_3_possible", severity="note",
         verified_in="tests/diagnostics/test_scenarios_compat.py::"
                     "test_openvpn_2_6_applies_tls_cipher_to_tls_1_2_only"),
    # ------------------------------------------------------------------ OpenVPN 2.5 (documented)
    *(Rule(f"v25.new_in_26.{name}", "openvpn-2.5", (name,), "refused",
           "OpenVPN 2.5 does not know '{name}' (introduced in 2.6) and refuses the profile",
           "If the profile must also load on 2.5, write 'setenv opt {name} {arg}' (older "
           "versions then skip the line with a warning).",
           _changes("Overview of changes in 2.6, New features"), "documented")
      for name in NEW_IN_26),
    Rule("v25.optional_cipher", "openvpn-2.5", ("data-ciphers",), "refused",
         "OpenVPN 2.5 does not know the '?' prefix for optional ciphers (introduced in 2.6)",
         "Drop the '?' if the profile must load on 2.5 and the cipher exists there.",
         _changes("Overview of changes in 2.6, 'Optional ciphers in --data-ciphers'"),
         "documented", args=r"\?"),
    Rule("v25.cipher_appended", "openvpn-2.5", ("cipher",), "different",
         "OpenVPN 2.5 adds 'cipher {arg}' to data-ciphers and may negotiate it; 2.6 does not",
         "List the cipher in 'data-ciphers' if it should be negotiated by every version.",
         _changes("Overview of changes in 2.6, '--cipher argument is no longer appended to "
                  "--data-ciphers'"), "documented", when="cipher_not_negotiated"),
    # ------------------------------------------------------------------ OpenVPN 2.4 (documented)
    *(Rule(f"v24.new_in_25.{name}", "openvpn-2.4", (name,), "refused",
           "OpenVPN 2.4 does not know '{name}' (introduced in 2.5) and refuses the profile",
           "If the profile must also load on 2.4, write 'setenv opt {name} {arg}'"
           + (" and add 'ncp-ciphers {arg}' for 2.4" if name == "data-ciphers" else "") + ".",
           _changes("Overview of changes in 2.5, New features"), "documented")
      for name in NEW_IN_25),
    *(Rule(f"v24.new_in_26.{name}", "openvpn-2.4", (name,), "refused",
           "OpenVPN 2.4 does not know '{name}' (introduced in 2.6) and refuses the profile",
           "If the profile must also load on 2.4, write 'setenv opt {name} {arg}'.",
           _changes("Overview of changes in 2.6, New features"), "documented")
      for name in NEW_IN_26),
    Rule("v24.chacha", "openvpn-2.4", ("data-ciphers", "ncp-ciphers"), "different",
         "OpenVPN 2.4 has no CHACHA20-POLY1305 data cipher (added in 2.5): a 2.4 peer can only "
         "use the other ciphers listed",
         "Keep an AES-GCM cipher in '{name}' for 2.4 peers.",
         _changes("Overview of changes in 2.5, 'ChaCha20-Poly1305 cipher support'"),
         "documented", args=r"CHACHA20-POLY1305"),
    Rule("v24.bf_cbc_default", "openvpn-2.4", (), "different",
         "A peer that cannot negotiate (OpenVPN 2.3, or 2.4 with 'ncp-disable') uses its "
         "default cipher BF-CBC; since 2.5 there is no BF-CBC default, so this profile cannot "
         "talk to such a peer (2.6: 'failed to negotiate cipher with server', or the server "
         "answers 'AUTH_FAILED,Data channel cipher negotiation failed (no shared cipher)')",
         "Only if such a peer must be reached: 'data-ciphers-fallback BF-CBC' (or the peer's "
         "cipher) — better, upgrade the peer.",
         _changes("Overview of changes in 2.5, 'Removal of BF-CBC support in default "
                  "configuration', and 2.6, 'Connecting to a OpenVPN 2.3.x server'"),
         "documented", when="no_fallback_cipher"),
    Rule("v24.compression_both_ways", "openvpn-2.4", ("comp-lzo", "compress"), "different",
         "OpenVPN 2.4 compresses what it sends as well; 2.5 and 2.6 only decompress unless "
         "'allow-compression yes'",
         "Remove compression on both sides together.",
         _changes("Overview of changes in 2.5, User-visible Changes ('--compress' ... will not "
                  "use compression outgoing)"), "documented", when="compression_without_allow"),
    # ------------------------------------------------------------- OpenVPN 3 / Connect (source)
    Rule("ov3.tap", "openvpn3", ("dev", "dev-type"), "refused",
         "OpenVPN 3 refuses layer-2 profiles: 'OSI layer 2 tunnels are not currently "
         "supported'",
         "Use 'dev tun' (routed) if the profile is meant for OpenVPN Connect.",
         Source(_OV3, _OV3_FILE, "ClientOptions constructor, Error::TAP_NOT_SUPPORTED"),
         "source", args=r"^tap", roles=("client",)),
    Rule("ov3.fragment", "openvpn3", ("fragment",), "refused",
         "OpenVPN 3 refuses it: \"sorry, 'fragment' directive is not supported, nor is "
         "connecting to a server that uses 'fragment' directive\"",
         "Use 'mssfix' (and a smaller 'tun-mtu') instead of 'fragment' on both sides.",
         Source(_OV3, _OV3_FILE, "check_for_incompatible_options()"), "source",
         roles=("client",)),
    Rule("ov3.secret", "openvpn3", ("secret",), "refused",
         "OpenVPN 3 has no static-key mode: 'static key encryption mode (non-SSL/TLS) is not "
         "supported'",
         "Move to TLS mode (certificates or 'peer-fingerprint').",
         Source(_OV3, _OV3_FILE, "check_for_incompatible_options()"), "source",
         roles=("client",)),
    Rule("ov3.not_implemented", "openvpn3",
         ("askpass", "capath", "cd", "chroot", "client-nat", "daemon", "errors-to-stderr",
          "lladdr", "log", "log-append", "management", "ping-timer-rem", "single-session",
          "socks-proxy", "status", "status-version", "syslog", "tls-server", "verify-hash",
          "writepid", "x509-username-field"), "refused",
         "OpenVPN 3 does not implement '{name}' and refuses the profile",
         "Remove '{name}' from the profile given to OpenVPN Connect.",
         Source(_OV3, _OV3_FILE, "settings_feature_not_implemented_fatal"), "source",
         roles=("client",)),
    Rule("ov3.removed", "openvpn3",
         ("compat-names", "mtu-dynamic", "ncp-disable", "no-iv", "no-name-remapping",
          "no-replay"), "refused",
         "OpenVPN 3 refuses the removed option '{name}'",
         "Remove '{name}'.",
         Source(_OV3, _OV3_FILE, "settings_removedOptions"), "source", roles=("client",)),
    Rule("ov3.push_only", "openvpn3",
         ("auth-token", "auth-token-user", "echo", "ifconfig", "ifconfig-ipv6",
          "key-derivation", "peer-id", "ping", "ping-exit", "ping-restart", "protocol-flags",
          "route-gateway", "topology"), "refused",
         "OpenVPN 3 accepts '{name}' only when the server pushes it and refuses it in a "
         "profile",
         "Remove '{name}' from the client profile (the server pushes it; 'keepalive' is "
         "ignored rather than refused).",
         Source(_OV3, _OV3_FILE, "settings_pushonlyoptions"), "source", roles=("client",)),
    Rule("ov3.scripts", "openvpn3",
         ("down", "down-pre", "ipchange", "learn-address", "plugin", "route-noexec",
          "route-pre-down", "route-up", "tls-verify", "up", "up-delay", "x509-track"),
         "ignored",
         "OpenVPN 3 runs no scripts or plugins: '{name}' is ignored",
         "Do what the script did another way (the client's DNS handling, routes pushed by "
         "the server).",
         Source(_OV3, _OV3_FILE, "settings_script_plugin_feature"), "source",
         roles=("client",)),
    Rule("ov3.ignored", "openvpn3",
         ("allow-compression", "connect-retry", "connect-retry-max", "connect-timeout",
          "data-ciphers", "data-ciphers-fallback", "explicit-exit-notify", "keepalive",
          "ncp-ciphers", "tls-version-max"), "ignored",
         "OpenVPN 3 ignores '{name}' in a profile ('Unsupported option (ignored)'; it uses "
         "its own cipher list and timers)",
         "Set it on the server (pushed) where it matters.",
         Source(_OV3, _OV3_FILE, "settings_ignoreWithWarning"), "source", roles=("client",)),
    Rule("ov3.not_implemented_warn", "openvpn3",
         ("bind", "local", "lport", "mtu-disc", "mtu-test", "shaper"), "ignored",
         "OpenVPN 3 ignores '{name}' ('Feature not implemented (option ignored)')",
         "Nothing to do unless the feature is needed.",
         Source(_OV3, _OV3_FILE, "settings_feature_not_implemented_warn"), "source",
         roles=("client",)),
    # ------------------------------------------------------- NetworkManager-openvpn (source)
    Rule("nm.dropped", "nm-openvpn", (ANY,), "dropped",
         "NetworkManager's importer skips '{name}' without a word: the imported connection "
         "does not have it",
         "After 'nmcli connection import type openvpn file ...', set the equivalent in the "
         "connection's settings (e.g. routes, DNS, 'never-default') or run openvpn directly.",
         Source(_NM, _NM_FILE, "do_import() ('currently we ignore any unknown options')"),
         "source", roles=("client",), except_=NM_IMPORTED | NM_HARMLESS | set(NM_BLOBS)),
    Rule("nm.blob", "nm-openvpn", (ANY,), "refused",
         "NetworkManager's importer stops at the inline block <{name}>: 'unsupported "
         "blob/xml element'",
         "Move the <{name}> block's content to a file, or write the profile without it for "
         "NetworkManager.",
         Source(_NM, _NM_FILE, "do_import(), inline blob elements"), "source",
         when="inline_block", roles=("client",), except_=frozenset(NM_BLOBS)),
    Rule("nm.compress_stub", "nm-openvpn", ("compress",), "refused",
         "NetworkManager's importer stops: 'unsupported compress argument' (it knows only "
         "'compress', 'compress lzo', 'lz4' and 'lz4-v2')",
         "For NetworkManager, drop the line (no compression) instead of 'compress {arg}'.",
         Source(_NM, _NM_FILE, "do_import(), the 'compress' branch"), "source",
         args=r"^(stub|stub-v2|migrate)$", roles=("client",)),
    # ----------------------------------------------------------- OpenVPN for Android (source)
    Rule("android.tap", "android", ("dev", "dev-type"), "refused",
         "OpenVPN for Android refuses it: 'Sorry. Only tun mode is supported.'",
         "Use 'dev tun' for Android clients (Android's VpnService has no layer 2).",
         Source(_ICS, _ICS_FILE, "ConfigParser.convertProfile()"), "source", args=r"^tap",
         roles=("client",)),
    Rule("android.unsupported", "android", ("config", "tls-server"), "refused",
         "OpenVPN for Android refuses the profile: 'Unsupported Option {name} encountered in "
         "config file. Aborting'",
         "Inline the included file, or remove '{name}'.",
         Source(_ICS, _ICS_FILE, "ConfigParser.unsupportedOptions"), "source",
         roles=("client",)),
    Rule("android.ignored", "android",
         ("auth-nocache", "down", "ipchange", "management", "plugin", "route-metric",
          "route-pre-down", "route-up", "status", "up"), "dropped",
         "OpenVPN for Android drops '{name}' on import",
         "Do what it did another way on Android (the app's own settings).",
         Source(_ICS, _ICS_FILE, "ConfigParser.ignoreOptions"), "source", roles=("client",)),
    Rule("android.comp_lzo_no", "android", ("comp-lzo",), "different",
         "OpenVPN for Android turns every 'comp-lzo' line, 'comp-lzo no' included, into its "
         "LZO switch and writes plain 'comp-lzo' (adaptive LZO) into the config it runs",
         "Use 'compress stub-v2' (or no compression line) rather than 'comp-lzo no'.",
         Source(_ICS, _ICS_FILE, "ConfigParser.convertProfile() (mUseLzo) and "
                "main/src/main/java/de/blinkt/openvpn/VpnProfile.java"), "source",
         args=r"^no$", roles=("client",)),
)
