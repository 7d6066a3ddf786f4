"""The FastAPI application: its state, middleware, error answers and lifespan; the routes
are in :mod:`cnnkit.serve.routes`."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnkit._version import __version__
from cnnkit.base import log
from cnnkit.serve.batcher import MicroBatcher
from cnnkit.serve.guard import BodyTooLarge, Guard
from cnnkit.serve.hardening import protect
from cnnkit.serve.loading import ServedModel
from cnnkit.serve.routes import ROUTERS
from cnnkit.serve.routes.status import STATIC
from cnnkit.serve.settings import ServeConfig
from cnnkit.serve.state import ServerState


def create_app(models: dict[str, ServedModel], config: ServeConfig | None = None) -> FastAPI:
    """An ASGI app serving ``models`` (already loaded) under ``config``'s limits.

    What the routes share (models, options, batchers, decoders) is the app's
    :class:`~cnnkit.serve.state.ServerState`, ``app.state.cnnkit``.
    """
    config = config or ServeConfig()
    # Decoding gets the cores the model leaves (at least one), not Starlette's 40
    # threads: more decoders than cores only take turns on them, and take them from
    # the model.
    spare = max(1, (os.cpu_count() or 1) - config.model_threads)
    state = ServerState(models, config,
                        ThreadPoolExecutor(spare, thread_name_prefix="cnnkit-decode"))
    # FastAPIOffline: FastAPI whose /docs and /redoc pages load Swagger UI and ReDoc from
    # files it ships, not from a CDN, so the API page works without a network too.
    app = FastAPIOffline(title="cnnkit", version=__version__, lifespan=_lifespan,
                         description="Image classification with models trained by cnnkit.")
    app.state.cnnkit = state
    app.add_middleware(Guard, max_body_bytes=config.max_request_bytes, api_key=config.api_key)
    protect(app, config.host, config.http_limits)  # the Host check, outside the key's
    _add_error_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in ROUTERS:
        app.include_router(router)
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """A batcher per model, started, and the models warmed up; all stopped at the end."""
    state: ServerState = app.state.cnnkit
    config = state.config
    for name, served in state.models.items():
        state.batchers[name] = MicroBatcher(
            lambda arrays, c=served.classifier: c.answer_inputs(
                arrays, batch_size=config.max_batch_size),
            max_batch_size=config.max_batch_size, max_wait_ms=config.max_wait_ms,
            max_queue=config.max_queue, name=name,
            thread_init=lambda: torch.set_num_threads(config.model_threads))
        state.batchers[name].start()
    warm = asyncio.get_running_loop().create_task(_warm_up(state))
    yield
    warm.cancel()
    for batcher in state.batchers.values():
        await batcher.stop()
    state.decoders.shutdown(wait=True)


async def _warm_up(state: ServerState) -> None:
    for name, served in state.models.items():
        await state.batchers[name].run(served.warm_up)
        log.info(f"{name} is ready")


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
