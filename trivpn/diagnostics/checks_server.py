"""Server-role checks: ``server.listen`` (can the configured address/port be bound, and who
holds it if not), ``server.forwarding`` (ip_forward; NAT for redirect-gateway clients) and
``server.firewall`` (nftables/iptables rules that drop or reject the server port).

Everything is read in the doctor's namespace; the only side effect is binding and at once
closing a socket on the server port. Firewall rules are read with ``nft -j list ruleset`` and
``iptables-save``, best effort: what cannot be interpreted is left out, never guessed.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from trivpn.config import Options
from trivpn.diagnostics.hostinfo import in_netns_thread, read_proc_net, read_sysctl, run_tool
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip

ServerProto = Literal["udp", "tcp"]


def _proto(o: Options) -> ServerProto:
    return "udp" if o.proto == "udp" else "tcp"


def _where(o: Options, *directives: str) -> str:
    for d in directives:
        loc = o.location(d)
        if loc is not None:
            return f"{loc[0]}:{loc[1]}"
    return str(o.config_path)


# --- server.listen ----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BindOutcome:
    address: str
    port: int
    proto: ServerProto
    errno: int | None
    owners: tuple[dict[str, Any], ...] = ()


def socket_inodes(proc_net_text: str, port: int, *, listening_only: bool) -> set[int]:
    """Inodes of sockets bound to local ``port`` in ``/proc/net/{udp,tcp}[6]`` text."""
    inodes: set[int] = set()
    for line in proc_net_text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or ":" not in fields[1]:
            continue
        local_port = int(fields[1].rsplit(":", 1)[1], 16)
        if local_port != port or (listening_only and fields[3] != "0A"):
            continue
        inodes.add(int(fields[9]))
    inodes.discard(0)
    return inodes


def processes_holding(inodes: set[int], proc: str = "/proc") -> list[dict[str, Any]]:
    """PIDs (with command) whose open file descriptors include one of the socket ``inodes``."""
    wanted = {f"socket:[{i}]" for i in inodes}
    found: list[dict[str, Any]] = []
    for pid in (p for p in os.listdir(proc) if p.isdigit()):
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target in wanted:
                found.append({"pid": int(pid), "command": _command(proc, pid)})
                break
    return found


def _command(proc: str, pid: str) -> str:
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return "?"
    return " ".join(p.decode("utf-8", "replace") for p in raw.split(b"\0") if p) or "?"


def try_bind(address: str, port: int, proto: ServerProto) -> BindOutcome:
    """Bind (and close at once) a socket like the server would; who holds it if in use."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
    code: int | None = None
    with socket.socket(family, kind) as sock:
        try:
            sock.bind((address, port))
        except OSError as exc:
            code = exc.errno
    owners: tuple[dict[str, Any], ...] = ()
    if code == errno.EADDRINUSE:
        text = read_proc_net(proto) + read_proc_net(proto + "6")
        inodes = socket_inodes(text, port, listening_only=proto == "tcp")
        owners = tuple(processes_holding(inodes))
    return BindOutcome(address, port, proto, code, owners)


def _bind_address(o: Options) -> str | None:
    if o.local is None:
        return "::" if o.family == 6 else "0.0.0.0"
    try:
        return str(ipaddress.ip_address(o.local))
    except ValueError:
        try:
            return str(socket.getaddrinfo(o.local, None)[0][4][0])
        except OSError:
            return None


def _is_vpn_daemon(owner: Mapping[str, Any]) -> bool:
    """``openvpn ...``, ``trivpn ...`` or ``python -m trivpn ...``."""
    words = str(owner.get("command", "")).split(" ")
    names = [os.path.basename(w) for w in words[:3]]
    return bool({"openvpn", "trivpn"} & set(names[:2])) or names[1:3] == ["-m", "trivpn"]


