"""The FastAPI application: prediction, model information, health, and the web page."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnkit._version import __version__
from cnnkit.base import log
from cnnkit.serve.batcher import MicroBatcher, QueueFull
from cnnkit.serve.guard import BodyTooLarge, Guard
from cnnkit.serve.hardening import protect
from cnnkit.serve.loading import ServedModel
from cnnkit.serve.settings import ServeConfig
from cnnkit.serve.uploads import decode_uploads, read_uploads
from cnnkit.tasks.threshold import is_unknown, label_or_unknown

THRESHOLD_HELP = ("Answer 'unknown' for an image whose top probability is below this "
                  "(0-1); the run's report shows the accuracy at each threshold.")

STATIC = Path(__file__).parent / "static"
RETRY_AFTER_S = 1

_IMAGE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object",
                "properties": {
                    "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                             "description": "One or more images (any field name)."},
                    "top_k": {"type": "integer", "minimum": 1}}}},
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def create_app(models: dict[str, ServedModel], config: ServeConfig | None = None) -> FastAPI:
    """An ASGI app serving ``models`` (already loaded) under ``config``'s limits."""
    config = config or ServeConfig()
    batchers: dict[str, MicroBatcher] = {}
    # Decoding gets the cores the model leaves (at least one), not Starlette's 40
    # threads: more decoders than cores only take turns on them, and take them from
    # the model.
    spare = max(1, (os.cpu_count() or 1) - config.model_threads)
    decoders = ThreadPoolExecutor(spare, thread_name_prefix="cnnkit-decode")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for name, served in models.items():
            batchers[name] = MicroBatcher(
                lambda arrays, c=served.classifier: c.proba_decoded(
                    arrays, batch_size=config.max_batch_size),
                max_batch_size=config.max_batch_size, max_wait_ms=config.max_wait_ms,
                max_queue=config.max_queue, name=name,
                thread_init=lambda: torch.set_num_threads(config.model_threads))
            batchers[name].start()
        warm = asyncio.get_running_loop().create_task(_warm_up())
        yield
        warm.cancel()
        for batcher in batchers.values():
            await batcher.stop()
        decoders.shutdown(wait=True)

    async def _warm_up() -> None:
        for name, served in models.items():
            await batchers[name].run(served.warm_up)
            log.info(f"{name} is ready")

    # FastAPIOffline: FastAPI whose /docs and /redoc pages load Swagger UI and ReDoc from
    # files it ships, not from a CDN, so the API page works without a network too.
    app = FastAPIOffline(title="cnnkit", version=__version__, lifespan=lifespan,
                         description="Image classification with models trained by cnnkit.")
    app.add_middleware(Guard, max_body_bytes=config.max_request_bytes, api_key=config.api_key)
    protect(app, config.host, config.http_limits)  # the Host check, outside the key's
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    def _model(name: str) -> ServedModel:
        if name not in models:
            raise HTTPException(404, f"No model named {name!r}; this server has: "
                                     f"{', '.join(models)} (GET /v1/models).")
        return models[name]

    def _describe(served: ServedModel) -> dict[str, Any]:
        batcher = batchers.get(served.name)
        return {**served.describe(), **({"stats": batcher.stats()} if batcher else {})}

    async def _predict(served: ServedModel, request: Request, top_k: int | None,
                       threshold: float | None = None) -> JSONResponse:
        uploads, form_k = await read_uploads(request, config.max_files)
        k = top_k if top_k is not None else _form_top_k(form_k, config.top_k)
        if not served.ready:
            raise HTTPException(503, f"{served.name} is still warming up; retry in a moment.",
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        arrays = await asyncio.get_running_loop().run_in_executor(
            decoders, decode_uploads, served.classifier, uploads, config.formats)
        try:
            probs = await batchers[served.name].infer(arrays)
        except QueueFull as exc:
            raise HTTPException(503, f"The server is busy ({exc}); retry after "
                                     f"{RETRY_AFTER_S} s.",
                                headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        # A JSONResponse straight away: FastAPI's encoder would walk the plain dict again.
        return JSONResponse({"model": served.name,
                             "predictions": [_top(served.classes, up.filename, row, k,
                                                  threshold)
                                             for up, row in zip(uploads, probs)]})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health", tags=["status"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["status"])
    async def ready() -> JSONResponse:
        """Readiness: every model is loaded and has run once."""
        waiting = [m.name for m in models.values() if not m.ready]
        if waiting:
            return JSONResponse({"status": "warming up", "waiting": waiting}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        return JSONResponse({"status": "ready", "models": list(models)})

    @app.get("/v1/models", tags=["models"])
    async def list_models() -> dict[str, Any]:
        """Every model this server holds."""
        return {"models": [_describe(m) for m in models.values()]}

    @app.get("/v1/models/{name}", tags=["models"])
    async def describe(name: str) -> dict[str, Any]:
        """Classes, input size, preprocessing, architecture, versions, and counters of the
        batches run so far."""
        return _describe(_model(name))

    @app.post("/v1/models/{name}/predict", tags=["predict"], openapi_extra=_IMAGE_BODY)
    async def predict(name: str, request: Request,
                      top_k: int | None = Query(None, ge=1, description="Classes per image "
                                                f"(default {config.top_k})."),
                      threshold: float | None = Query(None, ge=0, le=1,
                                                      description=THRESHOLD_HELP)
                      ) -> JSONResponse:
        """Top-k classes with probabilities for each image: multipart files or raw bytes."""
        return await _predict(_model(name), request, top_k, threshold)

    @app.post("/predict", tags=["predict"], openapi_extra=_IMAGE_BODY)
    async def predict_only(request: Request,
                           top_k: int | None = Query(None, ge=1),
                           threshold: float | None = Query(None, ge=0, le=1,
                                                           description=THRESHOLD_HELP)
                           ) -> JSONResponse:
        """As ``/v1/models/{name}/predict``, when the server holds one model."""
        if len(models) != 1:
            raise HTTPException(404, f"This server holds {len(models)} models; POST to "
                                     "/v1/models/{name}/predict with one of: "
                                     f"{', '.join(models)}.")
        return await _predict(next(iter(models.values())), request, top_k, threshold)

    return app


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


def _top(classes: tuple[str, ...], filename: str, row: np.ndarray, k: int,
         threshold: float | None = None) -> dict[str, Any]:
    """One image's answer, as ``Prediction.to_dict`` writes it: with a threshold, the
    label is ``unknown`` below it and ``top`` keeps the model's classes."""
    order = np.argsort(-row)[:min(k, len(classes))]
    top = [{"label": classes[i], "probability": float(row[i])} for i in order]
    p = top[0]["probability"]
    out: dict[str, Any] = {"filename": filename,
                           "label": label_or_unknown(top[0]["label"], p, threshold),
                           "probability": p}
    if threshold is not None:
        out.update(unknown=is_unknown(p, threshold), threshold=threshold)
    out["top"] = top
    return out


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = (f"No route {request.method} {request.url.path}; see /docs for the API "
                      "or / for the web page.")
        elif exc.status_code == 405:
            detail = (f"{request.method} is not allowed on {request.url.path}; see /docs "
                      "for each route's methods.")
        return JSONResponse({"detail": detail}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())[1:]) or "request"
            parts.append(f"{where}: {err.get('msg')} (received {err.get('input')!r})")
        return JSONResponse({"detail": "; ".join(parts) + "."}, status_code=422)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413,
                            headers={"Connection": "close"})

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.error(f"{request.method} {request.url.path} failed: {type(exc).__name__}: {exc}")
        return JSONResponse({"detail": "The server failed while answering; its log says "
                                       "why. The request can be retried."}, status_code=500)
