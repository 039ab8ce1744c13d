"""The client CLI commands against a real listener (fake node) running in a background thread."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from api_fake_node import TIME, FakeNode, pay, test_key
from click.testing import CliRunner

from timecoin.api.server import ApiServer, ApiSettings
from timecoin.cli_client import (
    check_built_body,
    format_time_units,
    parse_time_amount,
    register,
    resolve_target,
)
from timecoin.config import dump_config, parse_config
from timecoin.core.address import encode_address
from timecoin.core.errors import InvalidTransaction, WrongChain
from timecoin.core.types import Network, OutPoint, TxBody, TxIn, TxOut
from timecoin.keyfile import write_key
from timecoin.wire.codec import encode_tx_body

ALICE = test_key(1)
BOB = test_key(2)


class Background:
    """An ApiServer over a FakeNode on its own event loop thread; commits blocks itself."""

    def __init__(self, home: Path) -> None:
        self.node = FakeNode()
        self.home = home
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.stop_event: asyncio.Event | None = None
        self.auto_commit = True

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self.stop_event = asyncio.Event()
        self.server = ApiServer(
            self.node, ApiSettings(listen="127.0.0.1:0", cookie_file=self.home / ".cookie")
        )
        await self.server.start()
        self.ready.set()
        while not self.stop_event.is_set():
            if self.auto_commit and self.node.mempool:
                self.node.commit_block()
            try:
                await asyncio.wait_for(self.stop_event.wait(), 0.1)
            except TimeoutError:
                pass
        await self.server.stop(0)

    def call(self, fn):  # type: ignore[no-untyped-def]
        """Run *fn* on the server's loop thread and return its result."""
        done = threading.Event()
        box = []

        def run() -> None:
            box.append(fn())
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(10)
        return box[0]

    def stop(self) -> None:
        assert self.stop_event is not None
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(10)


@pytest.fixture
def node_home(tmp_path: Path) -> Iterator[Background]:
    home = tmp_path / "home"
    home.mkdir()
    bg = Background(home)
    bg.thread.start()
    assert bg.ready.wait(10)
    cfg = parse_config({"network": "devnet", "api": {"listen": f"127.0.0.1:{bg.server.port}"}})
    (home / "config.toml").write_text(dump_config(cfg))
    write_key(home / "dev_wallet.json", ALICE, Network.TEST)
    bg.call(lambda: bg.node.fund(ALICE, [10 * TIME, 5 * TIME]))
    yield bg
    bg.stop()


