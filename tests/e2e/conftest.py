"""Real `timed` processes on loopback ports, driven through the client API."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import tomli_w

from timecoin.api.client import ApiClient
from timecoin.core.address import encode_address
from timecoin.core.params import ChainParams
from timecoin.core.types import Network
from timecoin.keyfile import read_key

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DevNode:
    """One `timed serve --dev` process with its own home and API port."""

    def __init__(self, home: Path, **config: object) -> None:
        self.home = home
        self.port = free_port()
        subprocess.run(
            [sys.executable, "-m", "timecoin.cli", "init", "--dev", "--home", str(home)],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        cfg_path = home / "config.toml"
        cfg = tomllib.loads(cfg_path.read_text())
        cfg["api"]["listen"] = f"127.0.0.1:{self.port}"
        cfg["p2p"]["listen"] = f"127.0.0.1:{free_port()}"
        for section, values in config.items():
            cfg.setdefault(section, {}).update(values)  # type: ignore[arg-type]
        cfg_path.write_text(tomli_w.dumps(cfg))
        self.params = ChainParams.for_network("devnet")
        self.wallet = read_key(home / "dev_wallet.json")
        self.address = encode_address(self.wallet.address_payload, Network.TEST)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = home / "node.log"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, env: dict[str, str] | None = None) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "timecoin.cli", "serve", "--dev", "--home", str(self.home)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=dict(os.environ, **(env or {})),
        )

    def client(self) -> ApiClient:
        return ApiClient.from_cookie(self.target, self.home / ".cookie")

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc is not None and self.proc.poll() is None, self.log()
            if (self.home / ".cookie").exists():
                try:
                    async with self.client() as c:
                        st = await c.status()
                        if st.height >= 1:
                            return
                except Exception:
                    pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"node not ready:\n{self.log()}")
            await asyncio.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


@pytest.fixture
def dev_node(tmp_path):
    nodes: list[DevNode] = []

    def make(**config: object) -> DevNode:
        n = DevNode(tmp_path / f"node{len(nodes)}", **config)
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        if n.proc is not None and n.proc.poll() is None:
            n.proc.kill()
            n.proc.wait(10)
