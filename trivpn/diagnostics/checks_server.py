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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from trivpn.config import Options
from trivpn.config.derive import server_tun_ifconfig
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
    hits, _found = _nft_hook_hits(ruleset, "input", ("ip", "ip6", "inet"),
                                  lambda exprs: match_rule(exprs, proto, port),
                                  "chain policy drop (no rule accepts the port)")
    return hits


def _nft_hook_hits(ruleset: Mapping[str, Any], hook: str, families: tuple[str, ...],
                   matcher: Callable[[Sequence[Mapping[str, Any]]], tuple[bool, bool]],
                   policy_text: str) -> tuple[list[RuleHit], bool]:
    """Walk every base chain on ``hook`` of ``families`` as the kernel would for one packet:
    ``matcher(exprs)`` says whether a rule applies and whether that depends on conditions the
    doctor cannot know. Returns the drop/reject rules and drop policies met, and whether such
    a base chain exists at all. Jumps are followed (depth-limited); an unconditional accept,
    drop or return ends a chain; a goto does not come back to its caller."""
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    rules: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for item in ruleset.get("nftables", []):
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
            applies, conditional = matcher(exprs)
            if not applies:
                continue
            verdict, target = _verdict(exprs)
            if verdict in ("drop", "reject"):
                text = " ".join(_expr_text(e) for e in exprs)
                hits.append(RuleHit("nftables", f"{key[0]} {key[1]} {key[2]}",
                                    f"{text} (handle {r.get('handle')})", verdict, conditional))
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

    found = False
    for key, chain in chains.items():
        if chain.get("hook") != hook or key[0] not in families:
            continue
        found = True
        if walk(key, 0) is None and chain.get("policy") == "drop":
            hits.append(RuleHit("nftables", f"{key[0]} {key[1]} {key[2]}", policy_text,
                                "drop", False))
    return hits, found


def _iptables_chain_hits(save_text: str, chain: str,
                         judge: Callable[[list[str]], tuple[bool, bool]],
                         policy_note: str) -> list[RuleHit]:
    """The DROP/REJECT rules of ``chain`` in the filter table of ``iptables-save`` output that
    ``judge`` (a rule's words → applies, conditional) says apply, in order, up to the first
    unconditional verdict; the chain's DROP policy when no unconditional ACCEPT comes first."""
    table, policy = "", "ACCEPT"
    rules: list[str] = []
    for raw in save_text.splitlines():
        line = raw.strip()
        if line.startswith("*"):
            table = line[1:]
        elif table != "filter":
            continue
        elif line.startswith(f":{chain} "):
            policy = line.split()[1]
        elif line.startswith(f"-A {chain} "):
            rules.append(line)
    hits: list[RuleHit] = []
    for line in rules:
        words = line.split()
        applies, conditional = judge(words)
        if not applies:
            continue
        verdict = _word_after(words, "-j")[0] or ""
        if verdict in ("DROP", "REJECT"):
            hits.append(RuleHit("iptables", f"filter {chain}", line, verdict.lower(),
                                conditional))
            if not conditional:
                return hits
        elif verdict == "ACCEPT" and not conditional:
            return hits
    if policy == "DROP":
        hits.append(RuleHit("iptables", f"filter {chain}",
                            f":{chain} DROP (policy, {policy_note})", "drop", False))
    return hits


def iptables_input_hits(save_text: str, proto: ServerProto, port: int) -> list[RuleHit]:
    """The same for ``iptables-save`` output (filter table, INPUT chain only)."""

    def judge(words: list[str]) -> tuple[bool, bool]:
        opts = dict(zip(words, [*words[1:], ""], strict=True))
        p = opts.get("-p")
        if p is not None and p != proto:
            return False, False
        ports = opts.get("--dport") or opts.get("--dports")
        if ports is not None:
            ranges = [x.split(":") for x in ports.split(",")]
            if not any(int(r[0]) <= port <= int(r[-1]) for r in ranges if r[0].isdigit()):
                return False, False
        conditional = any(w in opts for w in ("-s", "-d", "-i", "--sport", "--src-range",
                                              "--match-set", "--mark"))
        if {"--state", "--ctstate"} & opts.keys():
            states = (opts.get("--state") or opts.get("--ctstate") or "").split(",")
            if "NEW" not in states:
                return False, False
        return True, conditional

    return _iptables_chain_hits(save_text, "INPUT", judge, "no ACCEPT for the port")


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


