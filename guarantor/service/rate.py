"""A per-key rate limit over a sliding minute, in memory (one service process)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable


class RateLimit:
    """At most ``per_minute`` events per key in any 60 seconds; ``hit`` says how long to wait."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = per_minute
        self._clock = clock
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> int:
        """Count one event; 0 when allowed, else the whole seconds until one is allowed again."""
        now = self._clock()
        with self._lock:
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - 60:
                events.popleft()
            if len(events) >= self._limit:
                return max(1, math.ceil(events[0] + 60 - now))
            events.append(now)
            if len(self._events) > 10_000:  # forget idle keys, so many clients cannot grow memory
                for idle in [k for k, v in self._events.items() if not v or v[-1] <= now - 60]:
                    del self._events[idle]
            return 0
