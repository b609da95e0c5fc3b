"""JSON log lines and aggregated drop reporting."""

from __future__ import annotations

import io
import json
import logging

from trivpn.logging import DropAggregator, configure_logging, get_logger, level_for_verb


def test_json_lines_carry_timestamp_level_event_and_fields():
    out = io.StringIO()
    configure_logging(verb=3, fmt="json", stream=out)
    get_logger(peer="198.18.0.2:1194").info("peer_connected", cn="client1")
    record = json.loads(out.getvalue().splitlines()[-1])
    assert record["event"] == "peer_connected"
    assert record["level"] == "info"
    assert record["cn"] == "client1" and record["peer"] == "198.18.0.2:1194"
    assert record["timestamp"].endswith("Z")


def test_verb_maps_to_levels():
    assert level_for_verb(0) == logging.ERROR
    assert level_for_verb(3) == logging.INFO
    assert level_for_verb(4) == logging.DEBUG


def test_debug_lines_are_filtered_at_verb_3():
    out = io.StringIO()
    configure_logging(verb=3, fmt="json", stream=out)
    get_logger().debug("noisy")
    assert out.getvalue() == ""


def test_drops_are_logged_once_per_reason_per_interval():
    out = io.StringIO()
    configure_logging(verb=3, fmt="json", stream=out)
    drops = DropAggregator(interval=10.0)
    for _ in range(1000):
        drops.add("hmac_mismatch")
    drops.merge({"replay": 3, "malformed": 0})
    assert drops.due(0.0)
    drops.flush(get_logger(), 0.0)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["reason"], r["count"]) for r in lines] == [("hmac_mismatch", 1000), ("replay", 3)]
    drops.add("replay")
    assert not drops.due(5.0) and drops.due(10.0)
