"""Per-client configuration files (``client-config-dir``), parsed into a frozen
:class:`ClientConfig`, and the server's pure per-client decisions taken from it.

A client-config-dir file is read with the same reader as a config file (quoting, inline blocks,
``config FILE`` includes, line limits; errors name the file and line). Only the directives
OpenVPN allows there for a client instance (OpenVPN src/openvpn/options.c, ``OPT_P_INSTANCE``
and ``OPT_P_PUSH``; src/openvpn/multi.c, ``multi_client_connect_source_ccd()``) are accepted:
``ifconfig-push``, ``iroute``, ``push``, ``push-reset``, ``push-remove``, ``disable``,
``config``, the IPv6 ``ifconfig-ipv6-push`` / ``iroute-ipv6`` and ``vlan-pvid``.

The file of a client is ``DIR/<common name>`` with the name made safe as OpenVPN does
(src/openvpn/platform.c, ``platform_gen_path()``): every byte that is not printable ASCII and
every ``/`` becomes ``_``, and the names ``.`` and ``..`` have no file; without it,
``DIR/DEFAULT``. See docs/server-ccd.md.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from trivpn.config import values as v
from trivpn.config.errors import ConfigError
from trivpn.config.reader import Directive, read_config, read_config_text

CCD_DEFAULT = "DEFAULT"
HOST_MASK = ipaddress.IPv4Address("255.255.255.255")


@dataclass(frozen=True, slots=True)
class IfconfigPush:
    """``ifconfig-push LOCAL REMOTE_OR_NETMASK [ALIAS]``: the client's fixed address; the
    second address is its peer (net30/p2p) or the netmask (subnet, tap). ``alias``, when
    given, is what the client is told instead of ``local`` (OpenVPN's
    ``push_ifconfig_local_alias``); the server still routes ``local`` to it."""

    local: ipaddress.IPv4Address
    remote_netmask: ipaddress.IPv4Address
    alias: ipaddress.IPv4Address | None = None
    line: int = 0

    def pushed(self) -> str:
        shown = self.alias if self.alias is not None else self.local
        return f"ifconfig {shown} {self.remote_netmask}"


@dataclass(frozen=True, slots=True)
class IfconfigIpv6Push:
    """``ifconfig-ipv6-push ADDRESS[/BITS] [REMOTE]``: the client's fixed IPv6 address. BITS
    defaults to 64 and REMOTE to the server's own tunnel IPv6 address, as OpenVPN's options.c
    (``add_option()``, ``get_ipv6_addr()``) reads it."""

    local: ipaddress.IPv6Address
    bits: int
    remote: ipaddress.IPv6Address | None = None
    line: int = 0

    def pushed(self, server: ipaddress.IPv6Address) -> str:
        """The pushed option (push.c ``prepare_push_reply()``); ``server`` is the remote when
        the file names none."""
        remote = self.remote if self.remote is not None else server
        return f"ifconfig-ipv6 {self.local}/{self.bits} {remote}"


PushEditKind = Literal["push", "push-reset", "push-remove"]


@dataclass(frozen=True, slots=True)
class PushEdit:
    """One change to the client's push list, in file order."""

    kind: PushEditKind
    text: str = ""


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What one client-config-dir file says about its client."""

    path: Path
    ifconfig_push: IfconfigPush | None = None
    ifconfig_ipv6_push: IfconfigIpv6Push | None = None
    iroutes: tuple[ipaddress.IPv4Network, ...] = ()
    iroutes_ipv6: tuple[ipaddress.IPv6Network, ...] = ()
    push_edits: tuple[PushEdit, ...] = ()
    disable: bool = False
    # ``push-remove ifconfig-ipv6``: no ``ifconfig-ipv6`` is pushed (pool or fixed) unless an
    # ``ifconfig-ipv6-push`` follows it (OpenVPN's push.c ``push_remove_option()`` and
    # options.c ``push_ifconfig_ipv6_blocked``)
    ifconfig_ipv6_blocked: bool = False
    vlan_pvid: int | None = None  # vlan-pvid N: the client's VLAN (server with vlan-tagging)


CCD_ONLY = ("ifconfig-push", "ifconfig-ipv6-push", "iroute", "iroute-ipv6", "push-reset",
            "push-remove", "disable")
"""Directives OpenVPN accepts only for a client instance (``OPT_P_INSTANCE``): a main config
that uses them is refused, by OpenVPN too."""


def ccd_file_name(common_name: str) -> str | None:
    """The file name OpenVPN looks for in client-config-dir for ``common_name``, or None when
    the name cannot be a file name (``.``, ``..``)."""
    raw = common_name.encode("utf-8", errors="surrogateescape")
    safe = "".join(chr(b) if 0x20 <= b < 0x7F and b != 0x2F else "_" for b in raw)
    if safe in ("", ".", ".."):
        return None
    return safe


# --- parsing -----------------------------------------------------------------------------------

_Handler = Callable[[ClientConfig, Directive], ClientConfig]


def _ifconfig_push(c: ClientConfig, d: Directive) -> ClientConfig:
    local, other = v.ipv4(d, 0), v.ipv4(d, 1)
    if int(local) == 0 or int(other) == 0:
        raise v.fail(d, "cannot parse 'ifconfig-push' addresses (0.0.0.0 is not an address)")
    alias = v.ipv4(d, 2) if len(d.args) == 3 else None
    return replace(c, ifconfig_push=IfconfigPush(local, other, alias, d.line))


def _ipv6_prefix(text: str) -> tuple[ipaddress.IPv6Address, int]:
    """``ADDRESS[/BITS]`` with OpenVPN's default of /64 (socket.c ``get_addr_generic()``);
    ValueError when it is not one."""
    address, slash, bits = text.partition("/")
    if slash and not (bits.isdigit() and int(bits) <= 128):
        raise ValueError(text)
    return ipaddress.IPv6Address(address), int(bits) if slash else 64


def _ifconfig_ipv6_push(c: ClientConfig, d: Directive) -> ClientConfig:
    try:
        local, bits = _ipv6_prefix(d.args[0])
        remote = ipaddress.IPv6Address(d.args[1]) if len(d.args) == 2 else None
    except ValueError:
        raise v.fail(d, "cannot parse 'ifconfig-ipv6-push' addresses (expected "
                        "ADDRESS/BITS [REMOTE])") from None
    if local.is_unspecified or local.is_multicast:
        raise v.fail(d, f"'ifconfig-ipv6-push {local}' is not a unicast address")
    return replace(c, ifconfig_ipv6_push=IfconfigIpv6Push(local, bits, remote, d.line),
                   ifconfig_ipv6_blocked=False)


def _iroute(c: ClientConfig, d: Directive) -> ClientConfig:
    network = v.ipv4(d, 0)
    mask = v.netmask(d, 1) if len(d.args) == 2 else HOST_MASK
    # OpenVPN keeps the network bits only (mroute.c masks the host bits of an iroute)
    net = ipaddress.IPv4Network(f"{network}/{mask}", strict=False)
    return replace(c, iroutes=(*c.iroutes, net))


def _iroute_ipv6(c: ClientConfig, d: Directive) -> ClientConfig:
    try:
        address, bits = _ipv6_prefix(d.args[0])
        # the network bits only, as for iroute (mroute.c masks the host bits)
        net = ipaddress.IPv6Network((address, bits), strict=False)
    except ValueError:
        raise v.fail(d, f"'iroute-ipv6' expects an IPv6 network such as 2001:2::/64, got "
                        f"'{d.args[0]}'") from None
    return replace(c, iroutes_ipv6=(*c.iroutes_ipv6, net))


def _push(c: ClientConfig, d: Directive) -> ClientConfig:
    text = d.args[0]
    if "," in text:
        raise v.fail(d, f"'push' option must not contain ',': '{text}' "
                        "(write one 'push' line per option)")
    if not text.strip():
        raise v.fail(d, "'push' expects an option, got an empty string")
    return replace(c, push_edits=(*c.push_edits, PushEdit("push", text)))


def _push_reset(c: ClientConfig, d: Directive) -> ClientConfig:
    return replace(c, push_edits=(*c.push_edits, PushEdit("push-reset")))


def _push_remove(c: ClientConfig, d: Directive) -> ClientConfig:
    if d.args[0] == "ifconfig-ipv6":
        c = replace(c, ifconfig_ipv6_blocked=True)
    return replace(c, push_edits=(*c.push_edits, PushEdit("push-remove", d.args[0])))


def _disable(c: ClientConfig, d: Directive) -> ClientConfig:
    return replace(c, disable=True)


CCD_DIRECTIVES: Mapping[str, tuple[int, int, _Handler]] = {
    "ifconfig-push": (2, 3, _ifconfig_push),
    "ifconfig-ipv6-push": (1, 2, _ifconfig_ipv6_push),
    "iroute": (1, 2, _iroute),
    "iroute-ipv6": (1, 1, _iroute_ipv6),
    "push": (1, 1, _push),
    "push-reset": (0, 0, _push_reset),
    "push-remove": (1, 1, _push_remove),
    "disable": (0, 0, _disable),
    "vlan-pvid": (1, 1, lambda c, d: replace(c, vlan_pvid=_vlan_pvid(d))),
}


def _vlan_pvid(d: Directive) -> int:
    from trivpn.config.directives import vlan_pvid  # noqa: PLC0415 - cycle

    return vlan_pvid(d)


def parse_client_config(text: str, path: Path | str,
                        base_dir: Path | None = None) -> ClientConfig:
    """Parse client-config-dir file text (``config`` includes are read from disk, relative
    names against ``base_dir``: the server config's, default the file's directory)."""
    return _parse(read_config_text(text, path, base_dir).directives, Path(path))


def load_client_config(path: Path, base_dir: Path | None = None) -> ClientConfig:
    """Read and parse the client-config-dir file at ``path`` (ConfigError if unreadable)."""
    return _parse(read_config(path, base_dir).directives, path)


def _parse(directives: Sequence[Directive], path: Path) -> ClientConfig:
    from trivpn.config.directives import DIRECTIVES, UNSUPPORTED  # noqa: PLC0415 - cycle

    c = ClientConfig(path)
    for d in directives:
        spec = CCD_DIRECTIVES.get(d.name)
        if spec is None:
            if d.name in DIRECTIVES or d.name in UNSUPPORTED:
                raise v.fail(d, f"'{d.name}' cannot be used in a client-config-dir file (only "
                                f"{', '.join(sorted(CCD_DIRECTIVES))} and 'config' can)")
            raise v.fail(d, f"unknown directive '{d.name}'")
        lo, hi, handler = spec
        if d.inline is not None:
            raise v.fail(d, f"'{d.name}' cannot be given as an inline <{d.name}> block")
        if not lo <= len(d.args) <= hi:
            raise v.fail(d, f"'{d.name}' takes {lo}" + (f" to {hi}" if hi != lo else "")
                         + f" argument{'s' if hi != 1 else ''}, got {len(d.args)}")
        c = handler(c, d)
    return c


# --- the server's decisions ------------------------------------------------------------------

def client_push_list(global_push: Sequence[str], edits: Sequence[PushEdit]
                     ) -> tuple[tuple[str, ...], bool]:
    """The client's push list after its file's edits, in order, and whether its ``ifconfig``
    is withheld (``push-remove ifconfig``), as OpenVPN's push.c ``push_reset()`` and
    ``push_remove_option()``: ``push-reset`` empties the list inherited so far, ``push-remove
    X`` drops every entry that starts with the text X."""
    pushes = list(global_push)
    ifconfig_blocked = False
    for e in edits:
        if e.kind == "push":
            pushes.append(e.text)
        elif e.kind == "push-reset":
            pushes.clear()
        elif e.text == "ifconfig":
            ifconfig_blocked = True
        elif e.text != "ifconfig-ipv6":
            pushes = [p for p in pushes if not p.startswith(e.text)]
    return tuple(pushes), ifconfig_blocked


Topology = Literal["net30", "p2p", "subnet"]


def check_fixed_address(push: IfconfigPush, *, tap: bool, topology: Topology,
                        server_network: ipaddress.IPv4Network | None,
                        server_address: ipaddress.IPv4Address | None) -> str | None:
    """Why a client's ``ifconfig-push`` cannot be served, or None.

    With topology subnet (or tap) the address must be in the server's subnet: OpenVPN only
    logs "violates tunnel network/netmask constraint" (multi.c, with a note that it should
    fail) and the client then has an address the server's device does not reach; trivpn
    refuses the client. The server's own address is never a client's."""
    if server_address is not None and push.local == server_address:
        return f"'ifconfig-push {push.local}' is the server's own address"
    if (tap or topology == "subnet") and server_network is not None \
            and push.local not in server_network:
        return (f"'ifconfig-push {push.local}' is outside the server's subnet "
                f"{server_network}")
    return None


def check_fixed_address6(push: IfconfigIpv6Push,
                         server_network: ipaddress.IPv6Network | None,
                         server_address: ipaddress.IPv6Address | None) -> str | None:
    """Why a client's ``ifconfig-ipv6-push`` cannot be served, or None: the server has no
    IPv6 in the tunnel (``server-ipv6`` or ``ifconfig-ipv6``; OpenVPN's options.c refuses a
    file without REMOTE then, and its client would get an address the server never routes),
    the address is the server's own, or it is outside the server's IPv6 network (as
    :func:`check_fixed_address` for IPv4 subnets: the server's device would not reach it)."""
    if server_address is None or server_network is None:
        return (f"'ifconfig-ipv6-push {push.local}/{push.bits}' needs IPv6 in the tunnel on "
                "the server ('server-ipv6' or 'ifconfig-ipv6')")
    if push.local == server_address:
        return f"'ifconfig-ipv6-push {push.local}' is the server's own address"
    if push.local not in server_network:
        return (f"'ifconfig-ipv6-push {push.local}' is outside the server's IPv6 network "
                f"{server_network}")
    return None


def read_client_config(directory: Path, common_name: str, *, exclusive: bool,
                       base_dir: Path | None = None) -> ClientConfig | str | None:
    """The client's file in ``directory``: ``DIR/<name>``, else ``DIR/DEFAULT`` (not with
    ``exclusive``, which needs the client's own file). Returns None when there is no file, a
    refusal reason (str) under ``ccd-exclusive``; ConfigError for a bad file. ``config FILE``
    in it resolves against ``base_dir`` (the server config's: OpenVPN opens it relative to
    its working directory, like the server config's own relative names)."""
    try:
        return _read_client_config(directory, common_name, exclusive, base_dir)
    except OSError as exc:  # e.g. a common name too long for a file name
        raise ConfigError(f"cannot read the client config file for '{common_name}': "
                          f"{exc.strerror or exc}", directory) from None


def _read_client_config(directory: Path, common_name: str, exclusive: bool,
                        base_dir: Path | None) -> ClientConfig | str | None:
    name = ccd_file_name(common_name)
    own = directory / name if name is not None else None
    if exclusive and common_name == CCD_DEFAULT:
        # ssl_verify.c: the DEFAULT file is never a client's own file
        return "ccd-exclusive: the common name 'DEFAULT' has no client config file of its own"
    if own is not None and own.is_file():
        return load_client_config(own, base_dir)
    if exclusive:
        shown = own if own is not None else directory / common_name
        return f"ccd-exclusive: client config file {shown} does not exist"
    default = directory / CCD_DEFAULT
    if default.is_file():
        return load_client_config(default, base_dir)
    return None


__all__ = [
    "CCD_DEFAULT",
    "CCD_DIRECTIVES",
    "CCD_ONLY",
    "ClientConfig",
    "ConfigError",
    "IfconfigIpv6Push",
    "IfconfigPush",
    "PushEdit",
    "ccd_file_name",
    "check_fixed_address",
    "check_fixed_address6",
    "client_push_list",
    "load_client_config",
    "parse_client_config",
    "read_client_config",
]
