"""Operator commands: ``timed backup``, ``restore``, ``reindex``, ``peers``, ``unban``.

``backup``, ``peers`` and ``unban`` talk to a running node through
``timecoin.admin.v1.AdminService`` (cookie credential). ``restore`` and
``reindex`` work on the store directly and need the node stopped (LevelDB
holds a lock, so they refuse to run beside a live node).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from timecoin.cli_client import Target, _client, _node_options, _run

if TYPE_CHECKING:
    from timecoin.api.client import ApiClient


def _admin_stub(client: ApiClient) -> Any:
    from timecoin._proto.admin.v1 import admin_pb2_grpc

    return admin_pb2_grpc.AdminServiceStub(client.channel)


@click.command("backup")
@click.option(
    "--out",
    "destination",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New directory on the node's machine for the snapshot.",
)
@_node_options
def backup(target: Target, destination: Path) -> None:
    """Write a consistent snapshot of a running node's store to --out."""
    from timecoin._proto.admin.v1 import admin_pb2

    dest = str(destination.resolve())

    async def go() -> None:
        async with _client(target, auth=True) as c:
            resp = await c._unary(  # noqa: SLF001
                _admin_stub(c).Backup,
                admin_pb2.BackupRequest(destination=dest),
                auth=True,
            )
            click.echo(f"backup:     {resp.destination}")
            click.echo(f"height:     {resp.height}  tip {bytes(resp.tip_hash).hex()}")
            click.echo(f"commitment: {bytes(resp.utxo_commitment).hex()}  ({resp.keys} keys)")

    _run(go())


@click.command("peers")
@_node_options
def peers(target: Target) -> None:
    """List the peers a running node is connected to."""
    from timecoin._proto.admin.v1 import admin_pb2

    async def go() -> None:
        async with _client(target, auth=True) as c:
            resp = await c._unary(  # noqa: SLF001
                _admin_stub(c).ListPeers,
                admin_pb2.ListPeersRequest(),
                auth=True,
            )
            click.echo(f"{len(resp.peers)} peers")
            for p in resp.peers:
                click.echo(
                    f"  {bytes(p.node_id).hex()}  {p.direction:<8} {p.address:<22} "
                    f"listen {p.listen_address or '-':<22} height {p.height}"
                )

    _run(go())


@click.command("unban")
@click.argument("node_id_or_ip")
@_node_options
def unban(target: Target, node_id_or_ip: str) -> None:
    """Lift a ban on a peer (node id in hex, or IP address)."""
    from timecoin._proto.admin.v1 import admin_pb2

    async def go() -> None:
        async with _client(target, auth=True) as c:
            resp = await c._unary(  # noqa: SLF001
                _admin_stub(c).Unban,
                admin_pb2.UnbanRequest(target=node_id_or_ip),
                auth=True,
            )
            click.echo("unbanned" if resp.removed else "no such ban")

    _run(go())


def _offline(
    config_file: Path | None, home: Path | None
) -> tuple[Path, object, object, object, object]:
    from timecoin.config import resolve
    from timecoin.container import make_genesis, make_params
    from timecoin.node.app import locate
    from timecoin.rules.manager import PluggyRules, build_plugin_manager

    home_dir, cfg = locate(config_file, home, False)
    data = resolve(home_dir, cfg.storage.path)
    if cfg.storage.backend != "leveldb":
        raise click.ClickException("restore and reindex work on the leveldb backend")
    return (
        data,
        make_params(cfg),
        make_genesis(cfg, home_dir),
        PluggyRules(build_plugin_manager()),
        cfg,
    )


@click.command("restore")
@click.option(
    "--from", "source", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path)
)
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--home", type=click.Path(file_okay=False, path_type=Path))
def restore(source: Path, config_file: Path | None, home: Path | None) -> None:
    """Replace the stopped node's store with a backup (the double-sign guard state is kept)."""
    from timecoin.cli_client import _errors_as_messages
    from timecoin.node.maintenance import restore_store

    @_errors_as_messages
    def go() -> None:
        data, params, genesis, rules, _ = _offline(config_file, home)
        summary, kept = restore_store(source, data, params, genesis, rules)  # type: ignore[arg-type]
        click.echo(
            f"restored height {summary.height}, "
            f"commitment {summary.utxo_commitment.hex()} (verified)"
        )
        click.echo(f"previous store kept at {kept}")

    go()


@click.command("reindex")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--home", type=click.Path(file_okay=False, path_type=Path))
def reindex(config_file: Path | None, home: Path | None) -> None:
    """Rebuild indexes and the UTXO set of a stopped node from its stored blocks."""
    from timecoin.cli_client import _errors_as_messages
    from timecoin.node.maintenance import reindex_store

    @_errors_as_messages
    def go() -> None:
        data, params, genesis, rules, _ = _offline(config_file, home)
        summary, kept = reindex_store(data, params, genesis, rules)  # type: ignore[arg-type]
        click.echo(
            f"reindexed {summary.height} blocks; "
            f"UTXO commitment {summary.utxo_commitment.hex()} matches"
        )
        click.echo(f"previous store kept at {kept}")

    go()


def register(group: click.Group) -> None:
    """Add the operator commands to *group*."""
    for cmd in (backup, restore, reindex, peers, unban):
        group.add_command(cmd)
