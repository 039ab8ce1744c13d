"""`timed health` against real grpc.aio servers on loopback (serving, not serving, closed, TLS)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import click
import grpc
import grpc.aio
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from timecoin.config import NetworkName, NodeConfig, dump_config
from timecoin.telemetry.health import (
    EXIT_NOT_SERVING,
    EXIT_SERVING,
    EXIT_UNREACHABLE,
    HealthTls,
    check_health,
    probe_health,
    register,
)
from timecoin.telemetry.health import health as health_command

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Node:
    def __init__(self, server: grpc.aio.Server, servicer: health.aio.HealthServicer, port: int):
        self.server, self.servicer, self.port = server, servicer, port

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


async def _start(
    status: int | None, creds: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    if status is not None:
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        await servicer.set("", status)
        await servicer.set("timecoin.chain.v1.ChainService", status)
    if creds is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", creds)
    await server.start()
    return server, servicer, port


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    server, servicer, port = await _start(SERVING)
    yield Node(server, servicer, port)
    await server.stop(None)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serving_is_0_and_not_serving_is_1(node: Node) -> None:
    assert await asyncio.to_thread(check_health, node.target, 3.0) == EXIT_SERVING
    await node.servicer.set("", NOT_SERVING)
    result = await asyncio.to_thread(probe_health, node.target, 3.0)
    assert result.code == EXIT_NOT_SERVING
    assert result.detail.startswith("NOT_SERVING")
    # The named service is still SERVING: the check asks about what it is told to.
    code = await asyncio.to_thread(
        check_health, node.target, 3.0, service="timecoin.chain.v1.ChainService"
    )
    assert code == EXIT_SERVING


async def test_graceful_shutdown_reports_not_serving(node: Node) -> None:
    await node.servicer.enter_graceful_shutdown()
    assert await asyncio.to_thread(check_health, node.target, 3.0) == EXIT_NOT_SERVING


async def test_unknown_service_is_1(node: Node) -> None:
    result = await asyncio.to_thread(probe_health, node.target, 3.0, service="no.such.Service")
    assert result.code == EXIT_NOT_SERVING
    assert "SERVICE_UNKNOWN" in result.detail


async def test_closed_port_is_2() -> None:
    result = await asyncio.to_thread(probe_health, f"127.0.0.1:{_closed_port()}", 3.0)
    assert result.code == EXIT_UNREACHABLE
    assert "UNAVAILABLE" in result.detail


async def test_server_without_health_service_is_2() -> None:
    server, _, port = await _start(None)
    try:
        result = await asyncio.to_thread(probe_health, f"127.0.0.1:{port}", 3.0)
        assert result.code == EXIT_UNREACHABLE
        assert "UNIMPLEMENTED" in result.detail
    finally:
        await server.stop(None)


def _self_signed() -> tuple[bytes, bytes]:
    from timecoin.testing.tls import self_signed_pem

    cert_pem, key_pem = self_signed_pem("node.timed.test", ca=True)
    return key_pem, cert_pem


async def test_tls_listener_needs_its_certificate() -> None:
    key, cert = _self_signed()
    server, _, port = await _start(SERVING, grpc.ssl_server_credentials([(key, cert)]))
    target = f"127.0.0.1:{port}"
    try:
        assert (
            await asyncio.to_thread(
                check_health, target, 3.0, tls=HealthTls(root_certificates=cert)
            )
            == EXIT_SERVING
        )
        named = HealthTls(root_certificates=cert, server_name="node.timed.test")
        assert await asyncio.to_thread(check_health, target, 3.0, tls=named) == EXIT_SERVING
        # Plaintext against a TLS listener, and TLS with the wrong name, both fail as errors.
        assert await asyncio.to_thread(check_health, target, 2.0) == EXIT_UNREACHABLE
        wrong = HealthTls(root_certificates=cert, server_name="other.example")
        assert await asyncio.to_thread(check_health, target, 2.0, tls=wrong) == EXIT_UNREACHABLE
    finally:
        await server.stop(None)


# --- the click command ---------------------------------------------------------------


def _invoke(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str]:
    group = click.Group("timed")
    register(group)
    result = CliRunner().invoke(group, ["health", *args], env={"TIMED_HOME": None, **(env or {})})
    return result.exit_code, result.output


def _home(tmp_path: Path, listen: str) -> Path:
    home = tmp_path / "home"
    home.mkdir(parents=True)
    cfg = NodeConfig(network=NetworkName.DEVNET, api={"listen": listen})
    (home / "config.toml").write_text(dump_config(cfg))
    return home


async def test_command_exit_codes_by_rpc(node: Node) -> None:
    code, out = await asyncio.to_thread(_invoke, "--rpc", node.target)
    assert code == EXIT_SERVING
    assert "SERVING" in out
    await node.servicer.set("", NOT_SERVING)
    code, out = await asyncio.to_thread(_invoke, "--rpc", node.target, "--timeout", "2")
    assert code == EXIT_NOT_SERVING
    assert "NOT_SERVING" in out
    code, out = await asyncio.to_thread(_invoke, "--rpc", f"127.0.0.1:{_closed_port()}", "-q")
    assert code == EXIT_UNREACHABLE
    assert out == ""


async def test_command_finds_the_node_from_the_home_config(node: Node, tmp_path: Path) -> None:
    home = _home(tmp_path, f"127.0.0.1:{node.port}")
    code, out = await asyncio.to_thread(_invoke, "--home", str(home))
    assert (code, out.strip()) == (EXIT_SERVING, f"SERVING: 127.0.0.1:{node.port}")
    # A wildcard listen address is dialled on loopback, as the other client commands do.
    wildcard = _home(tmp_path / "w", f"0.0.0.0:{node.port}")
    code, _ = await asyncio.to_thread(_invoke, "--home", str(wildcard))
    assert code == EXIT_SERVING


def test_command_home_without_config_is_2(tmp_path: Path) -> None:
    code, out = _invoke("--home", str(tmp_path))
    assert code == EXIT_UNREACHABLE
    assert "config.toml" in out


def test_command_is_named_health() -> None:
    assert health_command.name == "health"


async def test_command_reads_a_config_file(node: Node, tmp_path: Path) -> None:
    # `timed testnet` writes node1.toml ... and the compose healthchecks pass them.
    cfg = NodeConfig(network=NetworkName.TESTNET, api={"listen": f"127.0.0.1:{node.port}"})
    path = tmp_path / "node1.toml"
    path.write_text(dump_config(cfg))
    code, out = await asyncio.to_thread(_invoke, "--config", str(path))
    assert (code, out.strip()) == (EXIT_SERVING, f"SERVING: 127.0.0.1:{node.port}")
    # The image sets TIMED_HOME; with --config it must not decide where TLS files are.
    cert_cfg = NodeConfig(
        network=NetworkName.TESTNET,
        api={"listen": f"127.0.0.1:{node.port}", "tls_cert_file": "c.pem", "tls_key_file": "k"},
    )
    tls_path = tmp_path / "tls" / "node1.toml"
    tls_path.parent.mkdir()
    tls_path.write_text(dump_config(cert_cfg))
    code, out = await asyncio.to_thread(
        _invoke, "--config", str(tls_path), env={"TIMED_HOME": str(tmp_path / "elsewhere")}
    )
    assert code == EXIT_UNREACHABLE
    assert str(tls_path.parent / "c.pem") in out  # looked beside the config file
    code, out = await asyncio.to_thread(_invoke, "--config", str(tmp_path / "missing.toml"))
    assert code == EXIT_UNREACHABLE
    assert "cannot read config" in out


async def test_against_the_node_client_listener(tmp_path: Path) -> None:
    # The real listener (auth and strict-request interceptors in front of health).
    from api_fake_node import running

    async with running(tmp_path) as r:
        target = f"127.0.0.1:{r.server.port}"
        assert await asyncio.to_thread(check_health, target, 3.0) == EXIT_SERVING
        chain = "timecoin.chain.v1.ChainService"
        assert await asyncio.to_thread(check_health, target, 3.0, service=chain) == 0
        await r.server.set_serving(False)
        assert await asyncio.to_thread(check_health, target, 3.0) == EXIT_NOT_SERVING
    # Stopped: nothing listens on the port any more.
    assert await asyncio.to_thread(check_health, target, 2.0) == EXIT_UNREACHABLE
