"""``timed`` client commands: status, wallet, tx, block — all over the client gRPC API.

Which node they talk to:

- ``--rpc HOST:PORT`` wins (env ``TIMED_RPC``).
- Otherwise the home directory's ``config.toml`` gives ``api.listen`` and the
  cookie file. The home is ``--home`` (env ``TIMED_HOME``); without it, the
  default home of ``--network``; without that either, the first default home
  that exists, in the order mainnet, testnet, devnet. So right after
  ``timed serve --dev`` on a fresh machine, ``timed status`` finds the dev node,
  and on an operator's machine it finds the mainnet node.

Errors print ``error: REASON: message`` and exit with status 1; no traceback.

``wallet send`` never signs what it has not checked: it decodes the body the
node built and verifies the chain id, that every input is ours, that the
outputs are exactly the payment plus change to us, and that the fee is within
``--max-fee``; it recomputes the signing digest itself. The key never leaves
this process.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

import click

from timecoin.config import DEFAULT_PORTS, NetworkName, load_config, resolve
from timecoin.core.errors import ConfigError, NotFound, TimecoinError
from timecoin.core.types import UNITS_PER_TIME, Network

T = TypeVar("T")

DEFAULT_MAX_FEE_UNITS = UNITS_PER_TIME // 10
"""``wallet send`` refuses to sign a transaction paying more fee than 0.1 TIME unless told."""


# --- formatting -------------------------------------------------------------------


def format_time_units(units: int) -> str:
    """Return *units* as a TIME amount: ``150000000`` -> ``1.5``."""
    whole, frac = divmod(units, UNITS_PER_TIME)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:08d}".rstrip("0")


def parse_time_amount(text: str) -> int:
    """Parse a TIME amount (up to 8 decimals) into units; ValueError if it is not one."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not value.is_finite() or value <= 0:
        raise ValueError("amount must be positive")
    units = value * UNITS_PER_TIME
    if units != units.to_integral_value():
        raise ValueError("at most 8 decimal places (1 unit = 0.00000001 TIME)")
    return int(units)


