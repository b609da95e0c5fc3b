"""``tunnel.traffic``: once a handshake works, does data flow both ways?

A fresh session completes the handshake, then ICMP echo requests from the pushed tunnel address
to the tunnel gateway (``route-gateway`` for topology subnet, the ``ifconfig`` peer for
net30/p2p) are encrypted by the session and sent on the link; the echo replies are decrypted by
the session. No TUN device and no privileges are needed, and nothing on this host is
reconfigured.
"""

from __future__ import annotations

import os
from typing import Any

import trio

from trivpn.config import ConfigError
from trivpn.diagnostics.checks_tls import handshake_budget
from trivpn.diagnostics.model import Check, CheckResult, DoctorContext, ok, problem, skip
from trivpn.diagnostics.probe import open_target, probe_inputs
from trivpn.diagnostics.probe_icmp import echo_request, parse_echo_reply
from trivpn.diagnostics.probe_session import SessionProbe, probe_config
from trivpn.protocol import events as ev
from trivpn.protocol.errors import ProtocolError
from trivpn.protocol.push import PushedOptions

ID = "tunnel.traffic"
ECHO_COUNT = 3
ECHO_INTERVAL = 0.5
ECHO_WAIT = 3.0
ECHO_PAYLOAD = b"trivpn doctor tunnel.traffic probe"


def gateway_of(pushed: PushedOptions) -> tuple[str, str] | None:
    """(our tunnel address, the gateway to ping) from what the server pushed."""
    if pushed.ifconfig is None:
        return None
    local = str(pushed.ifconfig.local)
    if pushed.topology == "subnet":
        gw = pushed.route_gateway
        if gw is None or gw == "dhcp":
            return None
        return local, str(gw)
    return local, str(pushed.ifconfig.remote_or_netmask)


async def run(ctx: DoctorContext) -> CheckResult:
    inputs = await probe_inputs(ctx, ID)
    if isinstance(inputs, CheckResult):
        return inputs
    o, target = inputs.options, open_target(ctx, inputs.targets)
    budget = handshake_budget(ctx.timeout) * 0.6
    try:
        config = probe_config(o, hand_window=budget)
    except (ConfigError, ProtocolError) as exc:
        return skip(ID, f"skipped: cannot build the TLS setup from the config ({exc})")
    ident = int.from_bytes(os.urandom(2), "big")
    evidence: dict[str, Any] = {"sent_to": target.describe(), "echo_sent": 0,
                                "echo_received": 0}
    async with SessionProbe(config, target, ctx.netns) as probe:
        probe.start()
        await probe.run_until(lambda: probe.saw(ev.DataChannelReady)
                              or probe.failure() is not None,
                              trio.current_time() + budget)
        session = probe.session
        assert session is not None
        pushed = session.pushed
        if not probe.saw(ev.DataChannelReady) or pushed is None:
            failure = probe.failure()
            return skip(ID, "skipped: the handshake for the traffic probe did not complete"
                        + (f" ({failure.cause}: {failure.detail})" if failure else ""),
                        **evidence)
        addresses = gateway_of(pushed)
        if addresses is None:
            await probe.say_goodbye()
            return skip(ID, "skipped: the server pushed no tunnel address and gateway to ping",
                        topology=pushed.topology, **evidence)
        local, gateway = addresses
        evidence.update(local_address=local, gateway=gateway, topology=pushed.topology,
                        cipher=session.cipher)
        replies: dict[int, float] = {}
        sent_at: dict[int, float] = {}

        def got_reply() -> bool:
            for packet in probe.tun:
                echo = parse_echo_reply(packet)
                if (echo is not None and echo.ident == ident and echo.src == gateway
                        and echo.seq not in replies):
                    replies[echo.seq] = trio.current_time()
            probe.tun.clear()
            return bool(replies)

        end = trio.current_time() + ECHO_WAIT
        for seq in range(1, ECHO_COUNT + 1):
            packet = echo_request(local, gateway, ident, seq, ECHO_PAYLOAD)
            if await probe.send_tun(packet):
                sent_at[seq] = trio.current_time()
                probe.timeline.add("echo_request_sent", seq=seq, bytes=len(packet))
            if await probe.run_until(got_reply, min(end, trio.current_time() + ECHO_INTERVAL)):
                break
        await probe.run_until(got_reply, end)
        await probe.say_goodbye()
    rtts = [round((at - sent_at[seq]) * 1000, 2) for seq, at in sorted(replies.items())
            if seq in sent_at]
    evidence.update(echo_sent=len(sent_at), echo_received=len(replies), rtt_ms=rtts,
                    drops=dict(session.drops), timeline=probe.timeline.steps,
                    data_packets_received=probe.received_packets)
    if replies:
        best = min(rtts) if rtts else 0.0
        return ok(ID, f"data flows both ways: {gateway} answered an echo through the tunnel "
                  f"({best:.1f} ms)", **evidence)
    drops = dict(session.drops)
    if drops:
        why = (f"The session dropped {sum(drops.values())} incoming packet(s) "
               f"({', '.join(f'{k}: {v}' for k, v in drops.items())}): data arrives but does "
               "not decrypt, so the data-channel keys or cipher differ between the two sides.")
    else:
        why = ("Nothing came back through the data channel: the server received the encrypted "
               "echo requests but did not answer them — its kernel dropped them (a firewall "
               "on the tun interface, rp_filter, or no address on it), or it did not accept "
               "our data packets.")
    return problem(
        ID, "fail", f"no echo reply from the tunnel gateway {gateway} after {len(sent_at)} "
        "request(s)", **evidence,
        explanation=f"The handshake completed, but {len(sent_at)} ICMP echo request(s) from "
        f"{local} to {gateway} through the tunnel got no reply. {why} OpenVPN would show "
        "'Initialization Sequence Completed' and then nothing works, ending in 'Inactivity "
        "timeout (--ping-restart), restarting'.",
        fix="On the server, check its log for 'Authenticate/Decrypt packet error' or 'bad "
        "packet ID', its firewall for the tun interface (e.g. 'nft list ruleset'), and that "
        f"the gateway address {gateway} is configured on its tun device.")


CHECKS: tuple[Check, ...] = (
    Check(ID, run, roles=("client",), depends_on=("tls.handshake",)),
)
