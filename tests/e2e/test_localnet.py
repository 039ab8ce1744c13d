"""Multi-process masternode networks on loopback: agreement, crashes, halts, late joiners."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from timecoin.api.client import ApiClient
from timecoin.testnet import write_testnet

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _free_base(n_ports: int) -> int:
    for _ in range(200):
        base = random.randrange(20_000, 60_000, 2)
        try:
            socks = []
            for p in range(base, base + n_ports):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return base
    raise RuntimeError("no free port range")


class LocalNet:
    def __init__(self, out: Path, validators: int, observers: int = 0, block_ms: int = 500) -> None:
        self.out = out
        total = validators + observers
        self.base = _free_base(2 * total)
        self.configs = write_testnet(
            out, validators, base_port=self.base, block_interval_ms=block_ms, observers=observers
        )
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, i: int) -> None:
        log = open(self.out / f"node{i + 1}.log", "ab")  # noqa: SIM115
        self.procs[i] = subprocess.Popen(
            [sys.executable, "-m", "timecoin.cli", "--config", str(self.configs[i])],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=dict(os.environ),
        )

    def stop(self, i: int, sig: int = signal.SIGTERM) -> int:
        p = self.procs[i]
        if p.poll() is None:
            p.send_signal(sig)
        return p.wait(20)

    def client(self, i: int) -> ApiClient:
        return ApiClient(f"127.0.0.1:{self.base + 2 * i + 1}")

    def log(self, i: int) -> str:
        return (self.out / f"node{i + 1}.log").read_text()

    async def height(self, i: int) -> int:
        try:
            async with self.client(i) as c:
                return (await c.status()).height
        except Exception:
            return -1

    async def wait_height(self, nodes: list[int], target: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            heights = [await self.height(i) for i in nodes]
            if min(heights) >= target:
                return
            if time.monotonic() > deadline:
                logs = "\n".join(self.log(i)[-1500:] for i in nodes)
                raise TimeoutError(f"heights {heights} < {target}\n{logs}")
            await asyncio.sleep(0.3)

    async def block_id(self, i: int, height: int) -> tuple[bytes, bytes]:
        from timecoin.wire.codec import decode_header

        async with self.client(i) as c:
            resp = await c.get_block(height=height)
            header = decode_header(resp.block.header_bytes)
            return bytes(resp.block_hash), header.utxo_commitment

    def kill_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.fixture
def localnet(tmp_path):
    nets: list[LocalNet] = []

    def make(validators: int, observers: int = 0, block_ms: int = 500) -> LocalNet:
        n = LocalNet(tmp_path / f"net{len(nets)}", validators, observers, block_ms)
        nets.append(n)
        return n

    yield make
    for n in nets:
        n.kill_all()


async def _same_chain(net: LocalNet, nodes: list[int], upto: int) -> None:
    for h in range(1, upto + 1):
        ids = {await net.block_id(i, h) for i in nodes}
        assert len(ids) == 1, f"nodes disagree at height {h}: {ids}"


async def test_four_validators_agree_survive_a_crash_and_resync(localnet):
    net = localnet(4)
    for i in range(4):
        net.start(i)
    async with asyncio.timeout(150):
        await net.wait_height([0, 1, 2, 3], 4, 60)
        await _same_chain(net, [0, 1, 2, 3], 4)
        for i in range(4):
            log = net.log(i)
            assert "Peer connected" in log and "Consensus activated" in log
            assert "Block produced" in log

        # kill -9 one validator (1/4 of the power): the others keep finalizing
        net.stop(3, signal.SIGKILL)
        h = max([await net.height(i) for i in range(3)])
        await net.wait_height([0, 1, 2], h + 3, 60)

        # restart it: it syncs and rejoins
        net.start(3)
        h = max([await net.height(i) for i in range(3)])
        await net.wait_height([3], h, 60)
        await net.wait_height([0, 1, 2, 3], h + 2, 60)
        await _same_chain(net, [0, 1, 2, 3], h + 2)


async def test_one_third_of_power_stopped_halts_then_resumes(localnet):
    net = localnet(3)
    for i in range(3):
        net.start(i)
    async with asyncio.timeout(150):
        await net.wait_height([0, 1, 2], 3, 60)
        assert net.stop(2) == 0
        await asyncio.sleep(1.0)
        halted_at = max([await net.height(i) for i in range(2)])
        await asyncio.sleep(5.0)
        # 2 of 3 equal validators hold exactly 2/3, not more: no block may be final
        assert max([await net.height(i) for i in range(2)]) <= halted_at + 1
        before = [await net.height(i) for i in range(2)]
        net.start(2)
        await net.wait_height([0, 1, 2], max(before) + 3, 90)
        await _same_chain(net, [0, 1, 2], max(before) + 3)


async def test_late_full_node_syncs_from_genesis_and_follows(localnet):
    net = localnet(3, observers=1)
    for i in range(3):
        net.start(i)
    async with asyncio.timeout(150):
        await net.wait_height([0, 1, 2], 8, 60)
        net.start(3)  # a non-validator joins late
        target = max([await net.height(i) for i in range(3)])
        await net.wait_height([3], target, 60)
        assert "Sync finished" in net.log(3)
        await net.wait_height([3], target + 3, 60)  # and keeps following
        await _same_chain(net, [0, 3], target + 3)


def _node_id(net: LocalNet, i: int) -> str:
    from timecoin.core.keys import pubkey_hash
    from timecoin.keyfile import read_key

    return pubkey_hash(read_key(net.out / f"node{i + 1}" / "node_key.json").pubkey).hex()


async def test_partition_heals_and_network_recovers(localnet):
    """A seeded fault schedule: 10% message loss throughout, a 2|2 split from 6 s to 14 s."""
    import json

    net = localnet(4)
    ids = [_node_id(net, i) for i in range(4)]
    sides = [[0, 1], [2, 3]]
    for side in sides:
        others = [ids[j] for j in range(4) if j not in side]
        schedule = {
            "seed": 1234,
            "rules": [
                {"kind": "drop", "peers": ["*"], "probability": 0.1},
                {"kind": "partition", "peers": others, "start_s": 6, "end_s": 14},
            ],
        }
        for i in side:
            net.procs  # noqa: B018 - documents that start() below uses this env
            env = {"TIMECOIN_P2P_FAULTS": json.dumps(schedule)}
            _start_with_env(net, i, env)
    async with asyncio.timeout(180):
        await net.wait_height([0, 1, 2, 3], 2, 60)
        # wait until the split is surely active, then check no side can finalize alone
        await asyncio.sleep(max(0.0, 8.0 - 2.0))
        during = [await net.height(i) for i in range(4)]
        await asyncio.sleep(4.0)
        after = [await net.height(i) for i in range(4)]
        assert max(after) <= max(during) + 1, (during, after)
        # healed at 14 s: everyone moves on together
        await net.wait_height([0, 1, 2, 3], max(after) + 3, 90)
        await _same_chain(net, [0, 1, 2, 3], max(after) + 3)


def _start_with_env(net: LocalNet, i: int, env: dict[str, str]) -> None:
    log = open(net.out / f"node{i + 1}.log", "ab")  # noqa: SIM115
    net.procs[i] = subprocess.Popen(
        [sys.executable, "-m", "timecoin.cli", "--config", str(net.configs[i])],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=dict(os.environ, **env),
    )


async def test_double_signing_validator_is_caught_and_removed(localnet):
    net = localnet(4)
    for i in range(3):
        net.start(i)
    _start_with_env(net, 3, {"TIMED_TEST_BYZANTINE": "double-vote"})
    from timecoin.core.keys import pubkey_hash
    from timecoin.keyfile import read_key

    culprit = pubkey_hash(read_key(net.out / "node4" / "validator_key.json").pubkey)
    async with asyncio.timeout(150):
        await net.wait_height([0, 1, 2], 2, 60)
        deadline = time.monotonic() + 60
        while True:
            async with net.client(0) as c:
                vs = await c.validator_set()
                addrs = {bytes(v.address) for v in vs.validator_set.validators}
            if culprit not in addrs:
                break
            assert time.monotonic() < deadline, "equivocator still in the validator set"
            await asyncio.sleep(0.5)
        assert len(addrs) == 3
        # some block carried the evidence
        h = await net.height(0)
        found = False
        async with net.client(0) as c:
            for height in range(1, h + 1):
                resp = await c.get_block(height=height)
                if len(resp.block.evidence):
                    found = True
                    break
        assert found
        # the three honest validators (300 of 300 power now) keep finalizing
        await net.wait_height([0, 1, 2], h + 3, 60)
        await _same_chain(net, [0, 1, 2], h + 3)


async def test_masternode_registration_joins_then_deregistration_leaves(localnet):
    """The CLI registers a running full node's operator key; it starts signing at H+2."""
    net = localnet(3, observers=1)
    for i in range(4):
        net.start(i)
    from timecoin.core.keys import pubkey_hash
    from timecoin.keyfile import read_key

    operator = pubkey_hash(read_key(net.out / "node4" / "validator_key.json").pubkey)
    rpc = ["--rpc", f"127.0.0.1:{net.base + 1}", "--cookie", str(net.out / "node1" / ".cookie")]

    def cli(*args: str) -> str:
        res = subprocess.run(
            [sys.executable, "-m", "timecoin.cli", "masternode", *args, *rpc],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    async with asyncio.timeout(200):
        await net.wait_height([0, 1, 2, 3], 2, 60)
        out = await asyncio.to_thread(
            cli,
            "register",
            "--tier",
            "silver",
            "--operator-key",
            str(net.out / "node4" / "validator_key.json"),
            "--from-key",
            str(net.out / "faucet.json"),
        )
        collateral = next(ln.split()[1] for ln in out.splitlines() if ln.startswith("collateral:"))
        final_at = int(
            next(ln.split()[2].rstrip(";") for ln in out.splitlines() if ln.startswith("final:"))
        )
        # H+2: the set deciding final_at + 1 does not have it yet; the one for final_at + 2 does
        assert operator.hex() not in await asyncio.to_thread(
            cli, "list", "--height", str(final_at + 1)
        )
        await net.wait_height([0], final_at, 30)
        listing = await asyncio.to_thread(cli, "list", "--height", str(final_at + 2))
        assert operator.hex() in listing and "silver" in listing
        # the new validator signs commits: find its precommit in a later block's last_commit
        deadline = time.monotonic() + 60
        signed = False
        while not signed:
            assert time.monotonic() < deadline, net.log(3)[-2000:]
            h = await net.height(0)
            async with net.client(0) as c:
                resp = await c.get_block(height=h)
                signed = operator in {
                    bytes(s.validator_address) for s in resp.block.last_commit.signatures
                }
            await asyncio.sleep(0.5)

        await asyncio.to_thread(
            cli,
            "deregister",
            "--collateral",
            collateral,
            "--from-key",
            str(net.out / "faucet.json"),
        )
        await asyncio.sleep(2.0)
        listing = await asyncio.to_thread(cli, "list")
        assert operator.hex() not in listing, listing
        h = await net.height(0)
        await net.wait_height([0, 1, 2], h + 2, 60)


async def test_one_trace_follows_a_transaction_across_three_validators(localnet):
    """OTLP export to an in-process collector: spans of node1, node2 and node3 share one trace."""
    from timecoin.core.params import ChainParams
    from timecoin.core.types import OutPoint
    from timecoin.keyfile import read_key
    from timecoin.telemetry.collector import InProcessCollector
    from timecoin.txbuilder import build_transfer

    net = localnet(3)
    async with InProcessCollector() as collector:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"}
        for i in range(3):
            _start_with_env(net, i, env)
        async with asyncio.timeout(120):
            await net.wait_height([0, 1, 2], 2, 60)
            from timecoin.config import load_config

            cfg = load_config(net.configs[0])
            params = ChainParams.for_network(cfg.network.value, cfg.chain_id)
            faucet = read_key(net.out / "faucet.json")
            async with ApiClient.from_cookie(
                f"127.0.0.1:{net.base + 1}", net.out / "node1" / ".cookie"
            ) as c:
                from timecoin.core.address import encode_address

                coins = (
                    await c.list_unspent(encode_address(faucet.address_payload, params.network))
                ).unspent
                u = max(coins, key=lambda x: x.amount)
                op = OutPoint(bytes(u.out_point.txid), u.out_point.index)
                tx = build_transfer(
                    params,
                    faucet,
                    [op],
                    [(b"\x05" * 20, 10**8), (faucet.address_payload, u.amount - 10**8 - 1000)],
                )
                await c.submit(tx)
                await c.wait_final(tx.txid, timeout_s=30)

            def admitted_on_node1(spans):
                return any(s.service == "node1" and s.name == "tx.admit" for s in spans)

            spans = await collector.wait_for(admitted_on_node1, timeout_s=30)
            trace_id = next(
                s.trace_id for s in spans if s.service == "node1" and s.name == "tx.admit"
            )

            def all_three(spans):
                final = {
                    s.service for s in spans if s.trace_id == trace_id and s.name == "tx.final"
                }
                return final >= {"node1", "node2", "node3"}

            spans = await collector.wait_for(all_three, timeout_s=30)
            in_trace = [s for s in spans if s.trace_id == trace_id]
            # Every node saw it final under one trace. node1 admitted it from the API;
            # the others from gossip, or only from the block when the proposal got there
            # first: the proposal carries the trace contexts of its transactions.
            for node in ("node1", "node2", "node3"):
                names = {s.name for s in in_trace if s.service == node}
                assert "tx.final" in names, (node, names)
            assert "tx.admit" in {s.name for s in in_trace if s.service == "node1"}
            # a proposer proposed it, another validator validated the block holding it, and
            # nodes that took part in the decision record the precommit quorum (a node that
            # caught up by sync applies the block without voting on it)
            proposers = {s.service for s in in_trace if s.name == "tx.propose"}
            validators = {s.service for s in in_trace if s.name == "tx.validate"}
            deciders = {s.service for s in in_trace if s.name == "tx.decided"}
            assert proposers and validators - proposers, (proposers, validators)
            assert deciders, in_trace
            assert any(s.name.endswith("SubmitTransaction") for s in in_trace)

            # a proposal's trace continues on the validators that validate its block
            def proposal_validated_elsewhere(spans):
                for p in (s for s in spans if s.name == "block.proposal"):
                    if any(
                        v.trace_id == p.trace_id and v.service != p.service
                        for v in spans
                        if v.name == "block.validate"
                    ):
                        return True
                return False

            await collector.wait_for(proposal_validated_elsewhere, timeout_s=30)

            # and every node traces its consensus rounds
            def rounds_everywhere(spans):
                return {s.service for s in spans if s.name == "consensus.round"} >= {
                    "node1",
                    "node2",
                    "node3",
                }

            await collector.wait_for(rounds_everywhere, timeout_s=30)

            # calls between peers are traced on both ends (server and client spans); the
            # long-lived streams end, and their spans are exported, at a clean shutdown
            for i in range(3):
                assert await asyncio.to_thread(net.stop, i) == 0

            def peer_calls_traced(spans):
                names = {(s.service, s.name) for s in spans}
                return all(
                    (n, "/timecoin.p2p.v1.P2PService/GetPeerStatus") in names
                    or (n, "/timecoin.p2p.v1.P2PService/Gossip") in names
                    for n in ("node1", "node2", "node3")
                )

            try:
                await collector.wait_for(peer_calls_traced, timeout_s=30)
            except TimeoutError:
                seen = sorted({(s.service, s.name) for s in collector.spans if "/" in s.name})
                raise AssertionError(f"peer call spans: {seen}") from None