async def check_listen(ctx: DoctorContext) -> CheckResult:
    cid = "server.listen"
    o = ctx.options
    if o is None:
        return skip(cid, "config did not parse")
    proto = _proto(o)
    place = _where(o, "local", "port", "lport")
    address = _bind_address(o)
    if address is None:
        return problem(cid, "fail", f"'local {o.local}' does not resolve",
                       explanation="OpenVPN cannot bind a listening socket to an address it "
                                   "cannot resolve and exits at start.",
                       fix=f"Use an IP address of this machine in 'local' at {place}.",
                       local=o.local)
    res = await in_netns_thread(ctx.netns, lambda: try_bind(address, o.lport, proto))
    evidence: dict[str, Any] = {"address": address, "port": o.lport, "proto": proto}
    if res.errno is None:
        return ok(cid, f"{proto} {address} port {o.lport} is free and can be bound", **evidence)
    evidence["error"] = os.strerror(res.errno)
    if res.errno == errno.EADDRINUSE:
        evidence["state"] = "in_use"
        evidence["held_by"] = list(res.owners) or "unknown process (not visible to us)"
        if res.owners and all(_is_vpn_daemon(w) for w in res.owners):
            return ok(cid, f"{proto} port {o.lport} is held by the running VPN server "
                           f"(pid {', '.join(str(w['pid']) for w in res.owners)})", **evidence)
        who = (", ".join(f"pid {w['pid']} ({w['command']})" for w in res.owners)
               or "another process")
        return problem(cid, "fail", f"{proto} port {o.lport} is already in use by {who}",
                       explanation="The server cannot bind its port while another program "
                                   "holds it; OpenVPN exits with 'Address already in use'.",
                       fix=(f"Stop that program (see 'ss -lunp sport = :{o.lport}' / 'ss -ltnp "
                            f"sport = :{o.lport}'), or choose another 'port' at {place} and "
                            "update the clients' 'remote' lines."), **evidence)
    if res.errno == errno.EADDRNOTAVAIL:
        evidence["state"] = "address_not_local"
        return problem(cid, "fail", f"{address} is not an address of this machine",
                       explanation="OpenVPN can only listen on an address configured on one "
                                   "of this machine's interfaces.",
                       fix=f"Change 'local' at {place} to an address shown by 'ip -brief "
                           "addr', or remove it to listen on all addresses.", **evidence)
    if res.errno == errno.EACCES:
        evidence["state"] = "permission_denied"
        return problem(cid, "fail", f"not allowed to bind port {o.lport}",
                       explanation="Ports below 1024 need root or CAP_NET_BIND_SERVICE.",
                       fix=f"Run the server as root, or use a port of 1024 or above at "
                           f"{place}.", **evidence)
    evidence["state"] = "bind_failed"
    return problem(cid, "fail", f"cannot bind {proto} {address}:{o.lport}: "
                                f"{os.strerror(res.errno)}",
                   explanation="The server cannot open its listening socket.",
                   fix=f"Check 'local'/'port' at {place}.", **evidence)


# --- firewall rule reading --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class RuleHit:
    source: Literal["nftables", "iptables"]
    chain: str
    rule: str
    verdict: str
    conditional: bool  # the rule has further conditions (source address, interface...)


def _port_matches(right: Any, port: int) -> bool | None:
    if isinstance(right, int):
        return right == port
    if isinstance(right, str) and right.isdigit():
        return int(right) == port
    if isinstance(right, Mapping):
        if "set" in right:
            return any(_port_matches(x, port) for x in right["set"])
        if "range" in right:
            lo, hi = right["range"]
            return int(lo) <= port <= int(hi)
    if isinstance(right, list):
        return any(_port_matches(x, port) for x in right)
    return None


def _names(right: Any) -> set[str]:
    if isinstance(right, str):
        return {right}
    if isinstance(right, Mapping) and "set" in right:
        return {str(x) for x in right["set"]}
    if isinstance(right, list):
        return {str(x) for x in right}
    return set()


def _expr_text(expr: Mapping[str, Any]) -> str:
    if "match" in expr:
        m = expr["match"]
        left, right, op = m.get("left"), m.get("right"), m.get("op", "==")
        if isinstance(left, Mapping) and "payload" in left:
            p = left["payload"]
            lt = f"{p.get('protocol', '')} {p.get('field', '')}".strip()
        elif isinstance(left, Mapping) and "meta" in left:
            lt = f"meta {left['meta'].get('key')}"
        elif isinstance(left, Mapping) and "ct" in left:
            lt = f"ct {left['ct'].get('key')}"
        else:
            lt = json.dumps(left)
        rt = (",".join(sorted(_names(right))) if isinstance(right, Mapping) and "set" in right
              else json.dumps(right) if isinstance(right, Mapping) else str(right))
        return f"{lt} {'' if op in ('==', 'in') else op + ' '}{rt}"
    key = next(iter(expr), "?")
    return key


