"""timed: a BFT-finalized UTXO node for TimeCoin."""

__version__ = "0.1.0"
