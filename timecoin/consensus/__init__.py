"""Tendermint BFT consensus as a pure state machine (no I/O, no clock, no randomness).

See docs/consensus.md. Modules:

- ``engine``: the round state machine of Algorithm 1 of "The latest gossip on
  BFT consensus" (Buchman, Kwon, Milosevic 2018), events in, actions out.
- ``vote_set``: per-height vote bookkeeping with weighted quorums and evidence.
- ``proposer``: CometBFT's weighted proposer-priority rotation.
- ``guard``: the double-sign guard decision (persisted by ``timecoin.node.privval``).
- ``timeouts``: per-round growing timeouts and network presets.
"""