def match_rule(exprs: Sequence[Mapping[str, Any]], proto: ServerProto,
               port: int) -> tuple[bool, bool]:
    """(applies to a new ``proto``/``port`` packet, has other conditions) for nft rule exprs."""
    conditional = False
    for e in exprs:
        m = e.get("match")
        if not isinstance(m, Mapping):
            continue
        left, right, op = m.get("left"), m.get("right"), m.get("op", "==")
        negate = op == "!="
        if isinstance(left, Mapping) and "payload" in left:
            p = left["payload"]
            if p.get("field") == "dport" and p.get("protocol") in ("udp", "tcp", "th"):
                hit = p.get("protocol") in (proto, "th") and bool(_port_matches(right, port))
                if hit == negate:
                    return False, conditional
                continue
            if p.get("field") in ("saddr", "daddr", "sport"):
                conditional = True
                continue
        if isinstance(left, Mapping) and "meta" in left:
            key = left["meta"].get("key")
            if key == "l4proto":
                hit = proto in _names(right)
                if hit == negate:
                    return False, conditional
                continue
            if key in ("nfproto", "protocol"):
                continue
            conditional = True
            continue
        if isinstance(left, Mapping) and "ct" in left and left["ct"].get("key") == "state":
            hit = "new" in _names(right)
            if hit == negate:
                return False, conditional
            continue
        conditional = True
    return True, conditional


_VERDICTS = ("accept", "drop", "reject", "jump", "goto", "return")


def _verdict(exprs: Sequence[Mapping[str, Any]]) -> tuple[str | None, str | None]:
    for e in exprs:
        for v in _VERDICTS:
            if v in e:
                target = e[v].get("target") if isinstance(e[v], Mapping) else None
                return v, target
    return None, None


def nft_input_hits(ruleset: Mapping[str, Any], proto: ServerProto, port: int) -> list[RuleHit]:
    """Drop/reject rules and drop policies that a new ``proto`` packet to ``port`` meets on
    the input hook, following jumps. An unconditional accept ends a chain's evaluation."""
    items = ruleset.get("nftables", [])
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    rules: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for item in items:
        if "chain" in item:
            c = item["chain"]
            chains[(c["family"], c["table"], c["name"])] = c
        elif "rule" in item:
            r = item["rule"]
            rules.setdefault((r["family"], r["table"], r["chain"]), []).append(r)
    hits: list[RuleHit] = []

    def walk(key: tuple[str, str, str], depth: int) -> str | None:
        """Evaluate a chain; returns 'accept', 'drop' or None (fell through)."""
        if depth > 16:
            return None
        for r in rules.get(key, []):
            exprs = r.get("expr", [])
            applies, conditional = match_rule(exprs, proto, port)
            if not applies:
                continue
            verdict, target = _verdict(exprs)
            name = f"{key[0]} {key[1]} {key[2]}"
            text = " ".join(_expr_text(e) for e in exprs)
            if verdict in ("drop", "reject"):
                hits.append(RuleHit("nftables", name, f"{text} (handle {r.get('handle')})",
                                    verdict, conditional))
                if not conditional:
                    return "drop"
            elif verdict == "accept" and not conditional:
                return "accept"
            elif verdict in ("jump", "goto") and target is not None:
                outcome = walk((key[0], key[1], target), depth + 1)
                if outcome is not None and not conditional:
                    return outcome
                if verdict == "goto" and not conditional:
                    return None
            elif verdict == "return" and not conditional:
                return None
        return None

    for key, chain in chains.items():
        if chain.get("hook") != "input" or key[0] not in ("ip", "ip6", "inet"):
            continue
        outcome = walk(key, 0)
        if outcome is None and chain.get("policy") == "drop":
            hits.append(RuleHit("nftables", f"{key[0]} {key[1]} {key[2]}",
                                "chain policy drop (no rule accepts the port)", "drop", False))
    return hits


