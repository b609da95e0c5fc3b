"""``config.syntax`` and ``config.files``: does the config parse, is it sound, are its files
there, readable, private where they hold secrets, and well-formed where we can tell offline."""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from trivpn.config import ConfigError, ConfigWarning, FileSource, Options, load_config
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.statickey import parse_static_key

SECRET_DIRECTIVES = frozenset({"key", "tls-auth", "tls-crypt", "auth-user-pass", "secret"})
STATIC_KEY_DIRECTIVES = frozenset({"tls-auth", "tls-crypt"})
MIN_DH_BITS = 2048


def where(options: Options, directive: str) -> str:
    """``/etc/openvpn/client.conf:7`` for the directive's first line, else the config file."""
    loc = options.location(directive)
    if loc is None:
        return str(options.config_path)
    return f"{loc[0]}:{loc[1]}"


def source_where(src: FileSource) -> str:
    return f"{src.config_path}:{src.line}"


# --- config.syntax ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Finding:
    severity: Literal["warn", "fail"]
    where: str
    message: str
    explanation: str
    fix: str

    def line(self) -> str:
        return f"{self.where}: {self.message}"


_MITM = ("Without 'remote-cert-tls server' the client accepts any certificate signed by its CA "
         "as the server, so anyone holding a client certificate from that CA (another user, a "
         "stolen laptop) can impersonate the server (man-in-the-middle).")
_LZO = ("Compression inside the tunnel lets an attacker who can inject traffic learn secrets "
        "from packet sizes (VORACLE), and OpenVPN 2.6 has deprecated 'comp-lzo'.")
_SWEET32 = ("Ciphers with a 64-bit block size such as BF-CBC leak plaintext after a few "
            "gigabytes of traffic (SWEET32) and are disabled by default since OpenVPN 2.6.")


def _classify(w: ConfigWarning, options: Options) -> Finding:
    place = f"{w.path}:{w.line}" if w.line is not None else str(w.path)
    msg = w.message
    if "no server certificate verification" in msg:
        return Finding("warn", place, msg, _MITM,
                       f"Add the line 'remote-cert-tls server' to {options.config_path} (the "
                       "server certificate then needs the serverAuth extended key usage, as "
                       "easy-rsa and 'trivpn pki' issue it).")
    if "comp-lzo" in msg:
        return Finding("warn", place, msg, _LZO,
                       f"Remove 'comp-lzo' at {place} and from the server's config (and its "
                       "pushes) at the same time; use 'compress stub-v2' only while migrating.")
    if "64-bit block size" in msg:
        return Finding("warn", place, msg, _SWEET32,
                       f"At {place} replace the 64-bit cipher with AES-256-GCM, e.g. "
                       "'data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305'.")
    if "topology net30" in msg:
        return Finding("warn", place, msg,
                       "'topology net30' wastes four addresses per client and is deprecated; "
                       "OpenVPN will remove it.",
                       f"Add 'topology subnet' to {options.config_path} (clients get it pushed).")
    return Finding("warn", place, msg,
                   "OpenVPN 2.6 accepts this setting but warns that it is deprecated, weak or "
                   "has no effect.",
                   f"Edit {place}: {msg.rstrip('.')}.")


_DH_PEM = re.compile(r"-----BEGIN DH PARAMETERS-----(.*?)-----END DH PARAMETERS-----", re.S)


def _der_length(data: bytes, pos: int) -> tuple[int, int]:
    """(length, position after the length octets) of the DER element whose length starts at
    ``pos``."""
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    return int.from_bytes(data[pos + 1:pos + 1 + count], "big"), pos + 1 + count


def dh_prime_bits(pem: str) -> int | None:
    """Size of the prime in PEM ``DH PARAMETERS`` (PKCS#3: SEQUENCE { INTEGER p, ... })."""
    m = _DH_PEM.search(pem)
    if m is None:
        return None
    try:
        der = base64.b64decode("".join(m.group(1).split()), validate=True)
        if der[0] != 0x30:
            return None
        _, pos = _der_length(der, 1)
        if der[pos] != 0x02:
            return None
        length, start = _der_length(der, pos + 1)
        prime = int.from_bytes(der[start:start + length], "big")
    except (binascii.Error, IndexError, ValueError):
        return None
    return prime.bit_length() or None


def _dh_bits(src: FileSource) -> int | None:
    """The DH prime's size, or None if the file cannot be read or parsed (config.files and
    the TLS layer report that)."""
    try:
        return dh_prime_bits(src.read_text())
    except ConfigError:
        return None


def _version_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.split("."))
    except ValueError:
        return ()


