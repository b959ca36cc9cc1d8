"""The reader runs ahead of scoring in a thread: same items in the same order, errors where they happened, at most
`depth` items waiting, and a consumer that stops early stops (and closes) the reader."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from pipelines.score.reader import read_ahead


def test_items_arrive_in_order_and_all_of_them() -> None:
    assert list(read_ahead(iter(range(50)), depth=2)) == list(range(50))
    assert list(read_ahead(iter([]))) == []


def test_an_error_reaches_the_consumer_after_the_items_before_it() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("table 'activities', column 'lead_id': bad")

    got = []
    with pytest.raises(ValueError, match="column 'lead_id'"):
        for item in read_ahead(items()):
            got.append(item)
    assert got == [1, 2]


def test_the_reader_runs_at_most_depth_items_ahead() -> None:
    produced: list[int] = []
    lock = threading.Lock()
    ahead: list[int] = []

    def items() -> Iterator[int]:
        for i in range(30):
            with lock:
                produced.append(i)
            yield i

    consumed = 0
    for _ in read_ahead(items(), depth=1):
        consumed += 1
        threading.Event().wait(0.005)  # let the reader run as far as it may
        with lock:
            ahead.append(len(produced) - consumed)
    assert consumed == 30
    # one item being handed over, `depth` queued, one being produced
    assert max(ahead) <= 2


def test_stopping_early_stops_and_closes_the_reader_in_its_thread() -> None:
    closed = threading.Event()
    produced: list[int] = []

    def items() -> Iterator[int]:
        try:
            for i in range(1_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    for item in read_ahead(items()):
        if item == 3:
            break
    assert closed.is_set()
    assert len(produced) <= 6
