"""Reading and writing the genesis file (JSON) as ``core.genesis.Genesis``.

Example::

    {
      "chain_id": "timecoin-devnet-1",
      "network": "devnet",
      "genesis_time_ms": 1764000000000,
      "allocations": [{"address": "TIME0...", "amount": 100000000000000}],
      "validators": [{"pubkey": "02ab...", "tier": "gold",
                      "reward_address": "TIME0...", "name": "node1"}]
    }

Amounts are in units (1 TIME = 100,000,000 units). Unknown keys are rejected.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from timecoin.config import NetworkName
from timecoin.core.address import decode_address, encode_address
from timecoin.core.errors import ConfigError, TimecoinError
from timecoin.core.genesis import Genesis, GenesisAllocation, GenesisValidator, validate_genesis
from timecoin.core.types import MasternodeTier, Network


def network_of(name: NetworkName | str) -> Network:
    """Address network digit for a network name (1 mainnet, 0 otherwise)."""
    return Network.MAIN if NetworkName(name) == NetworkName.MAINNET else Network.TEST


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Allocation(_Strict):
    address: str
    amount: int = Field(gt=0)


class _Validator(_Strict):
    pubkey: str
    tier: str = Field(pattern="^(bronze|silver|gold)$")
    reward_address: str
    name: str = ""


class _GenesisFile(_Strict):
    chain_id: str
    network: NetworkName
    genesis_time_ms: int = Field(ge=0)
    allocations: list[_Allocation] = Field(default_factory=list)
    validators: list[_Validator]


def genesis_from_json(text: str, source: str = "<genesis>") -> Genesis:
    """Parse and validate genesis JSON; raise ConfigError naming *source*."""
    try:
        doc = _GenesisFile.model_validate_json(text)
        net = network_of(doc.network)
        g = Genesis(
            chain_id=doc.chain_id,
            network=net,
            genesis_time_ms=doc.genesis_time_ms,
            allocations=tuple(
                GenesisAllocation(pubkey_hash=decode_address(a.address, net), amount=a.amount)
                for a in doc.allocations
            ),
            validators=tuple(
                GenesisValidator(
                    pubkey=bytes.fromhex(v.pubkey),
                    tier=MasternodeTier[v.tier.upper()],
                    reward_pubkey_hash=decode_address(v.reward_address, net),
                    name=v.name,
                )
                for v in doc.validators
            ),
        )
        validate_genesis(g)
    except ValidationError as exc:
        raise ConfigError(
            f"{source}: invalid genesis: {exc.errors()[0]['msg']} at "
            f"{'.'.join(map(str, exc.errors()[0]['loc']))}"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{source}: invalid genesis: {exc}") from None
    except TimecoinError as exc:
        raise ConfigError(f"{source}: invalid genesis: {exc.message}") from None
    return g


def load_genesis(path: Path) -> Genesis:
    """Read the genesis file at *path*."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read genesis: {exc.strerror}") from None
    return genesis_from_json(text, str(path))


def genesis_to_json(g: Genesis, network: NetworkName) -> str:
    """JSON text for *g* (``timed init`` and ``timed testnet`` write it)."""
    net = network_of(network)
    doc = {
        "chain_id": g.chain_id,
        "network": network.value,
        "genesis_time_ms": g.genesis_time_ms,
        "allocations": [
            {"address": encode_address(a.pubkey_hash, net), "amount": a.amount}
            for a in g.allocations
        ],
        "validators": [
            {
                "pubkey": v.pubkey.hex(),
                "tier": v.tier.name.lower(),
                "reward_address": encode_address(v.reward_pubkey_hash, net),
                "name": v.name,
            }
            for v in g.validators
        ],
    }
    return json.dumps(doc, indent=2) + "\n"