@dataclass(frozen=True, slots=True)
class NatRule:
    source: Literal["nftables", "iptables"]
    text: str
    saddr: ipaddress.IPv4Network | None  # None: any source
    saddr_negated: bool
    oif: str | None  # None: any interface; may end in '*' (nft) or '+' (iptables)
    oif_negated: bool


def _ifname_matches(pattern: str, name: str) -> bool:
    pattern = pattern.strip('"')
    if pattern.endswith(("*", "+")):
        return name.startswith(pattern[:-1])
    return pattern == name


def _word_after(words: list[str], flag: str) -> tuple[str | None, bool]:
    """The value after ``flag`` (and whether a '!'/'!=' negates it)."""
    if flag not in words:
        return None, False
    i = words.index(flag)
    negated = i > 0 and words[i - 1] == "!"
    value = words[i + 1] if i + 1 < len(words) else None
    if value in ("!=", "!"):
        negated = True
        value = words[i + 2] if i + 2 < len(words) else None
    return value, negated


def parse_nat_rules(nft_text: str, iptables_nat: str) -> list[NatRule]:
    """Every masquerade/SNAT rule in ``nft list ruleset`` and ``iptables-save -t nat`` text."""
    rules: list[NatRule] = []

    def net(value: str | None) -> ipaddress.IPv4Network | None:
        if value is None:
            return None
        try:
            parsed = ipaddress.ip_network(value.strip("{},"), strict=False)
        except ValueError:
            return None
        return parsed if isinstance(parsed, ipaddress.IPv4Network) else None

    for line in nft_text.splitlines():
        words = line.split()
        if not ({"masquerade", "snat"} & set(words)) or words[:1] == ["type"]:
            continue
        saddr, neg = _word_after(words, "saddr")
        oif, oneg = _word_after(words, "oifname")
        if oif is None:
            oif, oneg = _word_after(words, "oif")
        rules.append(NatRule("nftables", line.strip(), net(saddr), neg,
                             oif.strip('"') if oif else None, oneg))
    for line in iptables_nat.splitlines():
        words = line.split()
        if not line.startswith("-A POSTROUTING") or not ({"MASQUERADE", "SNAT"} & set(words)):
            continue
        saddr, neg = _word_after(words, "-s")
        oif, oneg = _word_after(words, "-o")
        rules.append(NatRule("iptables", line.strip(), net(saddr), neg, oif, oneg))
    return rules


def nat_rules_for(pool: ipaddress.IPv4Network | None, nft_text: str,
                  iptables_nat: str) -> list[str]:
    """Masquerade/SNAT rules whose source match covers ``pool`` (or has no source match)."""
    return [f"{'nft' if r.source == 'nftables' else 'iptables'}: {r.text}"
            for r in parse_nat_rules(nft_text, iptables_nat)
            if r.saddr is None or r.saddr_negated or pool is None or pool.overlaps(r.saddr)]


def nat_verdict(rule: NatRule, pool: ipaddress.IPv4Network,
                uplink: str | None) -> tuple[bool, str | None]:
    """(the rule translates every pool address leaving through ``uplink``, why not)."""
    if rule.saddr is not None:
        if rule.saddr_negated:
            if rule.saddr.overlaps(pool):
                return False, f"it excludes {rule.saddr}, which overlaps the pool {pool}"
        elif not pool.subnet_of(rule.saddr):
            if rule.saddr.overlaps(pool):
                return False, f"its source {rule.saddr} covers only part of the pool {pool}"
            return False, f"its source {rule.saddr} is not the pool {pool}"
    if rule.oif is not None and uplink is not None:
        hit = _ifname_matches(rule.oif, uplink)
        if hit == rule.oif_negated:
            return False, (f"it applies to {'all but ' if rule.oif_negated else ''}"
                           f"interface {rule.oif}, but the default route leaves through "
                           f"{uplink}")
    return True, None


