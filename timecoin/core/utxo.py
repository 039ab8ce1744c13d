"""UTXO view protocol and the changes a block makes to the UTXO set.

(Interface fixed first so storage and consensus can build on it; the apply and
undo functions live below.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from timecoin.core.types import Coin, OutPoint


class UtxoView(Protocol):
    """Read access to a UTXO set (chain store, mempool overlay, test dict)."""

    def get_coin(self, outpoint: OutPoint) -> Coin | None:
        """The unspent coin at *outpoint*, or None if it does not exist or is spent."""
        ...


@dataclass(frozen=True, slots=True)
class UtxoChanges:
    """What applying one block does to the UTXO set.

    ``spent`` is also the block's undo data: undoing the block removes
    ``created`` and restores ``spent``. Coins both created and spent inside the
    same block appear in neither list.
    """

    spent: tuple[tuple[OutPoint, Coin], ...]
    created: tuple[tuple[OutPoint, Coin], ...]
