"""AdminService: list versions, set the canary, promote, roll back, and the serving status.

Pointer changes go through the registry's Redis pointers (so every replica follows them); this
replica then reconciles at once, and the reply carries its status after the change. While auth is on,
any valid API key may call it: there is no separate admin role yet.
"""

from __future__ import annotations

import socket
from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from serving.authn import authenticate
from serving.versions import Swap, VersionManager
from serving.weights import SwapRefused
from trimtab.auth import Authenticator
from trimtab.registry import Manifest, PointerError, PointerStore, Registry, RegistryError
from trimtab.v1 import admin_pb2, admin_pb2_grpc, events_pb2

MAX_PAGE = 500
DEFAULT_PAGE = 50
PAUSE_MODES = {
    "keep": admin_pb2.PAUSE_MODE_KEEP,
    "wait": admin_pb2.PAUSE_MODE_WAIT,
    "adapter": admin_pb2.PAUSE_MODE_NONE,
}
KINDS = {
    "full": admin_pb2.VERSION_KIND_FULL,
    "lora": admin_pb2.VERSION_KIND_LORA,
    "reward": admin_pb2.VERSION_KIND_REWARD,
}


def timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def swap_record(swap: Swap, replica: str) -> admin_pb2.SwapRecord:
    return admin_pb2.SwapRecord(
        replica=replica,
        from_version_id=swap.from_version or "",
        to_version_id=swap.to_version,
        pause_mode=PAUSE_MODES.get(swap.mode, admin_pb2.PAUSE_MODE_UNSPECIFIED),
        stall_ms=swap.stall_s * 1000,
        ok=swap.ok,
        error=swap.error,
        started_at=timestamp(swap.started_at),
        finished_at=timestamp(swap.finished_at),
    )


def version_event(swap: Swap, manifest: Manifest | None, replica: str) -> events_pb2.VersionEvent:
    """What a swap attempt tells the versions topic."""
    event = events_pb2.VersionEvent(
        type=events_pb2.VERSION_EVENT_TYPE_SWAP_APPLIED if swap.ok else events_pb2.VERSION_EVENT_TYPE_SWAP_FAILED,
        version_id=swap.to_version,
        reason=swap.error or f"serving as {swap.role}",
        actor="serving",
        swap=swap_record(swap, replica),
        occurred_at=timestamp(swap.finished_at),
    )
    if manifest is not None:
        event.parent_version_id = manifest.parent or ""
        event.kind = KINDS[manifest.kind]
        event.version_created_at.CopyFrom(timestamp(manifest.created_at))
    return event


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        registry: Registry,
        pointers: PointerStore,
        manager: VersionManager,
        port: int,
        authenticator: Authenticator,
    ) -> None:
        self._authenticator = authenticator
        self._registry = registry
        self._pointers = pointers
        self._manager = manager
        self.replica = f"{socket.gethostname()}:{port}"

    def status(self) -> admin_pb2.ServingStatus:
        router = self._manager.router
        as_of = Timestamp()
        as_of.GetCurrentTime()
        return admin_pb2.ServingStatus(
            replica=self.replica,
            current_version_id=router.current.version,
            canary_version_id=router.canary.version if router.canary else "",
            canary_share=router.canary_share if router.canary else 0.0,
            swaps=[swap_record(swap, self.replica) for swap in self._manager.history],
            as_of=as_of,
        )

    async def ListVersions(
        self, request: admin_pb2.ListVersionsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListVersionsResponse:
        await self._authorize(context)
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        newest_first = [
            m for m in reversed(self._registry.versions()) if not request.page_token or m.id < request.page_token
        ]
        page = newest_first[:size]
        token = page[-1].id if len(newest_first) > size else ""
        return admin_pb2.ListVersionsResponse(versions=[await self._describe(m) for m in page], next_page_token=token)

    async def GetVersion(
        self, request: admin_pb2.GetVersionRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetVersionResponse:
        await self._authorize(context)
        manifest = await self._manifest(request.version_id, context)
        return admin_pb2.GetVersionResponse(
            version=await self._describe(manifest), manifest_json=manifest.model_dump_json()
        )

    async def SetCanary(
        self, request: admin_pb2.SetCanaryRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetCanaryResponse:
        await self._authorize(context)
        if not 0.0 < request.share <= 1.0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"share: must be in (0, 1], got {request.share:g}")
        await self._check(request.version_id, "canary", context)
        await self._pointers.set_canary(request.version_id, request.share)
        await self._manager.reconcile()
        return admin_pb2.SetCanaryResponse(status=self.status())

    async def Promote(
        self, request: admin_pb2.PromoteRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.PromoteResponse:
        await self._authorize(context)
        await self._check(request.version_id, "current", context)
        await self._pointers.promote(request.version_id)
        await self._manager.reconcile()
        return admin_pb2.PromoteResponse(status=self.status())

    async def Rollback(
        self, request: admin_pb2.RollbackRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RollbackResponse:
        await self._authorize(context)
        try:
            rolled = await self._pointers.rollback(request.version_id or None)
        except PointerError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise  # abort raises; this line is for type checkers
        await self._manager.reconcile()
        return admin_pb2.RollbackResponse(rolled_back_version_id=rolled.version, status=self.status())

    async def GetStatus(
        self, request: admin_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetStatusResponse:
        await self._authorize(context)
        return admin_pb2.GetStatusResponse(status=self.status())

    async def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        """Only operators' keys (auth.api_keys[].admin) see and change what serves; inference keys get
        PERMISSION_DENIED. With auth off every caller may."""
        principal = await authenticate(self._authenticator, context)
        if not principal.admin:
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"API key {principal.key_name!r} is not an admin key: AdminService takes keys with admin: true",
            )

    async def _manifest(self, version_id: str, context: grpc.aio.ServicerContext) -> Manifest:
        if not version_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "version_id: required")
        try:
            return self._registry.get(version_id)
        except RegistryError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
            raise  # abort raises; this line is for type checkers

    async def _check(self, version_id: str, role: str, context: grpc.aio.ServicerContext) -> None:
        """Refuse before any pointer moves: a version that cannot apply never becomes current or canary."""
        await self._manifest(version_id, context)
        try:
            self._manager.check(version_id, role)
        except SwapRefused as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    async def _describe(self, manifest: Manifest) -> admin_pb2.ModelVersion:
        pointers = await self._pointers.read()
        if manifest.id == pointers.current:
            state = admin_pb2.VERSION_STATE_CURRENT
        elif manifest.id == pointers.canary:
            state = admin_pb2.VERSION_STATE_CANARY
        elif manifest.id in self._manager.refused:
            state = admin_pb2.VERSION_STATE_REFUSED
        else:
            state = admin_pb2.VERSION_STATE_AVAILABLE
        return admin_pb2.ModelVersion(
            version_id=manifest.id,
            parent_version_id=manifest.parent or "",
            kind=KINDS[manifest.kind],
            base_version_id=manifest.base or "",
            algorithm=manifest.algorithm,
            state=state,
            metrics=manifest.metrics,
            created_at=timestamp(manifest.created_at),
        )