def default_route_interface(route_text: str) -> str | None:
    """The interface of the IPv4 default route in ``/proc/net/route`` text (lowest metric)."""
    best: tuple[int, str] | None = None
    for line in route_text.splitlines()[1:]:
        f = line.split()
        if len(f) >= 8 and f[1] == "00000000" and f[7] == "00000000":
            metric = int(f[6]) if f[6].isdigit() else 0
            if best is None or metric < best[0]:
                best = (metric, f[0])
    return best[1] if best is not None else None


def _interface_with(addr_json: str, address: str) -> str | None:
    try:
        links = json.loads(addr_json or "[]")
    except json.JSONDecodeError:
        return None
    for link in links if isinstance(links, list) else []:
        for info in link.get("addr_info", []):
            if info.get("local") == address:
                return str(link.get("ifname"))
    return None


@dataclass(frozen=True, slots=True)
class Packet:
    """A forwarded packet, as far as the doctor can describe it."""

    saddr: ipaddress.IPv4Address | None  # None: any (a host beyond the uplink)
    daddr: ipaddress.IPv4Address | None
    iif: str | None  # None: unknown
    oif: str | None
    ct_state: str  # "new" or "established"


def _addr_in(right: Any, addr: ipaddress.IPv4Address) -> bool | None:
    if isinstance(right, Mapping) and "prefix" in right:
        p = right["prefix"]
        return addr in ipaddress.ip_network(f"{p['addr']}/{p['len']}", strict=False)
    if isinstance(right, Mapping) and "set" in right:
        hits = [_addr_in(x, addr) for x in right["set"]]
        return True if any(hits) else None if None in hits else False
    if isinstance(right, Mapping) and "range" in right:
        lo, hi = right["range"]
        return int(ipaddress.ip_address(lo)) <= int(addr) <= int(ipaddress.ip_address(hi))
    if isinstance(right, str):
        try:
            return addr in ipaddress.ip_network(right, strict=False)
        except ValueError:
            return None
    return None


def forward_match(exprs: Sequence[Mapping[str, Any]], pkt: Packet) -> bool | None:
    """True: the rule's conditions hold for ``pkt``; False: they do not; None: they depend
    on what the doctor cannot know (ports, marks, unknown interfaces...)."""
    unknown = False
    for e in exprs:
        m = e.get("match")
        if not isinstance(m, Mapping):
            if any(k in e for k in ("xt",)):
                unknown = True
            continue
        left, right, op = m.get("left"), m.get("right"), m.get("op", "==")
        negate = op == "!="
        hit: bool | None = None
        if isinstance(left, Mapping) and "payload" in left:
            p = left["payload"]
            field_name = p.get("field")
            if p.get("protocol") == "ip" and field_name in ("saddr", "daddr"):
                addr = pkt.saddr if field_name == "saddr" else pkt.daddr
                hit = None if addr is None else _addr_in(right, addr)
            elif p.get("protocol") == "ip6":
                hit = False
        elif isinstance(left, Mapping) and "meta" in left:
            key = left["meta"].get("key")
            if key in ("iifname", "oifname"):
                name = pkt.iif if key == "iifname" else pkt.oif
                hit = (None if name is None else
                       any(_ifname_matches(n, name) for n in _names(right)))
            elif key == "nfproto":
                hit = "ipv4" in _names(right)
        elif isinstance(left, Mapping) and "ct" in left and left["ct"].get("key") == "state":
            hit = pkt.ct_state in _names(right)
        if hit is None:
            unknown = True
            continue
        if hit == negate:
            return False
    return None if unknown else True


