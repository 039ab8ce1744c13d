"""Merkle tree over a block's txids, with inclusion proofs.

Construction (RFC 6962 section 2.1 hashing, docs/protocol.md)::

    leaf(x)    = SHA-256(0x00 || x)
    node(l, r) = SHA-256(0x01 || l || r)
    empty tree = SHA-256("")

The tree is built level by level; a level with an odd number of nodes
promotes its last node unchanged to the next level. That yields exactly the
RFC 6962 tree (left subtree = the largest power of two below n) and avoids
Bitcoin's duplicate-last-node rule, whose ambiguity let ``[a, b, c]`` and
``[a, b, c, c]`` share a root (CVE-2012-2459). The 0x00/0x01 prefixes keep a
leaf from ever being confused with an inner node (second-preimage attacks on
proofs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from timecoin.core.types import HASH_LEN

_LEAF = b"\x00"
_NODE = b"\x01"

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of a tree without leaves."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one leaf."""
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an inner node."""
    return hashlib.sha256(_NODE + left + right).digest()


def _next_level(level: list[bytes]) -> list[bytes]:
    # node_hash inline: a block's tree hashes one node per transaction.
    sha = hashlib.sha256
    up = [sha(_NODE + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
    if len(level) % 2:
        up.append(level[-1])  # promoted, never duplicated
    return up


def _leaves(leaves: Sequence[bytes]) -> list[bytes]:
    sha = hashlib.sha256  # leaf_hash inline, as in _next_level
    return [sha(_LEAF + x).digest() for x in leaves]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Return the root of the tree over *leaves* (in order); ``EMPTY_ROOT`` if none."""
    if not leaves:
        return EMPTY_ROOT
    level = _leaves(leaves)
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Return the sibling hashes, bottom up, that prove ``leaves[index]`` is in the tree.

    Levels where the node is promoted contribute no hash. Raises IndexError if
    *index* is out of range (a caller bug, not untrusted input).
    """
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf index {index} out of range for {len(leaves)} leaves")
    level = _leaves(leaves)
    proof: list[bytes] = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        level = _next_level(level)
        index //= 2
    return proof


def verify_merkle_proof(
    leaf: bytes, index: int, count: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Check that *proof* puts *leaf* at *index* of a *count*-leaf tree with *root*.

    The proof must have exactly the length the tree shape implies. *count*
    must come from a trusted source (the block's transaction count): trees of
    different sizes can share a proof shape for the same leaf.
    """
    if not 0 <= index < count or len(root) != HASH_LEN:
        return False
    h = leaf_hash(leaf)
    used = 0
    n = count
    while n > 1:
        if index % 2 == 1 or index + 1 < n:
            if used >= len(proof) or len(proof[used]) != HASH_LEN:
                return False
            sibling = proof[used]
            used += 1
            h = node_hash(sibling, h) if index % 2 else node_hash(h, sibling)
        index //= 2
        n = (n + 1) // 2
    return used == len(proof) and h == root
