"""The control channel's reliability layer (docs/protocol.md §2)."""

from __future__ import annotations

import pytest

from trivpn.protocol.reliable import AckQueue, ReliableReceiver, ReliableSender


def test_message_ids_start_at_zero_and_increase():
    sender = ReliableSender()
    assert [sender.queue(4, b"x") for _ in range(3)] == [0, 1, 2]


def test_send_window_holds_six_unacked_messages():
    sender = ReliableSender()
    for _ in range(6):
        sender.queue(4, b"x")
    assert not sender.can_queue()
    with pytest.raises(RuntimeError):
        sender.queue(4, b"x")
    sender.acknowledge([0])
    assert sender.can_queue()


def test_window_counts_from_the_lowest_unacked_id():
    sender = ReliableSender()
    for _ in range(6):
        sender.queue(4, b"x")
    sender.acknowledge([1, 2, 3, 4, 5])
    assert not sender.can_queue()  # id 0 still outstanding: ids 0..5 span the window


def test_new_messages_are_due_at_once_then_retransmitted_with_doubling_timeouts():
    sender = ReliableSender(initial_timeout=2.0)
    sender.queue(4, b"x")
    sends = [t for t in (0.0, 1.9, 2.0, 5.9, 6.0, 13.9, 14.0) if sender.due(t)]
    assert sends == [0.0, 2.0, 6.0, 14.0]


def test_retransmission_reuses_id_and_payload():
    sender = ReliableSender()
    sender.queue(4, b"payload")
    first = sender.due(0.0)[0]
    again = sender.due(10.0)[0]
    assert (again.message_id, again.payload) == (first.message_id, first.payload)


def test_three_acks_for_higher_ids_trigger_a_fast_retransmit():
    sender = ReliableSender(initial_timeout=100.0)
    for _ in range(4):
        sender.queue(4, b"x")
    sender.due(0.0)
    sender.acknowledge([1, 2])
    assert sender.due(1.0) == []
    sender.acknowledge([3])
    assert [o.message_id for o in sender.due(1.0)] == [0]


def test_acks_for_ids_not_outstanding_are_ignored():
    sender = ReliableSender()
    sender.queue(4, b"x")
    assert sender.acknowledge([7, 9]) == 0
    assert sender.outstanding == 1


def test_next_deadline_is_the_earliest_retransmission():
    sender = ReliableSender(initial_timeout=2.0)
    assert sender.next_deadline() is None
    sender.queue(4, b"a")
    sender.due(10.0)
    assert sender.next_deadline() == 12.0


def test_receiver_delivers_in_order_despite_reordering():
    receiver = ReliableReceiver()
    assert receiver.receive(1, 4, b"b")
    assert receiver.pop_ready() == []
    assert receiver.receive(0, 4, b"a")
    assert receiver.pop_ready() == [(4, b"a"), (4, b"b")]


def test_receiver_acks_duplicates_again_but_delivers_them_once():
    receiver = ReliableReceiver()
    receiver.receive(0, 4, b"a")
    receiver.pop_ready()
    assert receiver.receive(0, 4, b"a")
    assert receiver.pop_ready() == []


def test_receiver_neither_stores_nor_acks_ids_beyond_its_window():
    receiver = ReliableReceiver()
    assert not receiver.receive(12, 4, b"far")
    assert receiver.receive(11, 4, b"edge")


def test_ack_queue_fills_spare_slots_with_recent_acks_and_never_repeats_an_id():
    acks = AckQueue()
    for message_id in (1, 2, 3):
        acks.add(message_id)
    assert acks.take(2) == (1, 2)
    assert acks.take(4) == (3, 2, 1)
    assert acks.take(4) == (3, 2, 1)  # retransmissions still carry recent acks
    assert not acks.pending


def test_ack_queue_is_empty_before_anything_was_acked():
    assert AckQueue().take(4) == ()


def test_receive_buffer_is_bounded_in_bytes_and_refuses_without_acking():
    receiver = ReliableReceiver(max_bytes=3000)
    assert receiver.receive(1, 4, bytes(1500))
    assert receiver.receive(2, 4, bytes(1500))
    assert not receiver.receive(3, 4, bytes(1))  # full: not stored, not acked
    assert receiver.buffered_bytes == 3000
    assert receiver.receive(0, 4, b"x")  # the next expected one is always taken
    assert [len(p) for _, p in receiver.pop_ready()] == [1, 1500, 1500]
    assert receiver.buffered_bytes == 0
    assert receiver.receive(3, 4, bytes(1))
