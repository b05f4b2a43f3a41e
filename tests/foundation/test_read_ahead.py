"""foundation/read_ahead.py: the producer runs ahead within its budget, and nothing outlives the block."""

from __future__ import annotations

import threading

import pytest

from foundation.read_ahead import read_ahead
from tests.support.cli import wait_until


def _counting(items: list[bytes], produced: list[bytes], closed: threading.Event):
    try:
        for item in items:
            produced.append(item)
            yield item
    finally:
        closed.set()


def test_items_arrive_in_order_and_whole():
    items = [bytes([n]) * n for n in range(1, 50)]
    with read_ahead(iter(items), weigh=len, budget=100, name="test") as taken:
        assert list(taken) == items


def test_the_producer_stops_at_the_budget_until_the_consumer_takes_more():
    produced: list[bytes] = []
    closed = threading.Event()
    items = [b"x" * 10 for _ in range(20)]
    with read_ahead(_counting(items, produced, closed), weigh=len, budget=30, name="test") as taken:
        first = next(taken)
        # Three items fit the budget of 30 bytes; a fourth is made but waits for room, a fifth is not made.
        wait_until(lambda: len(produced) == 5, what="the producer to fill its budget")
        assert first == b"x" * 10
        assert len(produced) == 5
        rest = list(taken)
    assert len(rest) == 19 and closed.is_set()


def test_an_item_heavier_than_the_budget_still_goes_through_alone():
    items = [b"a", b"b" * 1000, b"c"]
    with read_ahead(iter(items), weigh=len, budget=10, name="test") as taken:
        assert list(taken) == items


def test_an_error_of_the_producer_is_raised_where_its_item_would_have_come():
    def failing():
        yield b"first"
        raise ConnectionResetError("server went away")

    seen = []
    with (
        pytest.raises(ConnectionResetError, match="server went away"),
        read_ahead(failing(), weigh=len, budget=100, name="test") as taken,
    ):
        for item in taken:
            seen.append(item)
    assert seen == [b"first"]


def test_leaving_early_stops_the_producer_and_ends_its_thread():
    produced: list[bytes] = []
    closed = threading.Event()
    items = [b"y" * 10 for _ in range(1000)]
    with (
        pytest.raises(RuntimeError, match="disk full"),
        read_ahead(_counting(items, produced, closed), weigh=len, budget=50, name="read-ahead-early-exit") as taken,
    ):
        next(taken)
        raise RuntimeError("disk full")
    # The producer's thread has ended and its generator was closed: the caller owns the connection again.
    assert closed.is_set()
    assert "read-ahead-early-exit" not in [thread.name for thread in threading.enumerate()]
    assert len(produced) < 20
