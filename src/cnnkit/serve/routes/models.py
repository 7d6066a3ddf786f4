"""What the server holds: its models, their classes, input and counters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from cnnkit.serve.state import ServerState, server_state

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(state: ServerState = Depends(server_state)) -> dict[str, Any]:
    """Every model this server holds."""
    return {"models": [state.describe(m) for m in state.models.values()]}


@router.get("/v1/models/{name}")
async def describe(name: str, state: ServerState = Depends(server_state)) -> dict[str, Any]:
    """Classes, input size, preprocessing, architecture, versions, and counters of the
    batches run so far."""
    return state.describe(state.model(name))
