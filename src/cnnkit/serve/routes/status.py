"""The web page, liveness and readiness."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, JSONResponse

from cnnkit.serve.state import RETRY_AFTER_S, ServerState, server_state

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@router.get("/health", tags=["status"])
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready", tags=["status"])
async def ready(state: ServerState = Depends(server_state)) -> JSONResponse:
    """Readiness: every model is loaded and has run once."""
    waiting = [m.name for m in state.models.values() if not m.ready]
    if waiting:
        return JSONResponse({"status": "warming up", "waiting": waiting}, status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    return JSONResponse({"status": "ready", "models": list(state.models)})
