"""Per-peer bounds: token buckets, misbehaviour bans and a bounded seen-set.

Clocks are passed in (``time.monotonic`` in production) so tests can drive them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

Clock = Callable[[], float]


class TokenBucket:
    """*rate_per_s* tokens per second, at most *burst* saved up."""

    __slots__ = ("_burst", "_clock", "_last", "_rate", "_tokens")

    def __init__(self, rate_per_s: float, burst: float, clock: Clock) -> None:
        self._rate = rate_per_s
        self._burst = burst
        self._tokens = burst
        self._clock = clock
        self._last = clock()

    def take(self, n: float = 1.0) -> bool:
        """Spend *n* tokens if available; False means the caller is over its rate."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= n:
            self._tokens -= n
            return True
        return False


class BanList:
    """Bans by key (node id bytes or IP string) until a deadline; expired entries vanish."""

    def __init__(self, clock: Clock, max_entries: int = 10_000) -> None:
        self._clock = clock
        self._until: dict[Hashable, float] = {}
        self._max = max_entries

    def ban(self, key: Hashable, duration_s: float) -> None:
        """Ban *key* for *duration_s* seconds (extends an existing ban)."""
        if len(self._until) >= self._max:
            self._expire()
            if len(self._until) >= self._max:
                # Bounded state: forget the ban that ends soonest.
                oldest = min(self._until, key=self._until.__getitem__)
                del self._until[oldest]
        until = self._clock() + duration_s
        self._until[key] = max(until, self._until.get(key, 0.0))

    def unban(self, key: Hashable) -> bool:
        """Lift a ban; True if *key* was banned."""
        return self._until.pop(key, None) is not None

    def is_banned(self, key: Hashable) -> bool:
        """Tell whether *key* is banned now."""
        until = self._until.get(key)
        if until is None:
            return False
        if until <= self._clock():
            del self._until[key]
            return False
        return True

    def _expire(self) -> None:
        now = self._clock()
        for k in [k for k, t in self._until.items() if t <= now]:
            del self._until[k]

    def entries(self) -> dict[Hashable, float]:
        """Active bans and the seconds left on each."""
        self._expire()
        now = self._clock()
        return {k: t - now for k, t in self._until.items()}


class SeenCache:
    """A bounded set that forgets its oldest entries first (gossip dedup)."""

    def __init__(self, capacity: int) -> None:
        self._cap = capacity
        self._items: OrderedDict[bytes, None] = OrderedDict()

    def add(self, key: bytes) -> bool:
        """Remember *key*; True if it was new."""
        if key in self._items:
            self._items.move_to_end(key)
            return False
        self._items[key] = None
        if len(self._items) > self._cap:
            self._items.popitem(last=False)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