def iptables_input_hits(save_text: str, proto: ServerProto, port: int) -> list[RuleHit]:
    """The same for ``iptables-save`` output (filter table, INPUT chain only)."""
    hits: list[RuleHit] = []
    table = ""
    policy = "ACCEPT"
    accepted = False
    for raw in save_text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:]
            continue
        if table != "filter":
            continue
        if line.startswith(":INPUT "):
            policy = line.split()[1]
            continue
        if not line.startswith("-A INPUT ") or accepted:
            continue
        words = line.split()
        opts = dict(zip(words, [*words[1:], ""], strict=True))
        target = opts.get("-j", "")
        p = opts.get("-p")
        if p is not None and p != proto:
            continue
        ports = opts.get("--dport") or opts.get("--dports")
        if ports is not None:
            ranges = [x.split(":") for x in ports.split(",")]
            if not any(int(r[0]) <= port <= int(r[-1]) for r in ranges if r[0].isdigit()):
                continue
        conditional = any(w in opts for w in ("-s", "-d", "-i", "--sport", "--src-range",
                                              "--match-set", "--mark"))
        if {"--state", "--ctstate"} & opts.keys():
            states = (opts.get("--state") or opts.get("--ctstate") or "").split(",")
            if "NEW" not in states:
                continue
        if target in ("DROP", "REJECT"):
            hits.append(RuleHit("iptables", "filter INPUT", line, target.lower(), conditional))
            if not conditional:
                return hits
        elif target == "ACCEPT" and not conditional:
            accepted = True
    if not accepted and policy == "DROP":
        hits.append(RuleHit("iptables", "filter INPUT", ":INPUT DROP (policy, no ACCEPT for "
                            "the port)", "drop", False))
    return hits


# --- server.firewall --------------------------------------------------------------------------

async def _read_nft(netns: str | None) -> Mapping[str, Any] | None:
    out = await run_tool(["nft", "-j", "list", "ruleset"], netns=netns)
    if out is None or out.returncode != 0:
        return None
    try:
        data = json.loads(out.stdout or "{}")
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, Mapping) else None


async def _read_iptables(netns: str | None, table: str = "filter") -> str | None:
    out = await run_tool(["iptables-save", "-t", table], netns=netns)
    if out is None or out.returncode != 0:
        return None
    return out.stdout


async def check_firewall(ctx: DoctorContext) -> CheckResult:
    cid = "server.firewall"
    o = ctx.options
    if o is None:
        return skip(cid, "config did not parse")
    proto = _proto(o)
    port = o.lport
    nft = await _read_nft(ctx.netns)
    ipt = await _read_iptables(ctx.netns)
    if nft is None and ipt is None:
        return skip(cid, "neither 'nft' nor 'iptables-save' could be run (install nftables "
                         "or run as root to read the firewall)")
    hits: list[RuleHit] = []
    if nft is not None:
        hits += nft_input_hits(nft, proto, port)
    if ipt is not None:
        hits += iptables_input_hits(ipt, proto, port)
    evidence: dict[str, Any] = {
        "port": port, "proto": proto,
        "read": [n for n, v in (("nftables", nft), ("iptables", ipt)) if v is not None],
    }
    if not hits:
        return ok(cid, f"no input rule drops {proto} port {port}", **evidence)
    evidence["rules"] = [{"source": h.source, "chain": h.chain, "rule": h.rule,
                          "verdict": h.verdict, "conditional": h.conditional} for h in hits]
    hard = [h for h in hits if not h.conditional]
    status: Literal["warn", "fail"] = "fail" if hard else "warn"
    top = hard[0] if hard else hits[0]
    evidence["state"] = "blocked" if hard else "maybe_blocked"
    allow = (f"nft add rule {top.chain} {proto} dport {port} accept" if top.source == "nftables"
             else f"iptables -I INPUT -p {proto} --dport {port} -j ACCEPT")
    return problem(
        cid, status,
        f"{top.source} {top.verdict}s {proto} port {port} in {top.chain}"
        + (" for some sources" if top.conditional else ""),
        explanation=("Client packets to the server port are dropped before OpenVPN sees them; "
                     "clients only report 'TLS key negotiation failed to occur within 60 "
                     "seconds' because a dropped packet gets no answer."
                     if not top.conditional else
                     "A rule drops the server port for some packets (depending on source "
                     "address or interface); clients it matches only time out."),
        fix=(f"Allow the port before the dropping rule, e.g. '{allow}' (insert it ahead of "
             f"the rule shown), and make it persistent in your firewall configuration."),
        **evidence)


