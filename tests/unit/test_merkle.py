"""Merkle tree: RFC 6962 shape, proofs, and resistance to the CVE-2012-2459 mutation."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timecoin.core.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    merkle_proof,
    merkle_root,
    node_hash,
    verify_merkle_proof,
)


def _h(b: bytes) -> bytes:
    return hashlib.sha256(b).digest()


def _rfc6962_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1 MTH, written recursively as the RFC states it."""
    n = len(leaves)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + _rfc6962_root(leaves[:k]) + _rfc6962_root(leaves[k:]))


FIVE_ROOT = "1a5bc16137527daa24003b99e35095b4d66d4c997f8986a46842f3cc4a81e275"


def _txids(n: int) -> list[bytes]:
    return [_h(i.to_bytes(4, "big")) for i in range(n)]


def test_empty_and_single() -> None:
    assert merkle_root([]) == EMPTY_ROOT == _h(b"")
    a = _h(b"a")
    assert merkle_root([a]) == _h(b"\x00" + a) == leaf_hash(a)


def test_small_trees_by_hand() -> None:
    a, b, c = _txids(3)
    la, lb, lc = (_h(b"\x00" + x) for x in (a, b, c))
    ab = _h(b"\x01" + la + lb)
    assert merkle_root([a, b]) == ab
    # Odd node is promoted, not paired with itself.
    assert merkle_root([a, b, c]) == _h(b"\x01" + ab + lc)
    assert node_hash(ab, lc) == merkle_root([a, b, c])


def test_fixed_vector() -> None:
    # Regression vector (docs/protocol.md): leaves SHA-256(i as u32 BE) for i in 0..4.
    assert merkle_root(_txids(5)).hex() == FIVE_ROOT


@pytest.mark.parametrize("n", list(range(0, 40)) + [127, 128, 129, 1000])
def test_matches_rfc6962(n: int) -> None:
    assert merkle_root(_txids(n)) == _rfc6962_root(_txids(n))


def test_duplicate_last_leaf_changes_root() -> None:
    # CVE-2012-2459: in Bitcoin [a, b, c] and [a, b, c, c] share a root.
    a, b, c = _txids(3)
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])
    a, b, c, d, e = _txids(5)
    assert merkle_root([a, b, c, d, e]) != merkle_root([a, b, c, d, e, e])


def test_leaf_is_not_an_inner_node() -> None:
    # Without domain separation the two-leaf root would equal a one-leaf tree over la||lb.
    a, b = _txids(2)
    assert merkle_root([a, b]) != merkle_root([leaf_hash(a) + leaf_hash(b)])


@given(st.lists(st.binary(min_size=32, max_size=32), max_size=40))
def test_deterministic(leaves: list[bytes]) -> None:
    assert merkle_root(leaves) == merkle_root(list(leaves))
    assert merkle_root(leaves) == _rfc6962_root(leaves)


@given(
    st.lists(st.binary(min_size=32, max_size=32), min_size=2, max_size=30, unique=True), st.data()
)
def test_reordering_changes_root(leaves: list[bytes], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(leaves) - 1))
    j = data.draw(st.integers(0, len(leaves) - 1).filter(lambda x: x != i))
    swapped = list(leaves)
    swapped[i], swapped[j] = swapped[j], swapped[i]
    assert merkle_root(swapped) != merkle_root(leaves)


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40), st.data())
def test_proofs_verify(leaves: list[bytes], data: st.DataObject) -> None:
    root = merkle_root(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    proof = merkle_proof(leaves, i)
    assert verify_merkle_proof(leaves[i], i, len(leaves), proof, root)
    # Another leaf, position, or a tampered/truncated/extended proof is refused. (The
    # count is not bound by the proof alone; a block carries its tx count.)
    assert not verify_merkle_proof(_h(leaves[i]), i, len(leaves), proof, root)
    if len(leaves) > 1:
        j = (i + 1) % len(leaves)
        if leaves[j] != leaves[i]:
            assert not verify_merkle_proof(leaves[i], j, len(leaves), proof, root)
    if proof:
        bad = [bytes(32)] + proof[1:]
        assert not verify_merkle_proof(leaves[i], i, len(leaves), bad, root)
        assert not verify_merkle_proof(leaves[i], i, len(leaves), proof[:-1], root)
    assert not verify_merkle_proof(leaves[i], i, len(leaves), proof + [bytes(32)], root)


def test_proof_exhaustive_small() -> None:
    for n in range(1, 34):
        leaves = _txids(n)
        root = merkle_root(leaves)
        for i in range(n):
            proof = merkle_proof(leaves, i)
            assert verify_merkle_proof(leaves[i], i, n, proof, root)
            assert len(proof) <= max(1, (n - 1).bit_length())


def test_verify_rejects_out_of_range_and_bad_sizes() -> None:
    leaves = _txids(4)
    root = merkle_root(leaves)
    proof = merkle_proof(leaves, 0)
    assert not verify_merkle_proof(leaves[0], -1, 4, proof, root)
    assert not verify_merkle_proof(leaves[0], 4, 4, proof, root)
    assert not verify_merkle_proof(leaves[0], 0, 0, [], EMPTY_ROOT)
    assert not verify_merkle_proof(leaves[0], 0, 4, proof, root[:31])
    assert not verify_merkle_proof(leaves[0], 0, 4, [proof[0][:31], proof[1]], root)


def test_proof_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        merkle_proof(_txids(3), 3)
    with pytest.raises(IndexError):
        merkle_proof([], 0)
