"""Chain state over a real LevelDB store: genesis, blocks with transactions, reopen, crashes."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from timecoin.core.errors import BadHeight, ConfigError, Reason
from timecoin.core.genesis import genesis_hash
from timecoin.core.muhash import MuHash3072, coin_element
from timecoin.core.signing import vote_sign_digest
from timecoin.core.types import Commit, CommitSig, OutPoint, Vote, VoteType
from timecoin.node.chainstate import ChainState
from timecoin.rules.manager import PluggyRules, build_plugin_manager
from timecoin.storage.backends import open_store
from timecoin.storage.chainstore import ChainStore
from timecoin.txbuilder import build_transfer


def open_chain(home, backend="leveldb"):
    pm = build_plugin_manager()
    kv = open_store(backend, home.path / "data", {}, pm)
    return ChainState(home.params, home.genesis, ChainStore(kv), PluggyRules(pm))


def commit_for(home, block):
    v = Vote(VoteType.PRECOMMIT, block.header.height, 0, block.hash, home.validator.address_payload)
    sig = home.validator.sign(vote_sign_digest(home.params.chain_id, v))
    return Commit(block.header.height, 0, block.hash, (CommitSig(v.validator_address, sig),))


def produce(chain, home, txs=(), last=None):
    p = chain.build_block(home.validator.address_payload, int(time.time() * 1000), last, list(txs))
    c = commit_for(home, p.block)
    chain.commit(p.block, p.block_bytes, p.result, c)
    return p, c


def recompute_commitment(store):
    h = MuHash3072()
    for op, coin in store.iter_all_coins():
        h.insert(coin_element(op, coin))
    return h.digest()


def test_genesis_then_blocks_then_reopen(dev_home):
    chain = open_chain(dev_home)
    assert chain.height == 0 and chain.tip_hash == genesis_hash(dev_home.genesis)
    genesis_op = OutPoint(genesis_hash(dev_home.genesis), 0)
    coin = chain.store.get_coin(genesis_op)
    assert coin is not None and coin.pubkey_hash == dev_home.wallet.address_payload

    last = None
    p, last = produce(chain, dev_home)
    pay = build_transfer(
        dev_home.params,
        dev_home.wallet,
        [genesis_op],
        [
            (b"\x01" * 20, 5 * 10**8),
            (dev_home.wallet.address_payload, coin.amount - 5 * 10**8 - 10_000),
        ],
    )
    p2, last = produce(chain, dev_home, [pay], last)
    assert [t.txid for t in p2.block.txs][1:] == [pay.txid]
    assert chain.store.get_coin(genesis_op) is None
    assert chain.store.get_coin(OutPoint(pay.txid, 0)).amount == 5 * 10**8
    # coinbase pays 100 TIME + fee to the reward address (proposer at height 2 signed commit 1)
    cb = p2.block.txs[0]
    assert sum(o.amount for o in cb.body.outputs) == 100 * 10**8 + 10_000
    info = chain.tip_info()
    assert info.utxo_commitment == recompute_commitment(chain.store)
    chain.store.close()

    again = open_chain(dev_home)
    assert again.tip_info() == info
    assert again.priorities == chain.priorities
    assert again.seen_commit(2) == last
    # spent outputs do not come back after reopening the store
    assert again.store.get_coin(genesis_op) is None
    p3, _ = produce(again, dev_home, [], last)
    assert p3.block.header.height == 3
    again.store.close()


def test_double_spend_candidates_are_skipped_not_fatal(dev_home):
    chain = open_chain(dev_home)
    op = OutPoint(genesis_hash(dev_home.genesis), 0)
    amount = chain.store.get_coin(op).amount
    a = build_transfer(dev_home.params, dev_home.wallet, [op], [(b"\x02" * 20, amount - 10_000)])
    b = build_transfer(dev_home.params, dev_home.wallet, [op], [(b"\x03" * 20, amount - 20_000)])
    p, _ = produce(chain, dev_home, [a, b])
    assert [t.txid for t in p.block.txs[1:]] == [a.txid]
    chain.store.close()


def test_other_genesis_is_refused(dev_home, make_home, tmp_path):
    chain = open_chain(dev_home)
    chain.store.close()
    other = make_home(tmp_path / "other")
    pm = build_plugin_manager()
    kv = open_store("leveldb", dev_home.path / "data", {}, pm)
    with pytest.raises(ConfigError, match="another genesis"):
        ChainState(other.params, other.genesis, ChainStore(kv), PluggyRules(pm))
    kv.close()


def test_commit_must_extend_tip(dev_home):
    chain = open_chain(dev_home)
    p, c = produce(chain, dev_home)
    with pytest.raises(BadHeight) as ei:
        chain.commit(p.block, p.block_bytes, p.result, c)
    assert ei.value.reason == Reason.BAD_HEIGHT
    chain.store.close()


CRASHER = textwrap.dedent(
    """
    import sys, time
    from tests.node.conftest import DevHome
    from tests.node.test_chainstate import open_chain, produce
    from pathlib import Path
    home = DevHome(Path(sys.argv[1]))
    chain = open_chain(home)
    last = chain.seen_commit(chain.height)
    for _ in range(5):
        _, last = produce(chain, home, [], last)
    """
)


@pytest.mark.parametrize(
    ("point", "expected_height"), [("block_write.before", 2), ("block_write.after", 3)]
)
def test_crash_at_failpoint_recovers(dev_home, point, expected_height):
    """Crash exactly at a persistence boundary (as Bitcoin Core's dbcrash test) and reopen."""
    import os

    env = dict(os.environ, TIMED_FAILPOINTS=f"{point}=crash@3")
    res = subprocess.run(
        [sys.executable, "-c", CRASHER, str(dev_home.path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert res.returncode == 86, res.stderr
    chain = open_chain(dev_home)
    assert chain.height == expected_height
    assert chain.tip_info().utxo_commitment == recompute_commitment(chain.store)
    # and the chain goes on from there
    produce(chain, dev_home, [], chain.seen_commit(chain.height))
    assert chain.height == expected_height + 1
    chain.store.close()


def test_own_template_result_equals_full_validation(dev_home):
    """The proposer skips the per-tx loop for its own template: both paths agree."""
    chain = open_chain(dev_home)
    _, last = produce(chain, dev_home)
    genesis_op = OutPoint(genesis_hash(dev_home.genesis), 0)
    split = build_transfer(
        dev_home.params,
        dev_home.wallet,
        [genesis_op],
        [(dev_home.wallet.address_payload, 10**10)] * 20,
    )
    _, last = produce(chain, dev_home, [split], last)
    pays = [
        build_transfer(
            dev_home.params, dev_home.wallet, [OutPoint(split.txid, i)], [(bytes([i]) * 20, 10**9)]
        )
        for i in range(20)
    ]
    now = int(time.time() * 1000)
    p = chain.build_block(dev_home.validator.address_payload, now, last, pays)
    full = chain.validate(p.block, now, signatures_checked=True)
    assert full == p.result and len(p.block.txs) == 21
    assert full.fees > 0 and len(full.changes.spent) == 20 and len(full.changes.created) == 21
    chain.commit(p.block, p.block_bytes, p.result, commit_for(dev_home, p.block))
    assert chain.tip_info().utxo_commitment == recompute_commitment(chain.store)
    chain.store.close()


def test_template_commitment_is_still_checked_against_the_header(dev_home):
    from dataclasses import replace

    from timecoin.core.block import build_block_template
    from timecoin.core.errors import BadUtxoCommitment

    chain = open_chain(dev_home)
    now = int(time.time() * 1000)
    p = chain.build_block(dev_home.validator.address_payload, now, None, [])
    ctx = chain._context(now, dev_home.validator.address_payload, ())
    t = build_block_template(
        [],
        ctx,
        chain.store,
        chain.rules,
        chain.muhash,
        proposer=chain.validators(1).get(dev_home.validator.address_payload),
        last_commit=None,
        make_coinbase=chain._make_coinbase,
    )
    t = replace(t, txs=p.block.txs)
    assert chain.validate(p.block, now, template=t) == p.result
    with pytest.raises(BadUtxoCommitment):
        chain.validate(p.block, now, template=replace(t, utxo_commitment=bytes(32)))
    with pytest.raises(ValueError):
        chain.validate(p.block, now, template=replace(t, txs=()))
    chain.store.close()
