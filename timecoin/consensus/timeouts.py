"""Round timeouts: an initial value plus a delta per round, and network presets.

Timeouts grow linearly with the round so that, after GST, some round is long
enough for every correct validator to hear the proposal and 2f+1 votes (the
paper's liveness argument, section 4). The engine never waits: it emits
``ScheduleTimeout(kind, height, round, after_ms)`` and the node (or simulator)
feeds ``TimeoutFired`` back.

``commit_ms`` is CometBFT's ``timeout_commit``: after a decision the next
height starts this long after ``NewHeight``. It sets the block interval; a
proposer always proposes (possibly an empty block) when its round starts, so
mainnet and testnet produce one block about every 30 s even without
transactions (DESIGN.md, Consensus).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class TimeoutKind(IntEnum):
    """Which timeout; COMMIT is the wait between a decision and round 0 of the next height."""

    PROPOSE = 1
    PREVOTE = 2
    PRECOMMIT = 3
    COMMIT = 4


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Milliseconds of each timeout; ``*_delta_ms`` is added once per round."""

    propose_ms: int = 3_000
    propose_delta_ms: int = 500
    prevote_ms: int = 1_000
    prevote_delta_ms: int = 500
    precommit_ms: int = 1_000
    precommit_delta_ms: int = 500
    commit_ms: int = 30_000

    def __post_init__(self) -> None:
        for name in self.__slots__:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")

    def duration_ms(self, kind: TimeoutKind, round: int) -> int:
        """Length of timeout *kind* in *round* (rounds count from 0)."""
        if kind is TimeoutKind.PROPOSE:
            return self.propose_ms + round * self.propose_delta_ms
        if kind is TimeoutKind.PREVOTE:
            return self.prevote_ms + round * self.prevote_delta_ms
        if kind is TimeoutKind.PRECOMMIT:
            return self.precommit_ms + round * self.precommit_delta_ms
        return self.commit_ms

    @classmethod
    def mainnet(cls) -> TimeoutConfig:
        """One block about every 30 s (commit wait) with CometBFT-like round timeouts."""
        return cls()

    @classmethod
    def testnet(cls) -> TimeoutConfig:
        """Same pace as mainnet."""
        return cls()

    @classmethod
    def devnet(cls) -> TimeoutConfig:
        """About one block per second on a local network."""
        return cls(
            propose_ms=1_000,
            propose_delta_ms=250,
            prevote_ms=500,
            prevote_delta_ms=250,
            precommit_ms=500,
            precommit_delta_ms=250,
            commit_ms=1_000,
        )

    @classmethod
    def for_network(cls, name: str) -> TimeoutConfig:
        """Preset by network name: ``mainnet``, ``testnet`` or ``devnet``."""
        presets = {"mainnet": cls.mainnet, "testnet": cls.testnet, "devnet": cls.devnet}
        try:
            return presets[name]()
        except KeyError:
            raise ValueError(f"unknown network {name!r}") from None
