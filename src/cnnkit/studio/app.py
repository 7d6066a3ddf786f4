"""The studio's web app: the page, and a JSON API over one project.

The server edits the project (:mod:`.project`), starts jobs in worker processes
(:mod:`.jobs`) and streams their events to the page (Server-Sent Events), and answers
predictions from finished runs (inference only: this process never imports training).
Every route but the page's own files needs the API key when one is set (the header
``Authorization: Bearer KEY`` or the ``cnnkit_studio_key`` cookie the page sets), and
every request that changes something must carry ``X-Studio: 1`` from the page's own
origin, which another web site's form or script cannot send (no cross-site writes).

This module makes the app (:func:`create_app`): its state, its guards, its error
answers and its worker threads; the routes are :mod:`.routes`' (by what they answer),
the key and origin checks :mod:`.guard`'s, the runs they read :mod:`.runs`'.
"""

from __future__ import annotations

import contextlib
import errno
import threading
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnkit._version import __version__
from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.serve.guard import BodyTooLarge, Guard
from cnnkit.serve.hardening import HttpLimits, protect
from cnnkit.studio.guard import StudioGuard
from cnnkit.studio.jobs import Jobs
from cnnkit.studio.project import MAX_IMAGE_BYTES, BadImage, Conflict, NotFound, Project
from cnnkit.studio.routes import ROUTERS
from cnnkit.studio.routes.page import STATIC
from cnnkit.studio.runs import Predictors
from cnnkit.studio.state import StudioState

MAX_BODY = MAX_IMAGE_BYTES + 64 * 1024


def create_app(project: Project, *, api_key: str | None = None, host: str = "127.0.0.1",
               spare_worker: bool = True) -> FastAPI:
    """The studio's ASGI app for ``project`` (opened, and held by the caller)."""
    jobs = Jobs(project, spare=spare_worker)
    predictors = Predictors(project)
    stop = threading.Event()

    def keep_spare() -> None:  # a spare worker whenever no job runs
        while not stop.wait(1.0):
            with contextlib.suppress(Exception):
                jobs.prepare_spare()

    def import_ahead() -> None:  # the predictor's imports, before the first live answer
        with contextlib.suppress(Exception):
            import timm  # noqa: F401

            import cnnkit.runtime.predict  # noqa: F401

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        watcher = threading.Thread(target=keep_spare, daemon=True, name="cnnkit-spare")
        jobs.prepare_spare()
        watcher.start()
        threading.Thread(target=import_ahead, daemon=True, name="cnnkit-imports").start()
        yield
        stop.set()
        jobs.close()

    app = FastAPI(title="cnnkit studio", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.jobs = jobs
    app.state.studio = StudioState(project, jobs, predictors)
    app.add_middleware(Guard, max_body_bytes=MAX_BODY, api_key=None, too_large=(
        f"The studio takes images of at most {MAX_IMAGE_BYTES // 2**20} MiB each, one a "
        "request; send a smaller one."))
    app.add_middleware(StudioGuard, api_key=api_key)
    protect(app, host, HttpLimits())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(CnnkitError)
    async def cnnkit_error(request: Request, exc: CnnkitError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) \
            else exc.status if isinstance(exc, BadImage) else 400
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in err.get('loc', ())[1:]) or 'request'}: "
                 f"{err.get('msg')} (received {log.cut(repr(err.get('input')), 40)})"
                 for err in exc.errors()]
        return JSONResponse({"detail": "; ".join(parts) + "."}, status_code=422)

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> JSONResponse:
        # a full disk, a folder made read-only or removed under the studio: said, not a
        # bare 'Internal Server Error'
        where = f" ({exc.filename})" if exc.filename else ""
        return JSONResponse({"detail": f"The project could not be changed or read: "
                                       f"{exc.strerror or exc}{where}."},
                            status_code=507 if exc.errno == errno.ENOSPC else 500)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    for router in ROUTERS:
        app.include_router(router)
    return app
