"""``dev null``: OpenVPN's test mode without a device. Nothing is created on the host;
packets from the peer are dropped (counted as written, as OpenVPN's null driver does) and
nothing is ever read (tun.c, ``open_null``, and forward.c's DEV_TYPE_NULL handling)."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from trivpn.runtime.tunnel import TunnelPlan


class NullDevice:
    """A :class:`~trivpn.runtime.transport.Device` that swallows writes and never reads."""

    kind = "null"

    def __init__(self) -> None:
        self.name = "null"
        self.write_drops = 0
        self.discarded = 0  # packets from the peer, dropped by design
        self._closed = trio.Event()

    async def read_batch(self, max_packets: int = 64) -> list[bytes]:
        await self._closed.wait()
        raise trio.ClosedResourceError("null device closed")

    def write(self, packet: bytes) -> bool:
        self.discarded += 1
        return True

    def write_many(self, packets: list[bytes]) -> int:
        self.discarded += len(packets)
        return len(packets)

    def close(self) -> None:
        self._closed.set()


@dataclass
class NullTunnel:
    """The tunnel handle for ``dev null``: no device, no addresses, no routes."""

    plan: TunnelPlan
    device: NullDevice = field(default_factory=NullDevice)
    ifindex: int = 0
    route_failures: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "null"

    def reconfigure(self, plan: TunnelPlan) -> bool:
        changed = plan != self.plan
        self.plan = plan
        return changed

    def close(self) -> list[str]:
        self.device.close()
        return []

    def describe(self) -> dict[str, object]:
        return {"device": "null", "kind": "null", "mtu": self.plan.mtu, "addresses": [],
                "routes": []}
