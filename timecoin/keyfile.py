"""Key files in the node's home directory (node key, validator key, wallets).

A key file is JSON ``{"type": "secp256k1", "secret": hex, "pubkey": hex,
"address": str}`` created with mode 0600, as a node operator expects of
CometBFT's ``priv_validator_key.json`` or bitcoind's wallet files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from timecoin.core.address import encode_address
from timecoin.core.errors import ConfigError
from timecoin.core.keys import KeyPair
from timecoin.core.types import Network


def write_key(path: Path, key: KeyPair, network: Network) -> None:
    """Write *key* to *path* (0600) atomically; refuse to overwrite an existing key."""
    if path.exists():
        raise ConfigError(f"{path}: key file exists; refusing to overwrite it")
    data = {
        "type": "secp256k1",
        "secret": key.secret.hex(),
        "pubkey": key.pubkey.hex(),
        "address": encode_address(key.address_payload, network),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_key(path: Path) -> KeyPair:
    """Load a key file; raise ConfigError naming the file if it is unreadable or invalid."""
    try:
        data = json.loads(path.read_text())
        key = KeyPair.from_secret(bytes.fromhex(data["secret"]))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read key file: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a valid key file ({exc})") from None
    except Exception as exc:  # BadPubkey and friends from an out-of-range secret
        raise ConfigError(f"{path}: not a valid key file ({exc})") from None
    if data.get("pubkey") and data["pubkey"] != key.pubkey.hex():
        raise ConfigError(f"{path}: pubkey does not match secret")
    return key
