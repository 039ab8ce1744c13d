"""The simulated network and clock: a seeded schedule of delay, drop, duplicate and partition.

Everything random comes from one ``random.Random(seed)`` and every event is
ordered by ``(time_ms, seq)``, so a seed replays exactly. Faults (drops and a
partition) happen only before ``gst_ms`` (the paper's Global Stabilization
Time); afterwards messages are still delayed, reordered and duplicated but
always arrive within ``max_delay_ms`` — the partial-synchrony model under
which Tendermint is live.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    """Fault model of the simulated network (times in simulated milliseconds)."""

    min_delay_ms: int = 5
    max_delay_ms: int = 150
    drop_rate: float = 0.05
    """Probability that a message is lost, before GST only."""
    duplicate_rate: float = 0.05
    """Probability that a message is delivered twice (any time)."""
    partition: bool = True
    """Split the validators in two groups for a while before GST."""
    gst_ms: int = 8_000
    """Global stabilization time: no drops or partitions from here on."""


@dataclass(slots=True)
class Partition:
    start_ms: int
    end_ms: int
    group: frozenset[int]

    def separates(self, a: int, b: int, now: int) -> bool:
        return self.start_ms <= now < self.end_ms and ((a in self.group) != (b in self.group))


@dataclass(order=True, slots=True)
class Scheduled:
    time_ms: int
    seq: int
    node: int = field(compare=False)
    kind: str = field(compare=False)
    payload: Any = field(compare=False)


class Network:
    """Event queue plus the seeded fault schedule."""

    def __init__(self, config: NetworkConfig, n: int, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.n = n
        self.queue: list[Scheduled] = []
        self.seq = 0
        self.now = 0
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0
        self.partition: Partition | None = None
        if config.partition and n >= 2 and config.gst_ms > 1:
            start = rng.randrange(0, max(1, config.gst_ms // 2))
            end = rng.randrange(start + 1, config.gst_ms + 1)
            size = rng.randrange(1, n)
            group = frozenset(rng.sample(range(n), size))
            self.partition = Partition(start, end, group)

    def schedule(self, at_ms: int, node: int, kind: str, payload: Any) -> None:
        """Queue a local event (timeout, tick) for *node* at *at_ms*."""
        self.seq += 1
        heapq.heappush(self.queue, Scheduled(at_ms, self.seq, node, kind, payload))

    def send(self, src: int, dst: int, payload: Any) -> None:
        """Send *payload* from *src* to *dst* through the fault schedule."""
        if src == dst:
            return
        cfg = self.config
        self.sent += 1
        if self.now < cfg.gst_ms:
            if self.partition is not None and self.partition.separates(src, dst, self.now):
                self.dropped += 1
                return
            if self.rng.random() < cfg.drop_rate:
                self.dropped += 1
                return
        self.schedule(
            self.now + self.rng.randint(cfg.min_delay_ms, cfg.max_delay_ms), dst, "msg", payload
        )
        if self.rng.random() < cfg.duplicate_rate:
            self.duplicated += 1
            self.schedule(
                self.now + self.rng.randint(cfg.min_delay_ms, cfg.max_delay_ms),
                dst,
                "msg",
                payload,
            )

    def pop(self) -> Scheduled | None:
        """Next event in (time, seq) order; advances the simulated clock."""
        if not self.queue:
            return None
        ev = heapq.heappop(self.queue)
        self.now = ev.time_ms
        return ev
