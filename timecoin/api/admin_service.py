"""``timecoin.admin.v1.AdminService``: backup, peers and unban for the node's operator.

Every method needs the cookie credential (``auth.PROTECTED_METHODS``). The
backend is the node (``timecoin.node.api_backend.NodeApi``); a backend that
does not offer these methods simply gets no AdminService.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import grpc.aio

from timecoin._proto.admin.v1 import admin_pb2, admin_pb2_grpc
from timecoin.api.errors import guard_unary

SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
METHODS = frozenset(
    f"/{SERVICE_NAME}/{m.name}"
    for m in admin_pb2.DESCRIPTOR.services_by_name["AdminService"].methods
)


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What a finished backup holds."""

    height: int
    tip_hash: bytes
    utxo_commitment: bytes
    keys: int
    destination: str


@dataclass(frozen=True, slots=True)
class PeerRow:
    node_id: bytes
    address: str
    listen_address: str
    direction: str
    height: int


class AdminBackend(Protocol):
    """What the admin service needs from the node."""

    async def backup(self, destination: str) -> BackupResult:
        """Write a consistent snapshot of the store to the new directory *destination*."""

    async def list_peers(self) -> list[PeerRow]:
        """Return the connected peers."""

    async def unban(self, target: str) -> bool:
        """Lift a ban on a node id (hex) or an IP; return whether one was lifted."""


class AdminService(admin_pb2_grpc.AdminServiceServicer):
    """Operator methods; errors carry reason codes like every other service."""

    def __init__(self, backend: AdminBackend) -> None:
        self._backend = backend

    @guard_unary
    async def Backup(  # noqa: N802
        self, request: admin_pb2.BackupRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.BackupResponse:
        r = await self._backend.backup(request.destination)
        return admin_pb2.BackupResponse(
            height=r.height,
            tip_hash=r.tip_hash,
            utxo_commitment=r.utxo_commitment,
            keys=r.keys,
            destination=r.destination,
        )

    @guard_unary
    async def ListPeers(  # noqa: N802
        self, request: admin_pb2.ListPeersRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListPeersResponse:
        rows = await self._backend.list_peers()
        return admin_pb2.ListPeersResponse(
            peers=[
                admin_pb2.PeerEntry(
                    node_id=p.node_id,
                    address=p.address,
                    listen_address=p.listen_address,
                    direction=p.direction,
                    height=p.height,
                )
                for p in rows
            ]
        )

    @guard_unary
    async def Unban(  # noqa: N802
        self, request: admin_pb2.UnbanRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.UnbanResponse:
        return admin_pb2.UnbanResponse(removed=await self._backend.unban(request.target))
