"""``timed masternode``: register, deregister and list masternodes through a node.

A registration is an ordinary signed transaction whose body carries a
``MasternodeRegistration``: output 0 locks exactly the tier's collateral
(Bronze 1,000 / Silver 10,000 / Gold 100,000 TIME) to the owner's address and
the payload names the operator (validator) key. The new validator takes part
from height H + 2 when the registration is final at H (docs/ledger.md).
Spending the collateral (``deregister``) removes it the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from timecoin.cli_client import (
    Target,
    _client,
    _default_key,
    _network_of_node,
    _node_options,
    _run,
    format_time_units,
)
from timecoin.core.errors import InsufficientFunds
from timecoin.core.types import (
    MasternodeDeregistration,
    MasternodeRegistration,
    MasternodeTier,
    OutPoint,
    TxBody,
    TxIn,
    TxOut,
)

_SIZE_PER_INPUT = 140
"""Upper bound of the bytes one input adds (outpoint, pubkey, signature, framing)."""


@click.group(help="Register, deregister and list masternodes (validators).")
def masternode() -> None:
    pass


def _build_and_sign(
    key: Any, chain_id: str, net: Any, inputs: list[OutPoint], outputs: list[TxOut], payload: Any
) -> Any:
    from timecoin.core.params import TX_VERSION
    from timecoin.core.signing import tx_sign_digest
    from timecoin.wire.codec import encode_tx_body, make_transaction

    body = TxBody(
        version=TX_VERSION,
        chain_id=chain_id,
        inputs=tuple(TxIn(op, key.pubkey) for op in inputs),
        outputs=tuple(outputs),
        masternode=payload,
    )
    body_bytes = encode_tx_body(body, net)
    sig = key.sign(tx_sign_digest(chain_id, body_bytes))
    return make_transaction(body_bytes, [sig] * len(inputs), net)


@masternode.command("register")
@click.option("--tier", type=click.Choice(["bronze", "silver", "gold"]), required=True)
@click.option(
    "--operator-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help="Validator key file of the node that will sign votes.",
)
@click.option(
    "--from-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Owner key paying the collateral (default: the home's dev wallet).",
)
@click.option("--timeout", type=float, default=120.0, show_default=True)
@_node_options
def register(
    target: Target, tier: str, operator_key: Path, from_key: Path | None, timeout: float
) -> None:
    """Lock the tier's collateral and register --operator-key as a validator."""
    from timecoin.core.address import encode_address
    from timecoin.keyfile import read_key

    owner = read_key(from_key or _default_key(target))
    operator = read_key(operator_key)
    t = MasternodeTier[tier.upper()]

    async def go() -> None:
        async with _client(target, auth=True) as c:
            chain_id, net = await _network_of_node(c)
            fee_info = await c.estimate_fee(0)
            address = encode_address(owner.address_payload, net)
            coins = sorted(
                (await c.list_unspent(address, limit=1000)).unspent,
                key=lambda u: u.amount,
                reverse=True,
            )
            chosen, total = [], 0
            for u in coins:
                chosen.append(OutPoint(bytes(u.out_point.txid), u.out_point.index))
                total += u.amount
                fee = (
                    fee_info.fee_rate_units_per_kb * (300 + _SIZE_PER_INPUT * len(chosen)) + 999
                ) // 1000
                if total >= t.collateral_units + fee + fee_info.dust_limit:
                    break
            else:
                raise InsufficientFunds(
                    f"{address} holds {format_time_units(total)} TIME; a {tier} masternode "
                    f"needs {format_time_units(t.collateral_units)} TIME plus fee"
                )
            outputs = [
                TxOut(t.collateral_units, owner.address_payload),
                TxOut(total - t.collateral_units - fee, owner.address_payload),
            ]
            payload = MasternodeRegistration(t, 0, operator.pubkey)
            tx = _build_and_sign(owner, chain_id, net, chosen, outputs, payload)
            txid = await c.submit(tx)
            click.echo(f"txid:        {txid.hex()}")
            click.echo(
                f"collateral:  {txid.hex()}:0 ({format_time_units(t.collateral_units)} TIME)"
            )
            height, _ = await c.wait_final(txid, timeout_s=timeout)
            click.echo(f"final:       height {height}; validator from height {height + 2}")

    _run(go())


@masternode.command("deregister")
@click.option("--collateral", required=True, metavar="TXID:INDEX")
@click.option(
    "--from-key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Owner key of the collateral (default: the home's dev wallet).",
)
@click.option("--timeout", type=float, default=120.0, show_default=True)
@_node_options
def deregister(target: Target, collateral: str, from_key: Path | None, timeout: float) -> None:
    """Spend the collateral back to its owner, which removes the masternode."""
    from timecoin.keyfile import read_key

    owner = read_key(from_key or _default_key(target))
    txid_hex, _, index = collateral.partition(":")
    try:
        op = OutPoint(bytes.fromhex(txid_hex), int(index))
    except ValueError:
        raise click.BadParameter("expected TXID:INDEX") from None

    async def go() -> None:
        async with _client(target, auth=True) as c:
            chain_id, net = await _network_of_node(c)
            fee_info = await c.estimate_fee(0)
            amount = None
            from timecoin.core.address import encode_address

            resp = await c.list_unspent(encode_address(owner.address_payload, net), limit=1000)
            for u in resp.unspent:
                if bytes(u.out_point.txid) == op.txid and u.out_point.index == op.index:
                    amount = u.amount
            if amount is None:
                raise InsufficientFunds(f"{collateral} is not an unspent output of this key")
            fee = (fee_info.fee_rate_units_per_kb * (300 + _SIZE_PER_INPUT) + 999) // 1000
            tx = _build_and_sign(
                owner,
                chain_id,
                net,
                [op],
                [TxOut(amount - fee, owner.address_payload)],
                MasternodeDeregistration(op),
            )
            txid = await c.submit(tx)
            click.echo(f"txid:   {txid.hex()}")
            height, _ = await c.wait_final(txid, timeout_s=timeout)
            click.echo(f"final:  height {height}; removed from height {height + 2}")

    _run(go())


@masternode.command("list")
@click.option("--height", type=int, default=0, help="Validator set of this height (0: next).")
@_node_options
def list_cmd(target: Target, height: int) -> None:
    """Show the validator set: address, tier, power, collateral."""
    from timecoin._proto.types.v1 import types_pb2

    async def go() -> None:
        async with _client(target) as c:
            resp = await c.validator_set(height)
            click.echo(
                f"height {resp.height}: {len(resp.validator_set.validators)} validators, "
                f"total power {resp.total_power}"
            )
            for v in resp.validator_set.validators:
                tier = types_pb2.MasternodeTier.Name(v.tier).removeprefix("MASTERNODE_TIER_")
                coll = (
                    f"{bytes(v.collateral.txid).hex()}:{v.collateral.index}"
                    if v.HasField("collateral") and v.collateral.txid
                    else "genesis"
                )
                click.echo(
                    f"  {bytes(v.address).hex()}  {tier.lower():<6} power {v.power:<4} {coll}"
                )

    _run(go())
