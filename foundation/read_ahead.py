"""Run a producer one step ahead of its consumer, in a thread, with a bound on what waits between them.

An intake pass downloads mail (waiting on the IMAP server) and stores it (waiting on fsync and the
database). Done one after the other, each waits for the other; with :func:`read_ahead` the next
mails are downloaded while the last ones are being stored, so a pass costs about the slower of
the two instead of their sum. Nothing about "stored before processed" changes: the consumer sees
the same items in the same order, and only what it was handed can be stored.

The producer runs in one thread and is the only user of whatever it reads from (an IMAP
connection) until :func:`read_ahead` returns: leaving the ``with`` block, by the end, an exception
or ``break``, stops the producer at its next item and waits for its thread to end, so the caller
can use the connection again. An exception in the producer is raised in the consumer, at the
point where the item it could not produce would have come.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class _Channel(Generic[T]):
    def __init__(self, budget: int, weigh: Callable[[T], int]) -> None:
        self.budget = budget
        self.weigh = weigh
        self.items: deque[tuple[T, int]] = deque()
        self.weight = 0
        self.finished = False
        self.stopped = False
        self.error: BaseException | None = None
        self.changed = threading.Condition()

    def put(self, item: T) -> bool:
        """Hand over ``item``; False when the consumer went away (the producer then ends)."""
        weight = self.weigh(item)
        with self.changed:
            # An item heavier than the whole budget still goes through, alone.
            while not self.stopped and self.items and self.weight + weight > self.budget:
                self.changed.wait()
            if self.stopped:
                return False
            self.items.append((item, weight))
            self.weight += weight
            self.changed.notify_all()
            return True

    def close(self, error: BaseException | None = None) -> None:
        with self.changed:
            self.finished, self.error = True, error
            self.changed.notify_all()

    def take(self) -> Iterator[T]:
        while True:
            with self.changed:
                while not self.items and not self.finished:
                    self.changed.wait()
                if not self.items:
                    if self.error is not None:
                        raise self.error
                    return
                item, weight = self.items.popleft()
                self.weight -= weight
                self.changed.notify_all()
            yield item

    def stop(self) -> None:
        with self.changed:
            self.stopped = True
            self.items.clear()
            self.changed.notify_all()


@contextmanager
def read_ahead(produce: Iterator[T], *, weigh: Callable[[T], int], budget: int, name: str) -> Iterator[Iterator[T]]:
    """Yield an iterator over ``produce``'s items, produced in a thread up to ``budget`` (by ``weigh``) ahead."""
    channel: _Channel[T] = _Channel(budget, weigh)

    def run() -> None:
        try:
            for item in produce:
                if not channel.put(item):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            channel.close(exc)
        else:
            channel.close()
        finally:
            close = getattr(produce, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield channel.take()
    finally:
        channel.stop()
        thread.join()