# --- server.forwarding ------------------------------------------------------------------------

def _pushes(o: Options, name: str) -> list[str]:
    return [p for p in o.pushes if p.split() and p.split()[0] == name]


def nat_rules_for(pool: ipaddress.IPv4Network | None, nft_text: str,
                  iptables_nat: str) -> list[str]:
    """Masquerade/SNAT rules whose source match covers ``pool`` (or has no source match)."""
    found: list[str] = []

    def covers(words: list[str], flag: str) -> bool:
        if flag not in words:
            return True
        i = words.index(flag)
        try:
            net = ipaddress.ip_network(words[i + 1].strip("{},"), strict=False)
        except (ValueError, IndexError):
            return True
        return pool is None or (net.version == 4 and pool.overlaps(net))

    for line in nft_text.splitlines():
        words = line.split()
        if ("masquerade" in words or "snat" in words) and covers(words, "saddr"):
            found.append("nft: " + line.strip())
    for line in iptables_nat.splitlines():
        words = line.split()
        if line.startswith("-A POSTROUTING") and ({"MASQUERADE", "SNAT"} & set(words)) \
                and covers(words, "-s"):
            found.append("iptables: " + line.strip())
    return found


async def check_forwarding(ctx: DoctorContext) -> CheckResult:
    cid = "server.forwarding"
    o = ctx.options
    if o is None:
        return skip(cid, "config did not parse")
    forward = await in_netns_thread(ctx.netns, lambda: read_sysctl("net.ipv4.ip_forward"))
    redirect = _pushes(o, "redirect-gateway")
    routes = _pushes(o, "route")
    evidence: dict[str, Any] = {"ip_forward": forward, "pushed_redirect_gateway": bool(redirect),
                                "pushed_routes": routes}
    needs = bool(redirect or routes)
    if forward != "1" and needs:
        why = "'redirect-gateway'" if redirect else "routes"
        return problem(
            cid, "fail", f"IPv4 forwarding is off, but the server pushes {why}",
            explanation=("Clients send traffic for the pushed networks to this server, but the "
                         "kernel does not forward it on (net.ipv4.ip_forward=0): the tunnel "
                         "comes up, yet nothing beyond the server is reachable."),
            fix=("Run 'sysctl -w net.ipv4.ip_forward=1' and make it permanent with "
                 "'net.ipv4.ip_forward = 1' in /etc/sysctl.d/99-openvpn.conf."), **evidence)
    if not redirect:
        return ok(cid, f"ip_forward={forward}; no redirect-gateway pushed, so no NAT is needed",
                  **evidence)
    nft = await run_tool(["nft", "list", "ruleset"], netns=ctx.netns)
    ipt = await run_tool(["iptables-save", "-t", "nat"], netns=ctx.netns)
    pool = o.server.network if o.server is not None else None
    rules = nat_rules_for(pool, nft.stdout if nft else "", ipt.stdout if ipt else "")
    evidence["nat_rules"] = rules
    if rules:
        return ok(cid, "forwarding is on and a NAT rule covers the client pool", **evidence)
    net = str(pool) if pool is not None else "POOL"
    return problem(
        cid, "warn", f"redirect-gateway is pushed but no masquerade/SNAT rule covers {net}",
        explanation=("Clients send all their traffic through the VPN; unless the network "
                     f"beyond this server routes {net} back here, replies to those private "
                     "source addresses never return, so clients lose internet access."),
        fix=(f"Add NAT for the pool, e.g. 'nft add rule ip nat postrouting ip saddr {net} "
             f"oifname UPLINK masquerade' or 'iptables -t nat -A POSTROUTING -s {net} -o "
             "UPLINK -j MASQUERADE' (UPLINK is the internet-facing interface)."), **evidence)


_SERVER: tuple[Literal["server"]] = ("server",)
CHECKS: tuple[Check, ...] = (
    Check("server.listen", check_listen, roles=_SERVER, depends_on=("config.syntax",)),
    Check("server.forwarding", check_forwarding, roles=_SERVER, depends_on=("config.syntax",)),
    Check("server.firewall", check_firewall, roles=_SERVER, depends_on=("config.syntax",)),
)