def _cli() -> click.Group:
    @click.group()
    def timed() -> None:
        pass

    register(timed)
    return timed


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(_cli(), list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def addr(key) -> str:  # type: ignore[no-untyped-def]
    return encode_address(key.address_payload, Network.TEST)


def test_amounts() -> None:
    assert parse_time_amount("1.5") == 150_000_000
    assert parse_time_amount("0.00000001") == 1
    assert format_time_units(150_000_000) == "1.5" and format_time_units(2 * TIME) == "2"
    for bad in ("0", "-1", "abc", "0.000000001", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_time_amount(bad)


def test_status_balance_send_tx_block(node_home: Background) -> None:
    home = str(node_home.home)
    code, out, _ = _invoke("status", "--home", home)
    assert code == 0 and "timecoin-devnet-1 (devnet)" in out and "height:" in out

    code, out, _ = _invoke("wallet", "balance", addr(ALICE), "--home", home)
    assert code == 0 and out.strip() == "15 TIME in 2 outputs at height 0"

    code, out, err = _invoke(
        "wallet", "send", "--to", addr(BOB), "--amount", "2.5", "--home", home, "--memo", "hi"
    )
    assert code == 0, err
    lines = dict(line.split(":", 1) for line in out.strip().splitlines())
    txid = lines["txid"].strip()
    assert lines["final"].strip().startswith("height 1 block ")

    code, out, _ = _invoke("wallet", "balance", addr(BOB), "--home", home)
    assert out.strip() == "2.5 TIME in 1 outputs at height 1"

    code, out, err = _invoke("tx", txid, "--home", home)
    assert code == 0, err
    assert "status:   FINAL" in out and "2.5 TIME to " + addr(BOB) in out
    assert "proof:    verified (merkle proof; commit signed by 100 of 100)" in out
    assert "memo:     hi" in out

    code, out, err = _invoke("block", "1", "--home", home)
    assert code == 0, err
    assert "transactions:    1" in out and txid in out and "1 precommits" in out
    block_hash = next(line.split()[-1] for line in out.splitlines() if line.startswith("hash:"))
    code, out2, _ = _invoke("block", block_hash, "--home", home)
    assert out2 == out


def test_errors_print_the_reason_not_a_traceback(node_home: Background) -> None:
    home = str(node_home.home)
    code, out, err = _invoke("tx", "00" * 32, "--home", home)
    assert code == 1 and err.startswith("error: NOT_FOUND: ") and "Traceback" not in err
    code, _, err = _invoke("block", "99", "--home", home)
    assert code == 1 and err.startswith("error: NOT_FOUND")
    code, _, err = _invoke("wallet", "balance", "TIME0nope", "--home", home)
    assert code == 1 and err.startswith("error: BAD_ADDRESS")
    code, _, err = _invoke("wallet", "send", "--to", addr(BOB), "--amount", "1000", "--home", home)
    assert code == 1 and err.startswith("error: INSUFFICIENT_FUNDS")
    # No cookie: submission is refused before anything is built.
    (node_home.home / "stolen.cookie").write_text("ab" * 32)
    code, _, err = _invoke(
        "wallet",
        "send",
        "--to",
        addr(BOB),
        "--amount",
        "1",
        "--home",
        str(node_home.home),
        "--cookie",
        str(node_home.home / "stolen.cookie"),
    )
    assert code == 1 and err.startswith("error: UNAUTHENTICATED")
    code, _, err = _invoke("status", "--rpc", "127.0.0.1:1")
    assert code == 1 and err.startswith("error: INTERNAL: cannot reach the node")


def test_pending_tx_is_shown_as_pending(node_home: Background) -> None:
    bg = node_home
    bg.auto_commit = False
    coin = min(bg.call(lambda: [op for op, _ in bg.node.utxo.items()]))
    tx = pay(bg.node, ALICE, coin, TIME, BOB.address_payload, change=TIME)
    bg.call(lambda: bg.node._admit(tx))
    code, out, err = _invoke("tx", tx.txid.hex(), "--home", str(bg.home))
    assert code == 0, err
    assert "status: PENDING (in the mempool)" in out
    code, out, err = _invoke("tx", "zz", "--home", str(bg.home))
    assert code == 2 and "TXID must be 64 hex" in err


def test_wallet_new_writes_a_private_key_file(node_home: Background) -> None:
    code, out, err = _invoke("wallet", "new", "--home", str(node_home.home))
    assert code == 0, err
    address = out.splitlines()[0].split()[-1]
    path = Path(out.splitlines()[1].split(maxsplit=2)[-1])
    assert path.parent == node_home.home / "wallets" and address.startswith("TIME0")
    assert json.loads(path.read_text())["address"] == address
    assert path.stat().st_mode & 0o777 == 0o600


def test_resolve_target_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platformdirs.user_data_dir", lambda *a, **k: str(tmp_path / "data"))
    # Nothing exists: mainnet's default port on loopback.
    t = resolve_target(None, None, None, None)
    assert t.rpc == "127.0.0.1:24001" and t.home is None
    assert resolve_target(None, "testnet", None, None).rpc == "127.0.0.1:24101"
    # Only a devnet home exists: it is found without flags.
    dev = tmp_path / "data" / "devnet"
    dev.mkdir(parents=True)
    cfg = parse_config({"network": "devnet", "api": {"listen": "0.0.0.0:25000"}})
    (dev / "config.toml").write_text(dump_config(cfg))
    t = resolve_target(None, None, None, None)
    assert t.home == dev and t.rpc == "127.0.0.1:25000" and t.cookie_file == dev / ".cookie"
    assert resolve_target(None, None, "10.0.0.1:1", None).rpc == "10.0.0.1:1"


def test_send_refuses_to_sign_a_body_that_pays_someone_else() -> None:
    net = Network.TEST
    coin_in = TxIn(prev_out=OutPoint(bytes(32), 0), pubkey=ALICE.pubkey)
    good = TxBody(1, "timecoin-devnet-1", (coin_in,), (TxOut(TIME, BOB.address_payload),))
    kwargs = dict(
        chain_id="timecoin-devnet-1",
        network=net,
        pubkey=ALICE.pubkey,
        to=BOB.address_payload,
        amount=TIME,
        fee=100,
        max_fee=TIME,
    )
    assert check_built_body(encode_tx_body(good, net), **kwargs) == good
    thief = TxBody(
        1,
        "timecoin-devnet-1",
        (coin_in,),
        (TxOut(TIME, BOB.address_payload), TxOut(5 * TIME, test_key(9).address_payload)),
    )
    with pytest.raises(InvalidTransaction):
        check_built_body(encode_tx_body(thief, net), **kwargs)
    other_chain = TxBody(1, "timecoin-testnet-1", (coin_in,), good.outputs)
    with pytest.raises(WrongChain):
        check_built_body(encode_tx_body(other_chain, net), **kwargs)
    with pytest.raises(Exception, match="max-fee"):
        check_built_body(encode_tx_body(good, net), **{**kwargs, "fee": 2 * TIME})