def nft_forward_hits(ruleset: Mapping[str, Any], pkt: Packet) -> tuple[list[RuleHit], bool]:
    """(drop/reject rules and drop policies ``pkt`` meets on forward hooks, whether a forward
    chain exists at all). Jumps are followed; an accept ends a chain."""

    def matcher(exprs: Sequence[Mapping[str, Any]]) -> tuple[bool, bool]:
        applies = forward_match(exprs, pkt)
        return applies is not False, applies is None

    return _nft_hook_hits(ruleset, "forward", ("ip", "inet"), matcher,
                          "chain policy drop (no rule accepts this traffic)")


def _iptables_rule_applies(words: list[str], pkt: Packet) -> tuple[bool, bool]:
    """(the rule can match ``pkt``, its match depends on what the doctor cannot know)."""
    conditional = False
    applies = True
    for flag, value in (("-s", pkt.saddr), ("-d", pkt.daddr)):
        text, neg = _word_after(words, flag)
        if text is None:
            continue
        if value is None:
            conditional = True
            continue
        applies = applies and (value in ipaddress.ip_network(text, strict=False)) != neg
    for flag, name in (("-i", pkt.iif), ("-o", pkt.oif)):
        text, neg = _word_after(words, flag)
        if text is None:
            continue
        if name is None:
            conditional = True
            continue
        applies = applies and _ifname_matches(text, name) != neg
    states = _word_after(words, "--ctstate")[0] or _word_after(words, "--state")[0]
    if states is not None:
        applies = applies and pkt.ct_state.upper() in states.split(",")
    if any(w in words for w in ("-p", "--dport", "--sport", "--mark", "--match-set")):
        conditional = True
    return applies, conditional


def iptables_forward_hits(save_text: str, pkt: Packet) -> list[RuleHit]:
    """The same for ``iptables-save`` (legacy iptables; iptables-nft rules are read from
    nftables): the filter table's FORWARD chain, -s/-d/-i/-o and state matches."""
    return _iptables_chain_hits(save_text, "FORWARD", lambda words: _iptables_rule_applies(
        words, pkt), "no ACCEPT for this traffic")


def _forward_fix(hit: RuleHit, tun: str, uplink: str, pool: str) -> str:
    if hit.source == "nftables":
        chain = hit.chain
        return (f"nft insert rule {chain} iifname \"{tun}\" oifname \"{uplink}\" ip saddr "
                f"{pool} accept; nft insert rule {chain} ct state established,related accept")
    return (f"iptables -I FORWARD -i {tun} -o {uplink} -s {pool} -j ACCEPT; iptables -I "
            "FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT")


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
    redirect6 = [p for p in _pushes(o, "redirect-gateway") if "ipv6" in p.split()]
    if o.server_ipv6 is not None and (redirect6 or _pushes(o, "route-ipv6")):
        forward6 = await in_netns_thread(
            ctx.netns, lambda: read_sysctl("net.ipv6.conf.all.forwarding"))
        evidence["ipv6_forwarding"] = forward6
        if forward6 != "1":
            return problem(
                cid, "fail", "IPv6 forwarding is off, but the server pushes IPv6 routes",
                explanation=("With 'server-ipv6' and pushed IPv6 routes (route-ipv6, "
                             "redirect-gateway ipv6), clients send IPv6 traffic here, but "
                             "the kernel does not forward it (net.ipv6.conf.all.forwarding=0)."),
                fix=("Run 'sysctl -w net.ipv6.conf.all.forwarding=1' and make it permanent in "
                     "/etc/sysctl.d/99-openvpn.conf."), **evidence)
    if not needs:
        return ok(cid, f"ip_forward={forward}; nothing pushed that clients would send through "
                       "this server", **evidence)
    pool = o.server.network if o.server is not None else None
    uplink = await in_netns_thread(ctx.netns,
                                   lambda: default_route_interface(read_proc_net("route")))
    own = server_tun_ifconfig(o)
    addr = await run_tool(["ip", "-j", "addr", "show"], netns=ctx.netns)
    tun = (_interface_with(addr.stdout, str(own.local))
           if own is not None and addr is not None else None)
    evidence["uplink"] = uplink
    evidence["tun"] = tun
    routed = await _route_devices(ctx.netns, _pushed_route_hosts(o))
    evidence["pushed_route_devices"] = routed
    outs: list[tuple[str | None, str | None]] = [(d, dev) for d, dev in routed.items()]
    if redirect:
        outs.insert(0, (None, uplink))
    blocked = await _forward_firewall(ctx, pool, tun, outs, evidence)
    if blocked is not None:
        return blocked
    if not redirect:
        return ok(cid, "forwarding is on and the firewall forwards the VPN subnet (no "
                       "redirect-gateway pushed: NAT or a route back on the LAN router is "
                       "your choice)", **evidence)
    return await _nat_result(ctx, pool, uplink, evidence)


