"""Test-only fault injection on the send path: drop, delay and partition by peer.

A ``FaultSchedule`` is a seeded list of rules, each active during a window of
seconds after the network starts. ``PeerNetwork`` consults it before writing
any message to a peer (consensus, gossip, ping) and before completing a
handshake, so a partition also keeps the two sides from reconnecting.

It is enabled only from configuration: ``P2PConfig.faults`` or, for
multi-process tests, the ``TIMECOIN_P2P_FAULTS`` environment variable holding
JSON::

    {"seed": 7, "epoch_unix_s": 1764100000.0, "rules": [
      {"kind": "drop", "peers": ["*"], "probability": 0.1},
      {"kind": "delay", "peers": ["<node id hex>"], "delay_ms": 200, "start_s": 5, "end_s": 20},
      {"kind": "partition", "peers": ["<node id hex>", "..."], "start_s": 10, "end_s": 30},
      {"kind": "partition", "groups": [["<a>", "<b>"], ["<c>", "<d>"]], "start_s": 40}
    ]}

``peers`` names the *remote* node ids (hex) a rule applies to; ``"*"`` is any.
A partition with ``groups`` is the same JSON for every process: a node only
talks to the members of its own group (a node in no group to nobody listed).
``epoch_unix_s`` (optional) makes windows count from a shared wall-clock time
so several processes partition at the same moment; without it they count from
each network's ``start()``.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from typing import Any

ENV_VAR = "TIMECOIN_P2P_FAULTS"

DROP = -1.0
"""Returned by ``FaultSchedule.decide``: do not send."""


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One fault: *kind* is ``drop``, ``delay`` or ``partition``."""

    kind: str
    peers: frozenset[str] = frozenset({"*"})
    start_s: float = 0.0
    end_s: float = float("inf")
    probability: float = 1.0
    delay_ms: float = 0.0
    groups: tuple[frozenset[str], ...] = ()
    """Partition by groups of node ids (hex); overrides ``peers``."""

    def matches(self, peer_hex: str, elapsed_s: float, local_hex: str = "") -> bool:
        """Tell whether the rule is active now and applies to messages to *peer_hex*."""
        if not (self.start_s <= elapsed_s < self.end_s):
            return False
        if self.groups:
            mine = next((g for g in self.groups if local_hex in g), None)
            if mine is None:
                return any(peer_hex in g for g in self.groups)
            return peer_hex not in mine
        return "*" in self.peers or peer_hex in self.peers


@dataclass(slots=True)
class FaultSchedule:
    """Seeded drop/delay/partition decisions, one per message sent."""

    seed: int = 0
    rules: tuple[FaultRule, ...] = ()
    epoch_unix_s: float | None = None
    """If set, rule windows count from this wall-clock time (shared by processes)
    instead of from each network's start."""
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for r in self.rules:
            if r.kind not in ("drop", "delay", "partition"):
                raise ValueError(f"unknown fault kind {r.kind!r}")
        self._rng = random.Random(self.seed)

    @classmethod
    def from_json(cls, text: str) -> FaultSchedule:
        """Parse the JSON form documented in the module docstring."""
        raw: dict[str, Any] = json.loads(text)
        rules = tuple(
            FaultRule(
                kind=str(r["kind"]),
                peers=frozenset(str(p) for p in r.get("peers", ["*"])),
                start_s=float(r.get("start_s", 0.0)),
                end_s=float(r.get("end_s", float("inf"))),
                probability=float(r.get("probability", 1.0)),
                delay_ms=float(r.get("delay_ms", 0.0)),
                groups=tuple(frozenset(str(p) for p in g) for g in r.get("groups", [])),
            )
            for r in raw.get("rules", [])
        )
        epoch = raw.get("epoch_unix_s")
        return cls(
            seed=int(raw.get("seed", 0)),
            rules=rules,
            epoch_unix_s=None if epoch is None else float(epoch),
        )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> FaultSchedule | None:
        """Read the schedule in ``TIMECOIN_P2P_FAULTS`` (None when unset)."""
        text = (environ if environ is not None else os.environ).get(ENV_VAR)
        return cls.from_json(text) if text else None

    def is_partitioned(self, peer_id: bytes, elapsed_s: float, local_id: bytes = b"") -> bool:
        """Tell whether a partition rule separates us (*local_id*) from *peer_id* now."""
        h, me = peer_id.hex(), local_id.hex()
        return any(r.kind == "partition" and r.matches(h, elapsed_s, me) for r in self.rules)

    def decide(self, peer_id: bytes, elapsed_s: float, local_id: bytes = b"") -> float:
        """Seconds to delay a message to *peer_id*, 0.0 to send now, or ``DROP``."""
        h, me = peer_id.hex(), local_id.hex()
        delay = 0.0
        for r in self.rules:
            if not r.matches(h, elapsed_s, me):
                continue
            if r.kind == "partition":
                return DROP
            if self._rng.random() >= r.probability:
                continue
            if r.kind == "drop":
                return DROP
            delay += r.delay_ms / 1000.0
        return delay