def _ms_to_iso(ms: int) -> str:
    if not ms:
        return "-"
    dt = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _echo_rows(rows: list[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        click.echo(f"{k + ':':<{width + 1}} {v}")


# --- where the node is ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """The node a command talks to."""

    rpc: str
    cookie_file: Path | None
    home: Path | None
    network: NetworkName | None
    tls_ca: Path | None = None


def _find_home(home: Path | None, network: str | None) -> Path | None:
    from timecoin.home import CONFIG_FILE, default_home

    if home is not None:
        return home
    if network is not None:
        return default_home(NetworkName(network))
    for net in (NetworkName.MAINNET, NetworkName.TESTNET, NetworkName.DEVNET):
        candidate = default_home(net)
        if (candidate / CONFIG_FILE).exists():
            return candidate
    return None


def _client_address(listen: str) -> str:
    """Return a listen address as a client dials it (a wildcard bind is reached on loopback)."""
    host, _, port = listen.rpartition(":")
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


def resolve_target(
    home: Path | None,
    network: str | None,
    rpc: str | None,
    cookie: Path | None,
    tls_ca: Path | None = None,
) -> Target:
    """Work out the node address, cookie file and network from the options (module docstring)."""
    from timecoin.home import CONFIG_FILE

    found = _find_home(home, network)
    net = NetworkName(network) if network else None
    listen = None
    cookie_file = cookie
    if found is not None and (found / CONFIG_FILE).exists():
        cfg = load_config(found / CONFIG_FILE)
        net = net or cfg.network
        listen = cfg.api.listen
        if cookie_file is None:
            cookie_file = resolve(found, cfg.api.cookie_file)
    elif home is not None and rpc is None:
        raise ConfigError(f"{home}: no {CONFIG_FILE} here; run `timed init` or pass --rpc")
    if rpc is None:
        if listen is None:
            listen = f"127.0.0.1:{DEFAULT_PORTS[net or NetworkName.MAINNET][1]}"
        rpc = _client_address(listen)
    return Target(rpc=rpc, cookie_file=cookie_file, home=found, network=net, tls_ca=tls_ca)


def _client(target: Target, *, auth: bool = False) -> Any:
    from timecoin.api.auth import read_cookie
    from timecoin.api.client import ApiClient

    token = None
    if auth:
        if target.cookie_file is None:
            raise ConfigError("no cookie file known; pass --cookie or --home")
        token = read_cookie(target.cookie_file)
    root = target.tls_ca.read_bytes() if target.tls_ca is not None else None
    return ApiClient(target.rpc, token=token, root_certificates=root)


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run *coro*; print a TimecoinError as ``error: REASON: message`` and exit 1."""
    try:
        return asyncio.run(coro)
    except TimecoinError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _errors_as_messages(fn: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return fn(*args, **kwargs)
        except TimecoinError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper


def _node_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --home/--network/--rpc/--cookie/--tls-ca and pass a ``target`` instead."""

    @click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="TIMED_HOME",
        help="Node home directory (config.toml, cookie). Default: see `timed status --help`.",
    )
    @click.option(
        "--network",
        type=click.Choice([n.value for n in NetworkName]),
        default=None,
        help="Use this network's default home and port.",
    )
    @click.option(
        "--rpc",
        metavar="HOST:PORT",
        envvar="TIMED_RPC",
        help="Client API address (default: api.listen of the home's config.toml).",
    )
    @click.option(
        "--cookie",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Credential file (default: the home's api.cookie_file).",
    )
    @click.option(
        "--tls-ca",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
        help="CA certificate (PEM) of a TLS client listener.",
    )
    @functools.wraps(fn)
    @_errors_as_messages
    def wrapper(
        home: Path | None,
        network: str | None,
        rpc: str | None,
        cookie: Path | None,
        tls_ca: Path | None,
        **kwargs: Any,
    ) -> Any:
        return fn(target=resolve_target(home, network, rpc, cookie, tls_ca), **kwargs)

    return wrapper


async def _network_of_node(client: Any) -> tuple[str, Network]:
    from timecoin.genesis import network_of

    s = await client.status()
    return s.chain_id, network_of(s.network)


# --- commands -----------------------------------------------------------------------

_TARGET_HELP = (
    "\n\nThe node is found from --rpc, else the home's config.toml (--home, else the "
    "default home of --network, else the first existing default home: mainnet, testnet, "
    "devnet)."
)


@click.command(help="Show the node's chain status." + _TARGET_HELP)
@_node_options
def status(target: Target) -> None:
    async def go() -> Any:
        async with _client(target) as c:
            return await c.status()

    s = _run(go())
    _echo_rows(
        [
            ("chain", f"{s.chain_id} ({s.network})"),
            ("height", s.height),
            ("tip", s.tip_hash.hex() or "-"),
            ("tip time", _ms_to_iso(s.tip_time_ms)),
            ("utxo commitment", s.utxo_commitment.hex() or "-"),
            ("genesis", s.genesis_hash.hex() or "-"),
            ("mempool", f"{s.mempool_size} txs"),
            ("peers", s.peers),
            ("syncing", "yes" if s.syncing else "no"),
            ("node", f"timed {s.node_version} id {s.node_id.hex()}"),
        ]
    )


@click.group(help="Keys, balances and payments." + _TARGET_HELP)
def wallet() -> None:
    pass


@wallet.command("new")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Key file to write (default: <home>/wallets/<address>.json).",
)
@_node_options
def wallet_new(target: Target, out: Path | None) -> None:
    """Create a new key file (mode 0600) and print its address.

    The network comes from the home's config (or --network); only if neither is
    known is the node asked.
    """
    from timecoin.core.address import encode_address
    from timecoin.core.keys import KeyPair
    from timecoin.genesis import network_of
    from timecoin.keyfile import write_key

    if target.network is not None:
        net = network_of(target.network)
    else:

        async def ask() -> Network:
            async with _client(target) as c:
                return (await _network_of_node(c))[1]

        net = _run(ask())
    key = KeyPair.generate()
    address = encode_address(key.address_payload, net)
    if out is None:
        if target.home is None:
            raise ConfigError("no home directory; pass --out FILE or --home")
        out = target.home / "wallets" / f"{address}.json"
    write_key(out, key, net)
    click.echo(f"address:  {address}")
    click.echo(f"key file: {out}")


@wallet.command("balance")
@click.argument("address")
@_node_options
def wallet_balance(target: Target, address: str) -> None:
    """Show the finalized balance of ADDRESS."""

    async def go() -> tuple[int, int, int]:
        async with _client(target) as c:
            balance: tuple[int, int, int] = await c.balance(address)
            return balance

    total, count, height = _run(go())
    click.echo(f"{format_time_units(total)} TIME in {count} outputs at height {height}")


def _default_key(target: Target) -> Path:
    from timecoin.home import DEV_WALLET_FILE

    if target.home is not None and (target.home / DEV_WALLET_FILE).exists():
        return target.home / DEV_WALLET_FILE
    raise ConfigError("--from-key FILE is required (no dev wallet in the home directory)")


def check_built_body(
    body_bytes: bytes,
    *,
    chain_id: str,
    network: Network,
    pubkey: bytes,
    to: bytes,
    amount: int,
    fee: int,
    max_fee: int,
) -> Any:
    """Decode a body the node built and check it pays exactly what we asked; return it.

    Raises a TimecoinError naming what is wrong; nothing is signed in that case.
    """
    from timecoin.core.errors import FeeTooLow, InvalidTransaction, WrongChain, WrongOwner
    from timecoin.core.keys import pubkey_hash
    from timecoin.wire.codec import decode_tx_body

    body = decode_tx_body(body_bytes, network)
    if body.chain_id != chain_id:
        raise WrongChain(f"node built a transaction for chain {body.chain_id!r}")
    if not body.inputs or any(i.pubkey != pubkey for i in body.inputs):
        raise WrongOwner("node built inputs that are not ours")
    own = pubkey_hash(pubkey)
    outs = list(body.outputs)
    if not outs or outs[0].pubkey_hash != to or outs[0].amount != amount:
        raise InvalidTransaction("node built outputs that do not pay what was asked")
    if any(o.pubkey_hash != own for o in outs[1:]) or len(outs) > 2:
        raise InvalidTransaction("node built unexpected outputs")
    if body.masternode is not None or body.coinbase_height:
        raise InvalidTransaction("node built an unexpected payload")
    if fee > max_fee:
        raise FeeTooLow(
            f"fee {format_time_units(fee)} TIME exceeds --max-fee {format_time_units(max_fee)}"
        )
    return body


@wallet.command("send")
@click.option("--to", "to_address", required=True, help="Recipient address.")
@click.option("--amount", required=True, help="Amount in TIME, e.g. 1.5.")
@click.option(
    "--from-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Key file to pay from (default: the home's dev_wallet.json, if any).",
)
@click.option(
    "--fee-rate", type=click.IntRange(min=0), default=0, help="Units per kB (0: node minimum)."
)
@click.option("--max-fee", default="0.1", show_default=True, help="Refuse to pay more fee (TIME).")
@click.option("--memo", default="", help="Memo text (at most 256 bytes).")
@click.option("--no-wait", is_flag=True, help="Print the txid and return without waiting.")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait.")
@_node_options
def wallet_send(
    target: Target,
    to_address: str,
    amount: str,
    from_key: Path | None,
    fee_rate: int,
    max_fee: str,
    memo: str,
    no_wait: bool,
    timeout: float,
) -> None:
    """Pay --amount TIME to --to, signed locally; wait until final and print txid and height."""
    from timecoin.core.address import decode_address, encode_address
    from timecoin.core.signing import tx_sign_digest
    from timecoin.keyfile import read_key
    from timecoin.wire.codec import make_transaction

    try:
        units = parse_time_amount(amount)
        max_fee_units = parse_time_amount(max_fee)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    key = read_key(from_key or _default_key(target))

    async def go() -> None:
        async with _client(target, auth=True) as c:
            chain_id, net = await _network_of_node(c)
            to = decode_address(to_address, net)
            from_address = encode_address(key.address_payload, net)
            built = await c.build_transaction(
                from_address,
                key.pubkey,
                [(to_address, units)],
                fee_rate_units_per_kb=fee_rate,
                memo=memo.encode(),
            )
            body = check_built_body(
                built.body_bytes,
                chain_id=chain_id,
                network=net,
                pubkey=key.pubkey,
                to=to,
                amount=units,
                fee=built.fee,
                max_fee=max_fee_units,
            )
            digest = tx_sign_digest(chain_id, built.body_bytes)
            sig = key.sign(digest)
            tx = make_transaction(built.body_bytes, [sig] * len(body.inputs), net)
            txid = await c.submit(tx)
            click.echo(f"txid:   {txid.hex()}")
            click.echo(f"fee:    {format_time_units(built.fee)} TIME")
            if no_wait:
                return
            height, block_hash = await c.wait_final(txid, timeout_s=timeout)
            click.echo(f"final:  height {height} block {block_hash.hex()}")

    _run(go())


@click.command("tx", help="Show a transaction and check its proof of finality." + _TARGET_HELP)
@click.argument("txid")
@_node_options
def tx_cmd(target: Target, txid: str) -> None:
    from timecoin._proto.chain.v1 import chain_pb2
    from timecoin.core.address import encode_address
    from timecoin.core.commit import verify_commit
    from timecoin.core.hashing import sha256
    from timecoin.core.merkle import verify_merkle_proof
    from timecoin.wire.codec import (
        commit_from_pb,
        decode_header,
        transaction_from_pb,
        validator_set_from_pb,
    )

    try:
        raw = bytes.fromhex(txid)
    except ValueError:
        raise click.BadParameter("TXID must be 64 hex characters") from None

    async def go() -> None:
        async with _client(target) as c:
            chain_id, net = await _network_of_node(c)
            try:
                resp = await c.get_transaction(raw)
            except NotFound:
                # Not final: it may still be pending in the mempool.
                async for msg in c.subscribe_transaction(raw, timeout_s=5):
                    if msg.status == chain_pb2.TRANSACTION_STATUS_PENDING:
                        click.echo(f"txid:   {txid}\nstatus: PENDING (in the mempool)")
                        return
                    break
                raise
            tx = transaction_from_pb(resp.transaction, net)
            header = decode_header(resp.header_bytes)
            rows: list[tuple[str, object]] = [
                ("txid", tx.txid.hex()),
                ("status", "FINAL"),
                ("height", resp.height),
                ("block", resp.block_hash.hex()),
                ("position", f"{resp.position} of {resp.tx_count}"),
                ("time", _ms_to_iso(header.time_ms)),
            ]
            for n, i in enumerate(tx.body.inputs):
                rows.append((f"input {n}", str(i.prev_out)))
            for n, o in enumerate(tx.body.outputs):
                rows.append(
                    (
                        f"output {n}",
                        f"{format_time_units(o.amount)} TIME to "
                        f"{encode_address(o.pubkey_hash, net)}",
                    )
                )
            if tx.body.memo:
                rows.append(("memo", tx.body.memo.decode(errors="replace")))
            in_block = sha256(resp.header_bytes) == resp.block_hash and verify_merkle_proof(
                tx.txid, resp.position, resp.tx_count, list(resp.merkle_proof), header.tx_root
            )
            proof = "merkle proof INVALID"
            if in_block:
                vs_resp = await c.validator_set(resp.height)
                vs = validator_set_from_pb(vs_resp.validator_set)
                try:
                    power = verify_commit(
                        chain_id,
                        commit_from_pb(resp.commit),
                        vs,
                        height=resp.height,
                        block_hash=resp.block_hash,
                    )
                    proof = f"verified (merkle proof; commit signed by {power} of {vs.total_power})"
                except TimecoinError as exc:
                    proof = f"commit does not verify: {exc}"
            rows.append(("proof", proof))
            _echo_rows(rows)

    _run(go())


@click.command("block", help="Show a block by HEIGHT or HASH." + _TARGET_HELP)
@click.argument("height_or_hash")
@_node_options
def block_cmd(target: Target, height_or_hash: str) -> None:
    from timecoin.wire.codec import block_from_pb

    text = height_or_hash.strip()
    height: int | None = None
    block_hash: bytes | None = None
    if text.isdigit() and len(text) < 20:
        height = int(text)
    else:
        try:
            block_hash = bytes.fromhex(text)
        except ValueError:
            raise click.BadParameter("give a height or a 64-hex-character block hash") from None

    async def go() -> None:
        async with _client(target) as c:
            _, net = await _network_of_node(c)
            resp = await c.get_block(height=height, block_hash=block_hash)
            b = block_from_pb(resp.block, net)
            h = b.header
            rows: list[tuple[str, object]] = [
                ("height", h.height),
                ("hash", b.hash.hex()),
                ("time", _ms_to_iso(h.time_ms)),
                ("previous", h.prev_block_hash.hex()),
                ("proposer", h.proposer_address.hex()),
                ("transactions", len(b.txs)),
                ("utxo commitment", h.utxo_commitment.hex()),
                ("size", f"{b.size} bytes"),
            ]
            if resp.HasField("commit"):
                rows.append(
                    (
                        "finalized by",
                        f"{len(resp.commit.signatures)} precommits in round {resp.commit.round}",
                    )
                )
            for n, t in enumerate(b.txs):
                total = sum(o.amount for o in t.body.outputs)
                kind = " (coinbase)" if t.is_coinbase else ""
                rows.append((f"tx {n}", f"{t.txid.hex()} {format_time_units(total)} TIME{kind}"))
            _echo_rows(rows)

    _run(go())


def register(group: click.Group) -> None:
    """Add ``status``, ``wallet``, ``tx`` and ``block`` to the ``timed`` command group."""
    for cmd in (status, wallet, tx_cmd, block_cmd):
        group.add_command(cmd)
