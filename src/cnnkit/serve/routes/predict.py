"""``POST /v1/models/{name}/predict`` and ``POST /predict``: an answer for each image.

Each image is answered on its own: the ones that decode get the task's answer
(single-label: their top classes), the ones that do not get their own ``error``
(``{"status", "detail"}``) in their place, and the request succeeds (200) when at least
one image was read. When none was, the request fails with their status (the one they
share, else 400) and the same per-image list.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from cnnkit.base import log
from cnnkit.serve.batcher import QueueFull
from cnnkit.serve.loading import ServedModel
from cnnkit.serve.state import RETRY_AFTER_S, ServerState, server_state
from cnnkit.serve.uploads import Decoded, decode_uploads, read_uploads

THRESHOLD_HELP = ("Answer 'unknown' for an image whose top probability is below this "
                  "(0-1); the run's report shows the accuracy at each threshold.")
TOP_K_HELP = "Classes per image (default: the server's --top-k)."

IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                             "description": "One or more images (any field name)."},
                    "top_k": {"type": "integer", "minimum": 1},
                    "threshold": {"type": "number", "minimum": 0, "maximum": 1}}}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "One entry per image, in the order sent: its prediction, or its "
                         "own `error` ({status, detail}) when it could not be read."},
    400: {"description": "No image could be read (each entry of `predictions` says why), "
                         "or the request holds none."},
    413: {"description": "The body, an image or the number of images is over the limit."},
    415: {"description": "Not an image in an allowed format (every image, or the body)."},
    503: {"description": "Warming up, or too many images waiting: retry (Retry-After)."},
}

router = APIRouter(tags=["predict"])


@router.post("/v1/models/{name}/predict", openapi_extra=IMAGE_BODY, responses=ANSWERS)
async def predict(name: str, request: Request,
                  top_k: int | None = Query(None, ge=1, description=TOP_K_HELP),
                  threshold: float | None = Query(None, ge=0, le=1, description=THRESHOLD_HELP),
                  state: ServerState = Depends(server_state)) -> JSONResponse:
    """Top-k classes with probabilities for each image: multipart files or raw bytes."""
    return await answer(state, state.model(name), request, top_k, threshold)


@router.post("/predict", openapi_extra=IMAGE_BODY, responses=ANSWERS)
async def predict_only(request: Request,
                       top_k: int | None = Query(None, ge=1, description=TOP_K_HELP),
                       threshold: float | None = Query(None, ge=0, le=1,
                                                       description=THRESHOLD_HELP),
                       state: ServerState = Depends(server_state)) -> JSONResponse:
    """As ``/v1/models/{name}/predict``, when the server holds one model."""
    return await answer(state, state.only_model(), request, top_k, threshold)


async def answer(state: ServerState, served: ServedModel, request: Request,
                 top_k: int | None, threshold: float | None) -> JSONResponse:
    """Read, decode and predict a request's images; one entry per image."""
    config = state.config
    uploads, form = await read_uploads(request, config.max_files)
    k = top_k if top_k is not None else _form_top_k(form.get("top_k"), config.top_k)
    if threshold is None:
        threshold = _form_threshold(form.get("threshold"))
    if not served.ready:
        raise HTTPException(503, f"{served.name} is still warming up; retry in a moment.",
                            headers={"Retry-After": str(RETRY_AFTER_S)})
    decoded = await asyncio.get_running_loop().run_in_executor(
        state.decoders, decode_uploads, served.classifier, uploads, config.formats)
    good = [d for d in decoded if d.image is not None]
    if not good:
        return _none_read(served, decoded)
    try:
        probs = await state.batchers[served.name].infer([d.image for d in good])
    except QueueFull as exc:
        raise HTTPException(503, f"The server is busy ({exc}); retry after "
                                 f"{RETRY_AFTER_S} s.",
                            headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    # The task turns probabilities into answers (single-label: the top-k classes).
    answers = iter(served.classifier.task.answers(probs, [d.filename for d in good],
                                                  served.classes, top_k=k,
                                                  threshold=threshold))
    # A JSONResponse straight away: FastAPI's encoder would walk the plain dict again.
    return JSONResponse({"model": served.name, "predictions": [
        _as_upload(next(answers).to_dict()) if d.image is not None else _error(d)
        for d in decoded]})


def _none_read(served: ServedModel, decoded: list[Decoded]) -> JSONResponse:
    """No image of the request could be read: their shared status (else 400), the first
    one's reason (with a count), and each image's own."""
    statuses = {d.status for d in decoded}
    status = statuses.pop() if len(statuses) == 1 else 400
    first = decoded[0].detail or ""
    detail = first if len(decoded) == 1 else (
        f"None of the {len(decoded)} images could be read: {first} (each image's reason is "
        "in predictions)")
    return JSONResponse({"detail": detail, "model": served.name,
                         "predictions": [_error(d) for d in decoded]}, status_code=status)


def _error(d: Decoded) -> dict[str, Any]:
    return {"filename": d.filename, "error": {"status": d.status, "detail": d.detail}}


def _form_top_k(value: str | None, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        k = int(value)
    except ValueError:
        k = 0
    if k < 1:
        raise HTTPException(422, f"top_k must be a whole number of at least 1. "
                                 f"Received: {value!r}")
    return k


def _form_threshold(value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        p = float(value)
    except ValueError:
        p = math.nan
    if not 0 <= p <= 1:
        raise HTTPException(422, f"threshold must be a probability from 0 to 1, e.g. 0.8. "
                                 f"Received: {log.cut(repr(value), 60)}")
    return p


def _as_upload(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer as the API gives it: the upload's ``filename`` first, where a file's
    answer has its ``path``."""
    return {"filename": answer.pop("path"), **answer}
