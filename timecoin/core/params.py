"""Chain parameters: the numbers the ledger rules are checked against.

One ``ChainParams`` value per network. Every node of a network must use the
same values (they are consensus rules), so they are constants here rather than
config keys; only ``chain_id`` can be overridden (private test networks).

Choices (docs/ledger.md explains them):

- Fees are a minimum *rate*: ``fee >= ceil(min_fee_units_per_kb * size / 1000)``
  where ``size`` is the encoded size of the whole transaction (body and
  signatures). 1,000 units per kB is 0.00001 TIME per kB.
- The dust limit rejects outputs that cost more to spend than they are worth
  and stops zero-value "padding" outputs (an original TimeCoin bug).
- Coinbase maturity is 0: blocks are final once committed (BFT, no reorgs),
  so a reward can never be taken back and needs no waiting period as in
  Bitcoin. The check exists and a network may set a positive value.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from timecoin.core.errors import ConfigError
from timecoin.core.types import BLOCK_REWARD_UNITS, Network

TX_VERSION = 1
"""The only transaction body version this node accepts."""

BLOCK_VERSION = 1
"""The only block header version this node accepts."""

MAX_TX_BYTES = 100_000
MAX_BLOCK_BYTES = 2_000_000
MAX_BLOCK_TXS = 10_000
MAX_INPUTS = 1_000
MAX_OUTPUTS = 1_000
MAX_MEMO_BYTES = 256
MAX_EVIDENCE_PER_BLOCK = 64
MIN_FEE_UNITS_PER_KB = 1_000
DUST_LIMIT_UNITS = 1_000
MAX_FUTURE_BLOCK_TIME_MS = 10_000


@dataclass(frozen=True, slots=True)
class ChainParams:
    """Consensus constants of one network."""

    chain_id: str
    """Included in every signed digest; a signature for one chain never verifies on another."""
    network_name: str
    """``mainnet``, ``testnet`` or ``devnet``."""
    network: Network
    """Address network digit."""
    tx_version: int = TX_VERSION
    block_version: int = BLOCK_VERSION
    max_tx_bytes: int = MAX_TX_BYTES
    """Bound on ``Transaction.size`` (whole encoded transaction)."""
    max_block_bytes: int = MAX_BLOCK_BYTES
    max_block_txs: int = MAX_BLOCK_TXS
    """Bound on the number of transactions in a block, coinbase included."""
    max_inputs: int = MAX_INPUTS
    max_outputs: int = MAX_OUTPUTS
    """Bound on outputs of a non-coinbase transaction (a coinbase is bounded by the set size)."""
    max_memo_bytes: int = MAX_MEMO_BYTES
    max_evidence: int = MAX_EVIDENCE_PER_BLOCK
    min_fee_units_per_kb: int = MIN_FEE_UNITS_PER_KB
    """Minimum fee in units per 1000 bytes of ``Transaction.size``."""
    dust_limit_units: int = DUST_LIMIT_UNITS
    """Smallest output amount a non-coinbase transaction may create."""
    block_reward_units: int = BLOCK_REWARD_UNITS
    """New coins per block; a coinbase pays at most this plus the block's fees."""
    coinbase_maturity: int = 0
    """Blocks before a coinbase output may be spent; 0 because BFT blocks are final."""
    max_future_block_time_ms: int = MAX_FUTURE_BLOCK_TIME_MS
    """How far ahead of the local clock a block's time may be (the caller applies it)."""
    block_interval_ms: int = 30_000
    """Target time between blocks (consensus timeouts derive from it)."""

    @classmethod
    def for_network(cls, name: str, chain_id: str | None = None) -> ChainParams:
        """Defaults for ``mainnet``, ``testnet`` or ``devnet``; *chain_id* overrides the default.

        Raises ConfigError for an unknown network name or an invalid chain id.
        """
        try:
            base = _DEFAULTS[name]
        except KeyError:
            raise ConfigError(
                f"unknown network {name!r}; expected mainnet, testnet or devnet"
            ) from None
        if chain_id is None:
            return base
        raw = chain_id.encode()
        if not 1 <= len(raw) <= 64:
            raise ConfigError("chain_id must be 1..64 bytes")
        return replace(base, chain_id=chain_id)

    def min_fee(self, size: int) -> int:
        """Return the smallest fee in units for a transaction of *size* bytes (rounded up)."""
        return (self.min_fee_units_per_kb * size + 999) // 1000


_DEFAULTS: dict[str, ChainParams] = {
    "mainnet": ChainParams(
        chain_id="timecoin-mainnet-1", network_name="mainnet", network=Network.MAIN
    ),
    "testnet": ChainParams(
        chain_id="timecoin-testnet-1", network_name="testnet", network=Network.TEST
    ),
    "devnet": ChainParams(
        chain_id="timecoin-devnet-1",
        network_name="devnet",
        network=Network.TEST,
        block_interval_ms=1_000,
    ),
}
