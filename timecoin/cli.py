"""The ``timed`` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from timecoin import __version__
from timecoin.config import NetworkName
from timecoin.core.errors import TimecoinError


class _Group(click.Group):
    """Prints TimecoinErrors as ``error: REASON: message`` (exit 1), never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except TimecoinError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group, invoke_without_command=True)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file; with no command, serve with it (as `timed serve --config`).",
)
@click.version_option(__version__, prog_name="timed")
@click.pass_context
def main(ctx: click.Context, config_file: Path | None) -> None:
    """Run and talk to a TimeCoin node (BFT-finalized UTXO ledger)."""
    ctx.ensure_object(dict)
    ctx.obj["config_file"] = config_file
    if ctx.invoked_subcommand is None:
        if config_file is None:
            click.echo(ctx.get_help())
            return
        ctx.invoke(serve, config_file=config_file)


@main.command()
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), help="Home directory.")
@click.option(
    "--network",
    type=click.Choice([n.value for n in NetworkName]),
    default="mainnet",
    show_default=True,
)
@click.option(
    "--dev", is_flag=True, help="Devnet with a one-validator genesis and a funded dev wallet."
)
@click.option("--moniker", default="timed", show_default=True, help="Name of this node in logs.")
def init(home: Path | None, network: str, dev: bool, moniker: str) -> None:
    """Create a home directory: config.toml, node and validator keys (and a dev genesis)."""
    from timecoin.home import default_home, init_home

    net = NetworkName.DEVNET if dev else NetworkName(network)
    home = home or default_home(net)
    result = init_home(home, net, dev=dev, moniker=moniker)
    click.echo(f"home: {result.home}")
    for p in result.created:
        click.echo(f"  created {p}")
    if not result.created:
        click.echo("  already initialised; nothing changed")


@main.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--home", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dev", is_flag=True, help="Run a one-validator devnet (created on first run).")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default=None,
    help="Override telemetry.log_format: human-readable text or one JSON object per line.",
)
def serve(
    config_file: Path | None = None,
    home: Path | None = None,
    dev: bool = False,
    log_format: str | None = None,
) -> None:
    """Run the node."""
    from timecoin.node.app import run_node

    run_node(config_file=config_file, home=home, dev=dev, log_format=log_format)


@main.command()
@click.option("--validators", "-n", type=click.IntRange(1, 100), default=4, show_default=True)
@click.option(
    "--observers", type=click.IntRange(0, 100), default=0, help="Extra non-validator nodes."
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option(
    "--network",
    type=click.Choice([n.value for n in NetworkName]),
    default="devnet",
    show_default=True,
)
@click.option("--base-port", type=click.IntRange(1024, 65000), default=26600, show_default=True)
@click.option(
    "--block-ms",
    type=click.IntRange(100, 600_000),
    default=None,
    help="Block interval (default: the network's, 1 s devnet / 30 s testnet).",
)
def testnet(
    validators: int, observers: int, out: Path, network: str, base_port: int, block_ms: int | None
) -> None:
    """Write configs, keys and a shared genesis for a local N-validator network."""
    from timecoin.testnet import write_testnet

    configs = write_testnet(
        out,
        validators,
        network=NetworkName(network),
        base_port=base_port,
        block_interval_ms=block_ms,
        observers=observers,
    )
    click.echo(f"wrote {len(configs)} node configs and genesis.json to {out}")
    for c in configs:
        click.echo(f"  timed --config {c}")


def _add_commands() -> None:
    from timecoin.cli_admin import register as register_admin
    from timecoin.cli_client import register
    from timecoin.cli_masternode import masternode
    from timecoin.sim.cli import sim
    from timecoin.telemetry.health import register as register_health

    main.add_command(sim)
    main.add_command(masternode)
    register(main)
    register_health(main)
    register_admin(main)


_add_commands()

if __name__ == "__main__":
    main()
