"""``timed health``: ask a node's client listener for its gRPC health status.

The node registers the standard ``grpc.health.v1.Health`` service and reports
SERVING once it is ready (timecoin.api.server). This check is what Docker's
HEALTHCHECK, the Kubernetes exec probes and systemd watchers run, so its exit
code is the whole interface:

====  =====================================================================
 0    SERVING
 1    reachable but not serving (NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN, or
      the service name is not registered) - e.g. starting or shutting down
 2    unreachable or error (connection refused, deadline, no health service,
      TLS failure, bad arguments or config)
====  =====================================================================

A plain synchronous channel is used on purpose: the check runs once in a
short-lived process, and a refused connection must fail at once instead of
waiting for the channel to become ready.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

if TYPE_CHECKING:
    from timecoin.config import NodeConfig

EXIT_SERVING = 0
EXIT_NOT_SERVING = 1
EXIT_UNREACHABLE = 2

DEFAULT_TIMEOUT_S = 3.0


@dataclass(frozen=True, slots=True)
class HealthTls:
    """TLS settings for a client listener that serves TLS."""

    root_certificates: bytes | None = None
    """PEM CA bundle (for a self-signed listener, its certificate); None = system roots."""
    server_name: str | None = None
    """Name to check the certificate against when it differs from the dialled host."""


@dataclass(frozen=True, slots=True)
class HealthResult:
    """Outcome of one check: the exit code and a one-line description."""

    code: int
    detail: str


def probe_health(
    target: str, timeout_s: float, *, tls: HealthTls | None = None, service: str = ""
) -> HealthResult:
    """Call ``grpc.health.v1.Health/Check`` on *target* (``host:port``) and classify it.

    Never raises for anything the node or the network does; every failure is
    a result with code 2 (see the module docstring for the codes).
    """
    options: list[tuple[str, str | int]] = []
    if tls is not None:
        creds = grpc.ssl_channel_credentials(root_certificates=tls.root_certificates)
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        channel = grpc.secure_channel(target, creds, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else None
        details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
        if code == grpc.StatusCode.NOT_FOUND:
            # The health servicer answers NOT_FOUND for a service it does not know:
            # the node is up but does not (yet) serve what was asked.
            return HealthResult(EXIT_NOT_SERVING, f"SERVICE_UNKNOWN: {service!r} at {target}")
        name = code.name if code is not None else "ERROR"
        return HealthResult(EXIT_UNREACHABLE, f"unreachable: {target}: {name}: {details}")
    except ValueError as exc:  # malformed target or options
        return HealthResult(EXIT_UNREACHABLE, f"error: {target}: {exc}")
    finally:
        channel.close()
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    if response.status == health_pb2.HealthCheckResponse.SERVING:
        return HealthResult(EXIT_SERVING, f"{status}: {target}")
    return HealthResult(EXIT_NOT_SERVING, f"{status}: {target}")


def check_health(
    target: str, timeout_s: float, *, tls: HealthTls | None = None, service: str = ""
) -> int:
    """Return the exit code of a health check of *target*: 0 serving, 1 not serving, 2 error."""
    return probe_health(target, timeout_s, tls=tls, service=service).code


def _tls_from(
    home_cfg_cert: Path | None, tls_ca: Path | None, server_name: str | None
) -> HealthTls | None:
    """Pick TLS settings: ``--tls-ca`` wins; else a TLS listener's own certificate."""
    ca = tls_ca or home_cfg_cert
    if ca is None:
        return None
    return HealthTls(root_certificates=ca.read_bytes(), server_name=server_name)


@click.command(name="health")
@click.option(
    "--rpc",
    metavar="HOST:PORT",
    envvar="TIMED_RPC",
    help="Client API address (default: api.listen of the home's config.toml).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Node config file (as given to `timed --config`); its api.listen is checked.",
)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="TIMED_HOME",
    help="Node home directory whose config.toml names the client API.",
)
@click.option(
    "--network",
    type=click.Choice(["mainnet", "testnet", "devnet"]),
    default=None,
    help="Use this network's default home and port.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.05),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds to wait for the answer.",
)
@click.option(
    "--service",
    default="",
    help="Health service name to ask about (default: the whole node).",
)
@click.option(
    "--tls-ca",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CA certificate (PEM) of a TLS listener (default: the home's api.tls_cert_file).",
)
@click.option(
    "--tls-server-name",
    default=None,
    help="Certificate name to expect when it differs from the dialled host.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing; only the exit code.")
@click.pass_context
def health(
    ctx: click.Context,
    rpc: str | None,
    config_file: Path | None,
    home: Path | None,
    network: str | None,
    timeout_s: float,
    service: str,
    tls_ca: Path | None,
    tls_server_name: str | None,
    quiet: bool,
) -> None:
    """Check the node's gRPC health: exit 0 serving, 1 not serving, 2 unreachable or error.

    The node is found as for `timed status`: --rpc, else --config FILE, else the
    home's config.toml (--home, else the default home of --network, else the
    first existing default home).
    """
    from timecoin.cli_client import _client_address, resolve_target
    from timecoin.config import load_config, resolve
    from timecoin.core.errors import TimecoinError
    from timecoin.home import CONFIG_FILE

    try:
        cert: Path | None = None
        if config_file is not None:
            # Relative paths in a --config file resolve against its directory
            # unless --home is given (timecoin.node.app.locate); a home that only
            # came from TIMED_HOME does not count, as `timed serve` ignores it too.
            if ctx.get_parameter_source("home") is click.core.ParameterSource.ENVIRONMENT:
                home = None
            loaded = load_config(config_file)
            cfg: NodeConfig | None = loaded
            base: Path | None = home or config_file.resolve().parent
            target_rpc = rpc or _client_address(loaded.api.listen)
        else:
            target = resolve_target(home, network, rpc, None, tls_ca)
            target_rpc = target.rpc
            base = target.home
            cfg_path = base / CONFIG_FILE if base is not None else None
            cfg = load_config(cfg_path) if cfg_path is not None and cfg_path.exists() else None
        if cfg is not None and base is not None and cfg.api.tls_cert_file and cfg.api.tls_key_file:
            cert = resolve(base, cfg.api.tls_cert_file)
        tls = _tls_from(cert, tls_ca, tls_server_name)
    except (TimecoinError, OSError) as exc:
        if not quiet:
            click.echo(f"error: {exc}", err=True)
        ctx.exit(EXIT_UNREACHABLE)
    result = probe_health(target_rpc, timeout_s, tls=tls, service=service)
    if not quiet:
        click.echo(result.detail, err=result.code == EXIT_UNREACHABLE)
    ctx.exit(result.code)


def register(group: click.Group) -> None:
    """Add ``health`` to the ``timed`` command group."""
    group.add_command(health)