def extra_findings(o: Options) -> list[Finding]:
    """What the parser accepts silently but a doctor should point out."""
    found: list[Finding] = []
    if isinstance(o.dh, FileSource):
        bits = _dh_bits(o.dh)
        if bits is not None and bits < MIN_DH_BITS:
            found.append(Finding(
                "warn", source_where(o.dh), f"dh parameters {o.dh.describe()} are {bits}-bit",
                f"{bits}-bit Diffie-Hellman parameters can be broken by well-resourced "
                "attackers (Logjam), exposing recorded sessions.",
                f"Replace 'dh' at {source_where(o.dh)} with 'dh none' (ECDHE only, fine for "
                "OpenVPN 2.4+ clients) or with parameters from 'openssl dhparam -out dh.pem "
                "2048'."))
    if (o.user is not None or o.group is not None) and not (o.persist_key and o.persist_tun):
        directive = "user" if o.user is not None else "group"
        missing = [n for n, on in (("persist-key", o.persist_key),
                                   ("persist-tun", o.persist_tun)) if not on]
        found.append(Finding(
            "warn", where(o, directive),
            f"'{directive}' drops privileges but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set",
            "After dropping privileges OpenVPN can no longer re-read the keys or reopen the tun "
            "device, so the first restart (ping-restart, SIGUSR1) fails.",
            f"Add {' and '.join(repr(m) for m in missing)} to {o.config_path}."))
    for push in o.pushes:
        name = push.split()[0] if push.split() else ""
        if name in ("comp-lzo", "compress") and push.strip() not in ("compress stub-v2",
                                                                      "compress stub"):
            found.append(Finding("warn", where(o, "push"), f"pushes '{push}'", _LZO,
                                 f"Remove the line 'push \"{push}\"' from {o.config_path}."))
    expected_peer = "server" if o.role == "client" else "client"
    if o.remote_cert_tls is not None and o.remote_cert_tls != expected_peer:
        found.append(Finding(
            "fail", where(o, "remote-cert-tls"),
            f"'remote-cert-tls {o.remote_cert_tls}' on a {o.role}",
            f"'remote-cert-tls' names the peer's role; a {o.role} with "
            f"'remote-cert-tls {o.remote_cert_tls}' rejects every correctly issued "
            f"{expected_peer} certificate (VERIFY EKU ERROR).",
            f"Change the line at {where(o, 'remote-cert-tls')} to "
            f"'remote-cert-tls {expected_peer}'."))
    if o.tls_version_max is not None:
        lo, hi = _version_tuple(o.tls_version_min.version), _version_tuple(o.tls_version_max)
        if lo and hi and lo > hi and not o.tls_version_min.or_highest:
            found.append(Finding(
                "fail", where(o, "tls-version-max"),
                f"tls-version-min {o.tls_version_min.version} is above tls-version-max "
                f"{o.tls_version_max}",
                "No TLS version satisfies both limits, so every handshake fails.",
                f"Lower 'tls-version-min' or raise 'tls-version-max' in {o.config_path}."))
    return found


def _parse(ctx: DoctorContext) -> Options | ConfigError:
    if ctx.options is not None:
        return ctx.options
    assert ctx.config_path is not None
    try:
        return load_config(ctx.config_path, read_files=False, lenient=True)
    except ConfigError as exc:
        return exc


def _lines_in_error(cid: str, ctx: DoctorContext) -> CheckResult:
    """Every line that failed, with its file and line; the rest of the config was parsed
    without them, and the network checks ran with that."""
    errors = ctx.config_errors
    first = errors[0]
    listed = [str(e) for e in errors]
    places = [e.location_prefix().rstrip(": ") or str(ctx.config_path) for e in errors]
    noun = "line" if len(errors) == 1 else "lines"
    if ctx.options is not None:
        consequence = (f"The doctor left the {noun} out and ran the other checks with the rest "
                       "of the config (remote, port, proto); checks of the PKI and referenced "
                       "files wait until the config parses.")
    else:
        consequence = ("What remains does not make a usable config, so the checks that need "
                       "it were skipped.")
    return problem(
        cid, "fail", f"config does not parse: {len(errors)} {noun} in error: {first}"
        + (" …" if len(errors) > 1 else ""),
        explanation="OpenVPN and trivpn refuse to start with this config (they stop at the "
                    f"first error). {consequence}",
        fix=" ".join(f"Edit {place}: {e.reason.rstrip('.')}."
                     for place, e in zip(places, errors, strict=True)),
        errors=listed,
        file=str(first.path) if first.path is not None else None, line=first.line,
        reason=first.reason)


async def check_syntax(ctx: DoctorContext) -> CheckResult:
    cid = "config.syntax"
    if ctx.options is None and ctx.config_path is None:
        return skip(cid, "no config file given")
    if ctx.config_errors:
        return _lines_in_error(cid, ctx)
    parsed = _parse(ctx)
    if isinstance(parsed, ConfigError):
        exc = parsed
        place = exc.location_prefix().rstrip(": ") or str(ctx.config_path)
        return problem(
            cid, "fail", f"config does not parse: {exc}",
            explanation="OpenVPN and trivpn refuse to start with this config, and the doctor "
                        "cannot check anything that depends on it until it parses.",
            fix=f"Edit {place}: {exc.reason.rstrip('.')}.",
            file=str(exc.path) if exc.path is not None else None, line=exc.line,
            reason=exc.reason)
    o = parsed
    findings = [_classify(w, o) for w in o.warnings] + extra_findings(o)
    evidence: dict[str, Any] = {"config": str(o.config_path), "role": o.role,
                                "mode": o.mode, "proto": o.proto}
    if not findings:
        return ok(cid, "config parses; nothing deprecated, weak or contradictory", **evidence)
    status: Literal["warn", "fail"] = ("fail" if any(f.severity == "fail" for f in findings)
                                       else "warn")
    explanations = list(dict.fromkeys(f.explanation for f in findings))
    fixes = list(dict.fromkeys(f.fix for f in findings))
    noun = "problem" if len(findings) == 1 else "problems"
    return problem(cid, status, f"config parses with {len(findings)} {noun}: "
                   f"{findings[0].message}" + (" …" if len(findings) > 1 else ""),
                   explanation=" ".join(explanations), fix=" ".join(fixes),
                   findings=[f.line() for f in findings], **evidence)


