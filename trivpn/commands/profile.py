"""``trivpn profile CLIENTNAME --server-config FILE --remote HOST``: export a single-file
``.ovpn`` client profile (see :mod:`trivpn.profile`).

Exit status: 0 on success, 1 when the profile cannot be made (message on stderr), 2 for usage
errors (argparse).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from trivpn.commands.argtypes import port
from trivpn.profile import ProfileError, export_profile, write_profile


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "profile", help="export a single-file .ovpn client profile for a server config",
        description="Write CLIENTNAME.ovpn: a client config matching the server's proto, port, "
                    "dev and ciphers, with the CA, the client certificate and key and the "
                    "tls-crypt/tls-auth key inline. The client certificate is issued with the "
                    "server's PKI if it does not exist yet. Works with openvpn 2.6 and trivpn.")
    parser.add_argument("client", metavar="CLIENTNAME", help="the client's common name")
    parser.add_argument("--server-config", type=Path, required=True, metavar="FILE",
                        help="the server's config file")
    parser.add_argument("--remote", required=True, metavar="HOST",
                        help="the server's public host name or address, as clients reach it")
    parser.add_argument("--port", type=port, default=None, metavar="N",
                        help="the port clients connect to (default: the server's port)")
    parser.add_argument("--pki", type=Path, default=None, metavar="DIR",
                        help="the PKI directory (default: found from the server's ca/cert)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="where to write the profile (default: ./CLIENTNAME.ovpn)")
    parser.add_argument("--force", action="store_true", help="replace an existing FILE")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    out: Path = args.out if args.out is not None else Path(f"{args.client}.ovpn")
    if out.exists() and not args.force:
        print(f"trivpn profile: {out} already exists (use --force to replace it)",
              file=sys.stderr)
        return 1
    try:
        profile = export_profile(args.client, args.server_config, args.remote, port=args.port,
                                 pki_dir=args.pki)
        write_profile(out, profile, force=args.force)
    except ProfileError as exc:
        print(f"trivpn profile: {exc}", file=sys.stderr)
        return 1
    if profile.issued:
        print(f"issued client certificate '{args.client}' in {profile.pki}")
    else:
        print(f"using the existing client certificate '{args.client}' in {profile.pki}")
    print(f"wrote {out} (mode 0600: it contains the client's private key)")
    print(f"use it with: trivpn run {out}   or: openvpn --config {out}")
    return 0
