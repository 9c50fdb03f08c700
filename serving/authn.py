"""Authenticating a gRPC call with the shared API-key rules (trimtab.auth)."""

from __future__ import annotations

import grpc

from trimtab.auth import Authenticator, Principal, Unauthenticated, credential


async def authenticate(authenticator: Authenticator, context: grpc.aio.ServicerContext) -> Principal:
    """The caller's principal, or the RPC aborted with UNAUTHENTICATED and the reason."""
    try:
        return authenticator.principal(credential(context.invocation_metadata() or ()))
    except Unauthenticated as exc:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        raise  # abort() raises; this keeps type checkers informed