async def _route_devices(netns: str | None, targets: Sequence[str]) -> dict[str, str]:
    """address → the interface this host routes it out of (``ip -j route get``)."""
    devices: dict[str, str] = {}
    for target in targets[:16]:
        out = await run_tool(["ip", "-j", "route", "get", target], netns=netns)
        try:
            routes = json.loads(out.stdout) if out is not None and out.returncode == 0 else []
        except json.JSONDecodeError:
            routes = []
        if isinstance(routes, list) and routes and isinstance(routes[0], Mapping) \
                and routes[0].get("dev"):
            devices[target] = str(routes[0]["dev"])
    return devices


def _pushed_route_hosts(o: Options) -> list[str]:
    """An address of each network pushed with 'push "route NET MASK"' to look the route up
    with: the network address, which (unlike the first host, often this server's own LAN
    address) is routed out of the interface towards the network."""
    hosts = []
    for p in _pushes(o, "route"):
        words = p.split()
        try:
            net = ipaddress.IPv4Network(f"{words[1]}/{words[2] if len(words) > 2 else 32}",
                                        strict=False)
        except (ValueError, IndexError):
            continue
        hosts.append(str(net.network_address))
    return hosts


async def _forward_firewall(ctx: DoctorContext, pool: ipaddress.IPv4Network | None,
                            tun: str | None, outs: Sequence[tuple[str | None, str | None]],
                            evidence: dict[str, Any]) -> CheckResult | None:
    """A fail/warn result when nftables (iptables-nft included) or legacy iptables drops a
    pool client's new packet leaving through one of ``outs`` (destination, interface: the
    default route's for redirect-gateway, the pushed routes' own), or the reply coming back;
    None otherwise."""
    cid = "server.forwarding"
    if pool is None:
        return None
    net = str(pool)
    nft_json = await _read_nft(ctx.netns)
    ipt_filter = await _read_iptables(ctx.netns)
    client = pool.network_address + 2
    hits: list[tuple[RuleHit, str | None]] = []
    for dst, oif in outs:
        daddr = ipaddress.IPv4Address(dst) if dst is not None else None
        for pkt in (Packet(client, daddr, tun, oif, "new"),
                    Packet(daddr, client, oif, tun, "established")):
            if nft_json is not None:
                hits += [(h, oif) for h in nft_forward_hits(nft_json, pkt)[0]]
            if ipt_filter is not None and "legacy" in ipt_filter:
                hits += [(h, oif) for h in iptables_forward_hits(ipt_filter, pkt)]
    if not hits:
        return None
    evidence["forward_rules"] = [{"source": h.source, "chain": h.chain, "rule": h.rule,
                                  "verdict": h.verdict, "conditional": h.conditional,
                                  "out": oif} for h, oif in hits]
    hard = [(h, oif) for h, oif in hits if not h.conditional]
    top, out = hard[0] if hard else hits[0]
    evidence["state"] = "forward_blocked" if hard else "forward_maybe_blocked"
    return problem(
        cid, "fail" if hard else "warn",
        f"{top.source} {top.verdict}s forwarded VPN traffic in {top.chain}: {top.rule}",
        explanation=("Clients' packets to the pushed networks arrive on "
                     f"{tun or 'the tun device'} and must be forwarded to "
                     f"{out or 'the outgoing interface'} (and the replies back); the FORWARD "
                     "rule shown drops them, so the tunnel is up but nothing beyond the "
                     "server answers."
                     + ("" if hard else " It depends on conditions the doctor cannot "
                        "evaluate (ports, marks, sources), so it may drop only some.")),
        fix=(f"Accept the VPN traffic before that rule: "
             f"'{_forward_fix(top, tun or 'tun0', out or 'UPLINK', net)}', and make it "
             "persistent in your firewall configuration."), **evidence)


