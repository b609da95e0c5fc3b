"""``trivpn pki``: create a CA, issue server/client certificates, generate static keys.

Registered by :mod:`trivpn.cli`. Handlers return 0 on success and 1 on a :class:`PkiError`
(message on stderr); argparse itself exits 2 on usage errors.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from trivpn.pki.certs import (
    CERT_KINDS,
    DEFAULT_CA_CN,
    DEFAULT_CA_DAYS,
    DEFAULT_LEAF_DAYS,
    CertKind,
    create_ca,
    issue_cert,
)
from trivpn.pki.errors import AlreadyExistsError, PkiError
from trivpn.pki.keys import KeyType
from trivpn.pki.statickeys import generate_static_key, write_static_key
from trivpn.pki.store import PkiStore, check_entity_name

DEFAULT_DIR = Path("pki")
STATIC_KEY_KINDS = ("tls-crypt", "tls-auth")


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
    issue.set_defaults(handler=_issue)

    genkey = actions.add_parser(
        "genkey", help="generate a tls-crypt or tls-auth key",
        description="Write a new OpenVPN static key file (same format as "
        "'openvpn --genkey secret').",
    )
    genkey.add_argument("kind", choices=STATIC_KEY_KINDS)
    genkey.add_argument("file", metavar="FILE", type=Path)
    genkey.add_argument("--force", action="store_true", help="replace an existing FILE")
    genkey.set_defaults(handler=_genkey)


def _add_key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key-type", choices=("ec", "rsa"), default="ec",
                        help="ec = ECDSA P-256 (default), rsa = RSA (see --rsa-bits)")
    parser.add_argument("--rsa-bits", type=int, choices=(2048, 3072), default=2048,
                        help="RSA modulus size (default 2048)")


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
    store = PkiStore(args.dir)
    try:
        check_entity_name(args.name)
        ca = store.load_ca()
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
    try:
        write_static_key(args.file, generate_static_key(), force=args.force)
    except PkiError as exc:
        return _fail(exc)
    _say(f"wrote {args.kind} key: {args.file} (mode 0600)")
    if args.kind == "tls-crypt":
        _say(f"use: 'tls-crypt {args.file}' on the server and every client")
    else:
        _say(f"use: 'tls-auth {args.file} 0' on the server, 'tls-auth {args.file} 1' on clients")
    return 0


def _fail(exc: PkiError) -> int:
    hint = " (use --force to replace it)" if isinstance(exc, AlreadyExistsError) else ""
    _say(f"trivpn pki: error: {exc}{hint}", sys.stderr)
    return 1


def _say(line: str, stream: TextIO | None = None) -> None:
    # The one place this CLI module writes to the terminal (see trivpn/cli.py).
    print(line, file=stream if stream is not None else sys.stdout)
