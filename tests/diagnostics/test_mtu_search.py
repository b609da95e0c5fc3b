"""The size search of ``mtu.path`` (checks_mtu.search) and its verdict, with a simulated path:
a size passes only when the prober got an answer."""

from __future__ import annotations

import trio

from trivpn.diagnostics.checks_mtu import Attempt, Search, classify, search

SIZES = list(range(576, 1501))


class Path:
    """Answers sizes up to ``limit``; above it an ICMP-reporting router lowers the kernel's
    path MTU to ``icmp_mtu``, or (None) packets vanish. ``lose`` answers are lost once."""

    def __init__(self, limit: int, icmp_mtu: int | None = None,
                 lose: tuple[int, ...] = ()) -> None:
        self.limit, self.icmp_mtu, self.kernel = limit, icmp_mtu, 1500
        self.lose = set(lose)
        self.sent: list[int] = []

    def kernel_mtu(self) -> int:
        return self.kernel

    async def probe(self, size: int, tries: int) -> Attempt:
        for attempt in range(1, tries + 1):
            self.sent.append(size)
            if size > self.kernel:
                return Attempt(size, "local_limit", attempt)
            if size <= self.limit and size not in self.lose:
                return Attempt(size, "answered", attempt)
            self.lose.discard(size)
            if size > self.limit and self.icmp_mtu is not None:
                self.kernel = self.icmp_mtu
                return Attempt(size, "icmp", attempt)
        return Attempt(size, "silent", tries)


async def _search(path: Path, budget: float = 60.0) -> Search:
    return await search(SIZES, path.probe, path.kernel_mtu, trio.current_time() + budget)


async def test_healthy_path_needs_the_floor_and_one_full_size_probe():
    path = Path(1500)
    found = await _search(path)
    assert found.limit == 1500 and found.failed is None
    assert path.sent == [576, 1500]
    assert classify(found, 1500, 1500)["limit_kind"] == "route_mtu"


async def test_icmp_fragmentation_needed_goes_straight_to_the_reported_mtu():
    path = Path(1400, icmp_mtu=1400)
    found = await _search(path)
    assert found.limit == 1400
    assert path.sent == [576, 1500, 1400]
    assert classify(found, 1500, path.kernel)["limit_kind"] == "icmp"


async def test_black_hole_is_bisected_to_the_exact_byte():
    path = Path(1300)
    found = await _search(path)
    assert found.limit == 1300
    assert found.failed is not None and found.failed.size == 1301
    assert found.failed.result == "silent"
    verdict = classify(found, 1500, 1500)
    assert verdict == {"path_mtu": 1300, "confirmed": True, "limit_kind": "black_hole",
                       "black_hole_at": 1301}
    assert len(set(path.sent)) <= 13  # floor, top, then about log2(924) sizes


async def test_one_lost_answer_is_retried_before_a_size_counts_as_silent():
    path = Path(1500, lose=(1500,))
    found = await _search(path)
    assert found.limit == 1500
    assert path.sent.count(1500) == 2


async def test_nothing_is_confirmed_when_even_the_floor_is_unanswered():
    path = Path(500)
    found = await _search(path)
    assert found.limit is None
    assert found.failed is not None and found.failed.size == 576
    assert path.sent == [576, 576, 576]  # FLOOR_TRIES


async def test_search_stops_at_its_deadline_and_says_it_is_incomplete():
    path = Path(1300)
    found = await _search(path, budget=0.0)
    assert found.complete is False
    assert found.limit == 576
    assert classify(found, 1500, 1500)["limit_kind"] == "unresolved"


async def test_a_lost_answer_below_the_limit_does_not_lower_the_limit():
    path = Path(1300, lose=(1038,))  # the first bisection step's answer is lost
    found = await _search(path)
    assert path.sent.count(1038) == 2  # silent once, then tried again as the boundary
    assert found.limit == 1300
    assert found.failed is not None and found.failed.size == 1301
    assert found.failed.tries == 2
