"""``trivpn pki``: create a CA, issue server/client certificates, generate static keys, and
the certificate lifecycle on trivpn's or easy-rsa's PKI directory: ``list``, ``revoke``,
``renew``, ``crl``, ``expiring`` (see :mod:`trivpn.pki.lifecycle`).

Registered by :mod:`trivpn.cli`. Handlers return 0 on success and 1 on a :class:`PkiError`
(message on stderr); argparse itself exits 2 on usage errors.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

from trivpn.pki.certs import (
    CERT_KINDS,
    DEFAULT_CA_CN,
    DEFAULT_CA_DAYS,
    DEFAULT_LEAF_DAYS,
    CertKind,
    create_ca,
    issue_cert,
)
from trivpn.pki.crl import DEFAULT_CRL_DAYS, REASONS
from trivpn.pki.errors import AlreadyExistsError, PkiError
from trivpn.pki.files import PRIVATE_FILE_MODE, write_file
from trivpn.pki.keys import KeyType, PassphraseError
from trivpn.pki.lifecycle import DEFAULT_OVERLAP_DAYS, EXPIRING_DAYS, Lifecycle, open_pki
from trivpn.pki.statickeys import (
    KeyFileError,
    generate_static_key,
    generate_tls_crypt_v2_client_key,
    generate_tls_crypt_v2_server_key,
    write_auth_token_key,
    write_static_key,
)
from trivpn.pki.store import PkiStore, check_entity_name

DEFAULT_DIR = Path("pki")
STATIC_KEY_KINDS = ("tls-crypt", "tls-auth", "tls-crypt-v2-server", "tls-crypt-v2-client",
                    "auth-token")
T = TypeVar("T")


def register(subparsers: Any) -> None:
    """Add the ``pki`` command to the top-level ``subparsers`` (an argparse sub-parsers
    action)."""
    pki: argparse.ArgumentParser = subparsers.add_parser(
        "pki",
        help="create a CA, certificates and tls-crypt/tls-auth keys",
        description="Create a CA, issue certificates and generate static keys.",
    )
    actions = pki.add_subparsers(dest="pki_command", metavar="ACTION")
    actions.required = True

    init = actions.add_parser(
        "init", help="create a CA in DIR", description="Create a new CA: DIR/ca.crt and "
        "DIR/private/ca.key."
    )
    init.add_argument("dir", metavar="DIR", type=Path)
    init.add_argument("--cn", default=DEFAULT_CA_CN, help=f"CA common name ({DEFAULT_CA_CN!r})")
    _add_key_options(init)
    init.add_argument("--days", type=_positive_int, default=DEFAULT_CA_DAYS,
                      help=f"validity in days (default {DEFAULT_CA_DAYS})")
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(handler=_init)

    issue = actions.add_parser(
        "issue", help="issue a server or client certificate",
        description="Issue DIR/issued/NAME.crt and DIR/private/NAME.key, signed by DIR's CA.",
    )
    issue.add_argument("kind", choices=CERT_KINDS)
    issue.add_argument("name", metavar="NAME", help="common name, also the file name")
    issue.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                       help=f"PKI directory (default ./{DEFAULT_DIR})")
    _add_key_options(issue)
    issue.add_argument("--days", type=_positive_int, default=DEFAULT_LEAF_DAYS,
                       help=f"validity in days (default {DEFAULT_LEAF_DAYS})")
    issue.add_argument("--force", action="store_true", help="replace an existing NAME")
    _add_passin(issue)
    issue.set_defaults(handler=_issue)

    listing = actions.add_parser(
        "list", help="list every certificate and its status",
        description="List the certificates of the PKI (trivpn's or easy-rsa's): name, common "
        "name, serial, role (from the extended key usage), not-after and status: valid, "
        f"expiring (within {EXPIRING_DAYS} days), expired or revoked.")
    _add_dir(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(handler=_list)

    revoke = actions.add_parser(
        "revoke", help="revoke a certificate and write a new CRL",
        description="Mark NAME revoked in index.txt, move its files to revoked/ (as easy-rsa "
        "does) and write a new crl.pem. A server with 'crl-verify' refuses NAME at its next "
        "handshake; to drop a connected client at once use the management command "
        "'kill NAME'.")
    revoke.add_argument("name", metavar="NAME", help="the name (issued/NAME.crt)")
    _add_dir(revoke)
    revoke.add_argument("--reason", choices=tuple(REASONS), default=None,
                        help="revocation reason recorded in index.txt and the CRL")
    _add_crl_days(revoke)
    _add_passin(revoke)
    revoke.set_defaults(handler=_revoke)

    renew = actions.add_parser(
        "renew", help="a new key and certificate for NAME; the old one revoked later",
        description="Issue NAME again with a new key of the same type, the same common name "
        "and role. The old files move to renewed/ (as 'easyrsa renew' does) and the old "
        "certificate is revoked (reason superseded) once the overlap has passed, by the next "
        "'trivpn pki crl' (or revoke/renew). Then re-export the client's profile with "
        "'trivpn profile NAME'.")
    renew.add_argument("name", metavar="NAME")
    _add_dir(renew)
    renew.add_argument("--overlap-days", type=_non_negative_int, default=DEFAULT_OVERLAP_DAYS,
                       help="days both certificates stay valid (default "
                       f"{DEFAULT_OVERLAP_DAYS}; 0 revokes the old one now)")
    renew.add_argument("--days", type=_positive_int, default=DEFAULT_LEAF_DAYS,
                       help=f"validity of the new certificate (default {DEFAULT_LEAF_DAYS})")
    _add_crl_days(renew)
    _add_passin(renew)
    renew.set_defaults(handler=_renew)

    crl = actions.add_parser(
        "crl", help="sign a fresh crl.pem",
        description="Revoke renewed certificates whose overlap ended, then write crl.pem "
        "signed by the CA with a new next-update date. Run it from cron well before the CRL "
        "expires: OpenVPN refuses every client when its crl-verify CRL has expired.")
    _add_dir(crl)
    _add_crl_days(crl)
    _add_passin(crl)
    crl.set_defaults(handler=_crl)

    expiring = actions.add_parser(
        "expiring", help="exit 1 when a certificate, the CA or the CRL expires within N days",
        description="Print what stops working within N days: the CA certificate, the current "
        "certificate of each name (not revoked) and crl.pem's next update. Exit status 1 when "
        "there is something (for cron and monitoring), 0 when not.")
    _add_dir(expiring)
    expiring.add_argument("--days", type=_non_negative_int, default=EXPIRING_DAYS,
                          help=f"look ahead this many days (default {EXPIRING_DAYS})")
    expiring.add_argument("--json", action="store_true", help="print JSON")
    expiring.set_defaults(handler=_expiring)

    genkey = actions.add_parser(
        "genkey", help="generate a tls-crypt, tls-auth, tls-crypt-v2 or auth-token key",
        description="Write a new OpenVPN key file in the format 'openvpn --genkey' writes: "
        "a static key (tls-crypt, tls-auth), a tls-crypt-v2 server key, or a tls-crypt-v2 "
        "client key wrapped by --server-key, or an auth-gen-token secret.",
    )
    genkey.add_argument("kind", choices=STATIC_KEY_KINDS)
    genkey.add_argument("file", metavar="FILE", type=Path)
    genkey.add_argument("--server-key", type=Path, metavar="FILE",
                        help="tls-crypt-v2-client: the server key that wraps it")
    genkey.add_argument("--metadata", metavar="BASE64",
                        help="tls-crypt-v2-client: user metadata (base64) instead of the "
                        "creation time")
    genkey.add_argument("--force", action="store_true", help="replace an existing FILE")
    genkey.set_defaults(handler=_genkey)


def _add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-type", choices=("ec", "rsa"), default="ec",
                        help="ec = ECDSA P-256 (default), rsa = RSA (see --rsa-bits)")
    parser.add_argument("--rsa-bits", type=int, choices=(2048, 3072), default=2048,
                        help="RSA modulus size (default 2048)")


def _add_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR,
                        help=f"PKI directory, trivpn's or easy-rsa's (default ./{DEFAULT_DIR}; "
                        "an easy-rsa working directory holding pki/ works too)")


def _add_crl_days(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--crl-days", type=_positive_int, default=DEFAULT_CRL_DAYS,
                        help="days until the CRL's next update (default "
                        f"{DEFAULT_CRL_DAYS}, as easy-rsa's EASYRSA_CRL_DAYS)")


def _add_passin(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--passin", metavar="SOURCE", default=None,
                        help="passphrase of an encrypted CA key, as openssl/easyrsa take it: "
                        "pass:TEXT, env:VAR, file:PATH or stdin (default: ask on the terminal)")


def _passphrase(spec: str | None) -> bytes | None:
    """The passphrase --passin names (its first line for file: and stdin)."""
    if spec is None:
        return None
    kind, _, rest = spec.partition(":")
    if kind == "pass":
        return rest.encode()
    if kind == "env":
        value = os.environ.get(rest)
        if value is None:
            raise PkiError(f"--passin env:{rest}: the environment variable is not set")
        return value.encode()
    if kind == "file":
        try:
            text = Path(rest).read_text(encoding="utf-8")
        except OSError as exc:
            raise PkiError(f"--passin: cannot read the passphrase file: {exc.strerror}",
                           rest) from None
        return text.splitlines()[0].encode() if text else b""
    if spec == "stdin":
        return sys.stdin.readline().rstrip("\n").encode()
    raise PkiError(f"--passin {spec!r}: expected pass:TEXT, env:VAR, file:PATH or stdin")


def _with_ca(args: argparse.Namespace, action: Callable[[bytes | None], T]) -> T:
    """Run ``action(passphrase)``; an encrypted CA key without --passin is asked for on the
    terminal (never echoed), once."""
    passphrase = _passphrase(args.passin)
    try:
        return action(passphrase)
    except PassphraseError:
        if passphrase is not None or not sys.stdin.isatty():
            raise
    asked = getpass.getpass("CA key passphrase: ").encode()
    return action(asked)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _key_type(args: argparse.Namespace) -> KeyType:
    if args.key_type == "ec":
        return "ec"
    return "rsa3072" if args.rsa_bits == 3072 else "rsa2048"


def _init(args: argparse.Namespace) -> int:
    store = PkiStore(args.dir)
    try:
        ca = create_ca(args.cn, key_type=_key_type(args), days=args.days)
        paths = store.save_ca(ca, force=args.force)
    except PkiError as exc:
        return _fail(exc)
    _say(f"wrote CA certificate: {paths.cert}")
    _say(f"wrote CA private key: {paths.key} (mode 0600, keep it secret)")
    _say(f"next: trivpn pki issue server NAME --dir {args.dir}; "
         f"trivpn pki issue client NAME --dir {args.dir}; "
         "no DH parameters file is needed (ECDHE is used; set 'dh none' on the server)")
    return 0


def _issue(args: argparse.Namespace) -> int:
    kind: CertKind = args.kind
    try:
        check_entity_name(args.name)
        store = open_pki(args.dir) if args.dir.exists() else PkiStore(args.dir)
        ca = _with_ca(args, store.load_ca)
        cred = issue_cert(ca, kind, args.name, key_type=_key_type(args), days=args.days)
        paths = store.save_issued(args.name, cred, force=args.force)
    except PkiError as exc:
        return _fail(exc)
    other = "client" if kind == "server" else "server"
    _say(f"wrote {kind} certificate: {paths.cert}")
    _say(f"wrote {kind} private key: {paths.key} (mode 0600)")
    _say(f"config: ca {store.ca_cert_path} / cert {paths.cert} / key {paths.key}; "
         f"the {other} side checks it with 'remote-cert-tls {kind}'")
    return 0


def _genkey(args: argparse.Namespace) -> int:
    if args.kind.startswith("tls-crypt-v2"):
        return _genkey_v2(args)
    try:
        if args.kind == "auth-token":
            write_auth_token_key(args.file, force=args.force)
        else:
            write_static_key(args.file, generate_static_key(), force=args.force)
    except PkiError as exc:
        return _fail(exc)
    _say(f"wrote {args.kind} key: {args.file} (mode 0600)")
    if args.kind == "auth-token":
        _say(f"use: 'auth-gen-token-secret {args.file}' with 'auth-gen-token' on the server")
    elif args.kind == "tls-crypt":
        _say(f"use: 'tls-crypt {args.file}' on the server and every client")
    else:
        _say(f"use: 'tls-auth {args.file} 0' on the server, 'tls-auth {args.file} 1' on clients")
    return 0


def _genkey_v2(args: argparse.Namespace) -> int:
    try:
        if args.kind == "tls-crypt-v2-server":
            text = generate_tls_crypt_v2_server_key()
        else:
            if args.server_key is None:
                return _fail(PkiError("tls-crypt-v2-client needs --server-key FILE"))
            user = None
            if args.metadata is not None:
                try:
                    user = base64.b64decode(args.metadata, validate=True)
                except binascii.Error:
                    return _fail(PkiError("--metadata is not valid base64"))
            try:
                server_text = args.server_key.read_text()
            except OSError as exc:
                return _fail(PkiError(f"cannot read: {exc.strerror}", str(args.server_key)))
            text = generate_tls_crypt_v2_client_key(server_text, unix_now=int(time.time()),
                                                    user_metadata=user)
        write_file(args.file, text.encode("ascii"), mode=PRIVATE_FILE_MODE,
                   overwrite=args.force)
    except KeyFileError as exc:
        return _fail(PkiError(exc.what, str(args.server_key)))
    except PkiError as exc:
        return _fail(exc)
    _say(f"wrote {args.kind} key: {args.file} (mode 0600)")
    if args.kind == "tls-crypt-v2-server":
        _say(f"use: 'tls-crypt-v2 {args.file}' on the server; make each client's key with "
             f"'trivpn pki genkey tls-crypt-v2-client FILE --server-key {args.file}'")
    else:
        _say(f"use: 'tls-crypt-v2 {args.file}' on that client only")
    return 0


def _date(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%SZ") if when is not None else "-"


def _list(args: argparse.Namespace) -> int:
    try:
        certs = Lifecycle(open_pki(args.dir)).inventory()
    except PkiError as exc:
        return _fail(exc)
    if args.json:
        _say(json.dumps([{
            "name": c.name, "common_name": c.common_name, "serial": c.serial_hex,
            "role": c.role, "not_after": c.not_after.isoformat(), "status": c.status,
            "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
            "reason": c.reason, "current": c.current} for c in certs], indent=2))
        return 0
    rows = [("NAME", "CN", "SERIAL", "ROLE", "NOT AFTER", "STATUS")]
    for c in certs:
        status: str = c.status
        if c.status == "revoked":
            status = f"revoked {_date(c.revoked_at)}" + (f" ({c.reason})" if c.reason else "")
        elif not c.current and c.name is not None:
            status += " (renewed)"
        rows.append((c.name or "-", c.common_name, c.serial_hex, c.role, _date(c.not_after),
                     status))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        _say("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=False)) + "  " + r[5])
    return 0


def _revoke(args: argparse.Namespace) -> int:
    try:
        life = Lifecycle(open_pki(args.dir))
        result = _with_ca(args, lambda p: life.revoke(args.name, args.reason, passphrase=p,
                                                       crl_days=args.crl_days))
    except PkiError as exc:
        return _fail(exc)
    _say(f"revoked {args.name} (serial {result.serial:X}); wrote {result.crl}")
    for serial in result.superseded:
        _say(f"revoked the renewed certificate serial {serial:X} (its overlap ended)")
    _say(f"a server with 'crl-verify {result.crl}' refuses it at its next handshake; to drop "
         f"it now: management command 'kill {args.name}'")
    return 0


def _renew(args: argparse.Namespace) -> int:
    try:
        life = Lifecycle(open_pki(args.dir))
        result = _with_ca(args, lambda p: life.renew(
            args.name, overlap_days=args.overlap_days, days=args.days, passphrase=p,
            crl_days=args.crl_days))
    except PkiError as exc:
        return _fail(exc)
    _say(f"renewed {args.name}: new serial {result.new_serial:X} in {result.cert}")
    if result.revoke_after is None:
        _say(f"revoked the old serial {result.old_serial:X}; wrote {result.crl}")
    else:
        _say(f"the old serial {result.old_serial:X} stays valid until "
             f"{_date(result.revoke_after)}; 'trivpn pki crl' after that revokes it")
    _say(f"next: re-export the profile: trivpn profile {args.name} --server-config FILE "
         "--remote HOST --force")
    return 0


def _crl(args: argparse.Namespace) -> int:
    try:
        life = Lifecycle(open_pki(args.dir))
        result = _with_ca(args, lambda p: life.make_crl(passphrase=p, crl_days=args.crl_days))
    except PkiError as exc:
        return _fail(exc)
    for serial in result.superseded:
        _say(f"revoked the renewed certificate serial {serial:X} (its overlap ended)")
    _say(f"wrote {result.crl}: {result.revoked} revoked, next update "
         f"{_date(result.next_update)}")
    return 0


def _expiring(args: argparse.Namespace) -> int:
    try:
        found = Lifecycle(open_pki(args.dir)).expiring(args.days)
    except PkiError as exc:
        return _fail(exc)
    now = datetime.now(UTC)
    if args.json:
        _say(json.dumps([{"what": x.what, "name": x.name, "expires": x.when.isoformat()}
                         for x in found], indent=2))
    elif not found:
        _say(f"nothing expires within {args.days} days")
    for x in found if not args.json else ():
        left = x.when - now
        state = "EXPIRED" if left.total_seconds() <= 0 else f"in {left.days} days"
        _say(f"{x.what} {x.name}: expires {_date(x.when)} ({state})")
    return 1 if found else 0


def _fail(exc: PkiError) -> int:
    hint = " (use --force to replace it)" if isinstance(exc, AlreadyExistsError) else ""
    if isinstance(exc, PassphraseError):
        hint = " (give the CA key's passphrase with --passin pass:TEXT, env:VAR or file:PATH)"
    _say(f"trivpn pki: error: {exc}{hint}", sys.stderr)
    return 1


def _say(line: str, stream: TextIO | None = None) -> None:
    # The one place this CLI module writes to the terminal (see trivpn/cli.py).
    print(line, file=stream if stream is not None else sys.stdout)