# --- config.files -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FileState:
    directive: str
    where: str
    source: str
    mode: str | None
    problem: str | None
    severity: Literal["ok", "warn", "fail"]

    def as_evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {"directive": self.directive, "where": self.where,
                               "source": self.source}
        if self.mode is not None:
            out["mode"] = self.mode
        if self.problem is not None:
            out["problem"] = self.problem
        return out


def _read(path: Path) -> tuple[str | None, str | None, os.stat_result | None]:
    """(text, problem, stat) for a referenced file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None, "does not exist", None
    except OSError as exc:
        return None, f"cannot be accessed: {exc.strerror}", None
    if stat.S_ISDIR(st.st_mode):
        return None, "is a directory, not a file", st
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot be read: {exc.strerror}", st
    return data.decode("utf-8", errors="surrogateescape"), None, st


def inspect_file(src: FileSource) -> FileState:
    place = source_where(src)
    mode: str | None = None
    if src.inline is not None:
        text: str | None = src.inline
        source = f"inline <{src.directive}> block"
    else:
        assert src.path is not None
        source = str(src.path)
        text, trouble, st = _read(src.path)
        if st is not None:
            mode = f"{stat.S_IMODE(st.st_mode):04o}"
        if trouble is not None:
            return FileState(src.directive, place, source, mode, trouble, "fail")
        assert st is not None
        if src.directive in SECRET_DIRECTIVES and st.st_mode & stat.S_IROTH:
            return FileState(src.directive, place, source, mode,
                             "holds a secret but is readable by every user", "warn")
    assert text is not None
    if src.directive in STATIC_KEY_DIRECTIVES:
        try:
            parse_static_key(text, source)
        except ProtocolError as exc:
            return FileState(src.directive, place, source, mode,
                             f"is not an OpenVPN static key: {exc.what}", "fail")
    if src.directive == "auth-user-pass" and not text.strip():
        return FileState(src.directive, place, source, mode,
                         "is empty (line 1 must be the username, line 2 the password)", "fail")
    return FileState(src.directive, place, source, mode, None, "ok")


def _file_fix(s: FileState) -> str:
    if s.problem is None:
        return ""
    if s.severity == "warn":
        return f"Run 'chmod 600 {s.source}' (the {s.directive} file named at {s.where})."
    if "static key" in s.problem:
        return (f"Replace {s.source} with the server's key file, or generate a pair with "
                f"'openvpn --genkey secret {s.source}' and copy it to both sides "
                f"({s.directive} at {s.where}).")
    if "does not exist" in s.problem or "directory" in s.problem:
        return (f"Fix the path in '{s.directive}' at {s.where} (relative paths are resolved "
                "against the config file's directory) or copy the file there.")
    return (f"Make {s.source} readable by the user running OpenVPN (the {s.directive} file "
            f"named at {s.where}).")


async def check_files(ctx: DoctorContext) -> CheckResult:
    cid = "config.files"
    o = ctx.options
    if o is None:
        return skip(cid, "config did not parse")
    states = [inspect_file(src) for src in o.file_sources()]
    evidence = {"files": [s.as_evidence() for s in states]}
    bad = [s for s in states if s.severity != "ok"]
    if not bad:
        return ok(cid, f"{len(states)} referenced file(s) present and readable", **evidence)
    status: Literal["warn", "fail"] = "fail" if any(s.severity == "fail" for s in bad) else "warn"
    first = bad[0]
    summary = f"{first.directive} file {first.source} {first.problem}"
    if len(bad) > 1:
        summary += f" (and {len(bad) - 1} more)"
    explanations = []
    if any(s.severity == "fail" for s in bad):
        explanations.append("OpenVPN reads these files at start and exits with an error when "
                            "one is missing, unreadable or malformed.")
    if any(s.severity == "warn" for s in bad):
        explanations.append("A private key or static key readable by every local user can be "
                            "copied and used to impersonate this side of the VPN.")
    return problem(cid, status, summary, explanation=" ".join(explanations),
                   fix=" ".join(dict.fromkeys(_file_fix(s) for s in bad)), **evidence)


CHECKS: tuple[Check, ...] = (
    Check("config.syntax", check_syntax),
    Check("config.files", check_files, depends_on=("config.syntax",)),
)
