"""timed: a BFT-finalized UTXO node for TimeCoin."""

from timecoin import compiled  # noqa: F401 - runs its check before any compiled module loads

__version__ = "0.1.0"