async def _nat_result(ctx: DoctorContext, pool: ipaddress.IPv4Network | None,
                      uplink: str | None, evidence: dict[str, Any]) -> CheckResult:
    """With redirect-gateway pushed: a masquerade/SNAT rule must translate the pool leaving
    through the default route's interface."""
    cid = "server.forwarding"
    net = str(pool) if pool is not None else "POOL"
    nft = await run_tool(["nft", "list", "ruleset"], netns=ctx.netns)
    ipt = await run_tool(["iptables-save", "-t", "nat"], netns=ctx.netns)
    nat = parse_nat_rules(nft.stdout if nft else "", ipt.stdout if ipt else "")
    good: list[str] = []
    wrong: list[str] = []
    for rule in nat:
        if pool is None:
            good.append(rule.text)
            continue
        fits, why = nat_verdict(rule, pool, uplink)
        if fits:
            good.append(rule.text)
        elif rule.saddr is None or rule.saddr.overlaps(pool):
            wrong.append(f"{rule.text}: {why}")
    evidence["nat_rules"] = good
    nft_fix = (f"nft add rule ip nat postrouting ip saddr {net} oifname "
               f"\"{uplink or 'UPLINK'}\" masquerade")
    ipt_fix = f"iptables -t nat -A POSTROUTING -s {net} -o {uplink or 'UPLINK'} -j MASQUERADE"
    needs_table = nft is not None and "table ip nat" not in nft.stdout
    table_fix = ("nft add table ip nat; nft add chain ip nat postrouting '{ type nat hook "
                 "postrouting priority 100; }'; " if needs_table else "")
    uplink_note = ("" if uplink is not None else " (UPLINK: the interface of the default "
                   "route, see 'ip route show default')")
    if good:
        return ok(cid, "forwarding is on and a NAT rule covers the client pool leaving "
                       f"through {uplink or 'the uplink'}", **evidence)
    if wrong:
        evidence["nat_rules_not_matching"] = wrong
        evidence["state"] = "nat_mismatch"
        return problem(
            cid, "warn", f"a NAT rule exists but does not translate {net} leaving through "
                         f"{uplink or 'the uplink'}: {wrong[0]}",
            explanation=("redirect-gateway sends all client traffic here; a masquerade/SNAT "
                         "rule must match the pool's source addresses AND the interface the "
                         "default route leaves through, or the clients' private source "
                         "addresses go out untranslated and replies never come back."),
            fix=f"Correct that rule, or add '{table_fix}{nft_fix}' (or '{ipt_fix}'){uplink_note}.",
            **evidence)
    evidence["state"] = "no_nat"
    return problem(
        cid, "warn", f"redirect-gateway is pushed but no masquerade/SNAT rule covers {net}",
        explanation=("Clients send all their traffic through the VPN; unless the network "
                     f"beyond this server routes {net} back here, replies to those private "
                     "source addresses never return, so clients lose internet access."),
        fix=(f"Add NAT for the pool, e.g. '{table_fix}{nft_fix}' or '{ipt_fix}'"
             f"{uplink_note}."), **evidence)



_SERVER: tuple[Literal["server"]] = ("server",)
CHECKS: tuple[Check, ...] = (
    Check("server.listen", check_listen, roles=_SERVER, depends_on=("config.syntax",)),
    Check("server.forwarding", check_forwarding, roles=_SERVER, depends_on=("config.syntax",)),
    Check("server.firewall", check_firewall, roles=_SERVER, depends_on=("config.syntax",)),
)
