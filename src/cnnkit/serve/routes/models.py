"""What the server holds: its models, their classes, input and counters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse

from cnnkit.serve.state import ServerState, onnx_path, server_state

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


@router.get("/v1/models/{name}/model.onnx", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
async def onnx_file(name: str, state: ServerState = Depends(server_state)) -> FileResponse:
    """The ONNX file the model runs on, for a client's own runtime (the page runs it with
    onnxruntime-web); 404 when the model runs on torch."""
    served = state.model(name)
    path = onnx_path(served)
    if path is None:
        raise HTTPException(404, f"{name} runs on {served.backend}, not on an ONNX file; "
                                 "serve it with --backend onnx (or auto, on a CPU) to "
                                 "download it or run it in the browser.")
    return FileResponse(path, media_type="application/octet-stream",
                        filename=f"{name}.{'int8.' if served.backend == 'onnx-int8' else ''}onnx")
