"""The studio's web app: the page, and a JSON API over one project.

The server edits the project (:mod:`.project`), starts jobs in worker processes
(:mod:`.jobs`) and streams their events to the page (Server-Sent Events), and answers
predictions from finished runs (inference only: this process never imports training).
Every route but the page's own files needs the API key when one is set (the header
``Authorization: Bearer KEY`` or the ``cnnkit_studio_key`` cookie the page sets), and
every request that changes something must carry ``X-Studio: 1`` from the page's own
origin, which another web site's form or script cannot send (no cross-site writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import json
import os
import re
import shlex
import threading
import time
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from cnnkit._version import __version__
from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.serve.guard import BodyTooLarge, Guard
from cnnkit.serve.hardening import HttpLimits, protect
from cnnkit.studio import understand as understanding
from cnnkit.studio.jobs import Jobs
from cnnkit.studio.project import MAX_IMAGE_BYTES, BadImage, Conflict, NotFound, Project

STATIC = Path(__file__).parent / "static"
KEY_COOKIE = "cnnkit_studio_key"
MAX_BODY = MAX_IMAGE_BYTES + 64 * 1024
PUBLIC = ("/", "/favicon.ico", "/health")
TOP_K = 5
RUN_FILES = {"model.onnx": "application/octet-stream",
             "model.int8.onnx": "application/octet-stream"}
SSE_POLL_S = 0.25
SSE_HEARTBEAT_S = 15.0
MODES = ("quick", "better", "scratch")
_GROUP_SEP = re.compile(r" = | ~ ")
_LABELLED = re.compile(r" \([^()]*\)$")


class StudioGuard:
    """The key (header or cookie) on every route but the page's files, and the
    same-origin mark on every request that changes something."""

    def __init__(self, app: Any, *, api_key: str | None) -> None:
        self.app = app
        self.key = api_key.encode() if api_key else None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", ())}
        if self.key is not None and path not in PUBLIC and not path.startswith("/static/") \
                and not self._authorised(headers):
            await _answer(send, 401, "This studio needs its API key: enter it on the page, or "
                          "send 'Authorization: Bearer <key>' (the key given to cnnkit studio "
                          "with --api-key or CNNKIT_API_KEY).")
            return
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            origin = headers.get("origin")
            host = headers.get("host", "")
            if headers.get("x-studio") != "1" or (
                    origin is not None and origin.split("://", 1)[-1] != host):
                await _answer(send, 403, "Changes are accepted from the studio's own page "
                              "only (the X-Studio: 1 header, from its origin).")
                return
        await self.app(scope, receive, send)

    def _authorised(self, headers: dict[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(),
                                                               self.key or b""):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == KEY_COOKIE:
                from urllib.parse import unquote

                return hmac.compare_digest(unquote(value).encode(), self.key or b"")
        return False


async def _answer(send: Any, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class Predictors:
    """Finished runs loaded for prediction (on the CPU, one thread: training has the
    rest), the newest few kept."""

    KEEP = 3

    def __init__(self, project: Project) -> None:
        self.project = project
        self._loaded: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, run: str) -> Any:
        folder = run_folder(self.project, run)
        stamp = os.stat(folder / "model.safetensors").st_mtime
        with self._lock:
            hit = self._loaded.get(run)
            if hit is not None and hit[0] == stamp:
                return hit[1]
            import torch

            from cnnkit.runtime.predict import Classifier

            torch.set_num_threads(1)
            clf = Classifier.load(folder, "cpu", "torch")
            self._loaded[run] = (stamp, clf)
            while len(self._loaded) > self.KEEP:
                self._loaded.pop(next(iter(self._loaded)))
            return clf


def run_folder(project: Project, run: object) -> Path:
    """The folder of run ``run`` (a name among the project's runs, checked)."""
    runs = project.runs_dir
    if isinstance(run, str) and run and "/" not in run and "\\" not in run \
            and not run.startswith(".") and runs.is_dir():
        for entry in os.scandir(runs):
            if entry.name == run and entry.is_dir(follow_symlinks=False) and \
                    os.path.isfile(os.path.join(entry.path, "model.safetensors")):
                return Path(entry.path)
    raise NotFound(f"No finished run {log.cut(repr(run))} in this project.")


def list_runs(project: Project) -> list[dict[str, Any]]:
    out = []
    if not project.runs_dir.is_dir():
        return out
    entries = [e for e in os.scandir(project.runs_dir) if e.is_dir(follow_symlinks=False)]
    for entry in sorted(entries, key=lambda e: e.stat().st_mtime, reverse=True):  # newest
        folder = Path(entry.path)
        if not entry.is_dir(follow_symlinks=False) or not (folder / "model.json").is_file():
            continue
        config = _json(folder / "config.json")
        test = _json(folder / "test_metrics.json")
        out.append({"name": entry.name, "mode": config.get("mode"),
                    "model": config.get("model"), "img_size": config.get("img_size"),
                    "test_accuracy": test.get("accuracy"), "n_test": test.get("n"),
                    "finished": (folder / "model.safetensors").is_file(),
                    "files": [f for f in RUN_FILES if (folder / f).is_file()],
                    "understood": (folder / "studio" / "understand.json").is_file(),
                    "time": entry.stat().st_mtime})
    return out


def commands(project: Project, run: str) -> dict[str, str]:
    """The exact commands that serve and predict with ``run`` from a terminal."""
    folder = shlex.quote(str(run_folder(project, run)))
    return {"serve": f"cnnkit serve {folder}",
            "predict": f"cnnkit predict {folder} photo.jpg --top-k 3",
            "evaluate": f"cnnkit evaluate {folder}",
            "predict_onnx": f"cnnkit predict {folder} photo.jpg --backend onnx",
            "train": f"cnnkit train {shlex.quote(str(project.root))}"}


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _body_json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        raise HTTPException(400, "The request body must be JSON.") from None
    if not isinstance(value, dict):
        raise HTTPException(400, f"The request body must be a JSON object. Received: "
                                 f"{log.cut(repr(value))}")
    return value


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
    app.add_middleware(Guard, max_body_bytes=MAX_BODY, api_key=None)
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

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    async def off_loop(fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    # -- the page -----------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-eval'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; "
            "media-src 'self' blob: mediastream:; connect-src 'self'; frame-ancestors 'none'"})

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    # -- the project --------------------------------------------------------------------

    @app.get("/api/project")
    async def get_project() -> dict[str, Any]:
        def read() -> dict[str, Any]:
            active = jobs.active("train")
            return {"name": project.root.name, "root": str(project.root),
                    "classes": [c.__dict__ for c in project.classes()],
                    "runs": list_runs(project),
                    "training": active.id if active else None,
                    "max_image_bytes": MAX_IMAGE_BYTES, "version": __version__}
        return await off_loop(read)

    @app.post("/api/classes")
    async def add_class(request: Request) -> dict[str, Any]:
        body = _body_json(await request.body())
        return {"name": await off_loop(project.add_class, body.get("name"))}

    @app.post("/api/classes/{name}/rename")
    async def rename_class(name: str, request: Request) -> dict[str, Any]:
        body = _body_json(await request.body())
        return {"name": await off_loop(project.rename_class, name, body.get("name"))}

    @app.delete("/api/classes/{name}")
    async def delete_class(name: str) -> dict[str, Any]:
        return {"undo": await off_loop(project.delete_class, name)}

    @app.get("/api/classes/{name}/images")
    async def list_images(name: str) -> dict[str, Any]:
        images = await off_loop(project.images, name)
        return {"class": name, "images": [i.__dict__ for i in images]}

    @app.post("/api/classes/{name}/images")
    async def add_image(name: str, request: Request,
                        filename: str = "the upload") -> dict[str, Any]:
        data = await request.body()
        return {"name": await off_loop(project.add_image, name, data, filename)}

    @app.get("/api/classes/{name}/images/{image:path}")
    async def get_image(name: str, image: str) -> FileResponse:
        path = await off_loop(project.image_path, name, image)
        return FileResponse(path, headers={"Cache-Control": "private, max-age=60",
                                           "X-Content-Type-Options": "nosniff"})

    @app.delete("/api/classes/{name}/images/{image:path}")
    async def delete_image(name: str, image: str) -> dict[str, Any]:
        return {"undo": await off_loop(project.delete_image, name, image)}

    @app.post("/api/classes/{name}/move/{image:path}")
    async def move_image(name: str, image: str, request: Request) -> dict[str, Any]:
        body = _body_json(await request.body())
        return {"name": await off_loop(project.move_image, name, image, body.get("to"))}

    @app.post("/api/undo/{entry}")
    async def undo(entry: str) -> dict[str, Any]:
        return await off_loop(project.undo, entry)

    # -- jobs ---------------------------------------------------------------------------

    @app.post("/api/jobs")
    async def start_job(request: Request) -> dict[str, Any]:
        body = _body_json(await request.body())
        kind = body.get("kind")
        options = _job_options(kind, body.get("options") or {}, project)
        job = await off_loop(jobs.start, kind, options)
        return job.describe()

    @app.get("/api/jobs")
    async def list_jobs(kind: str | None = None) -> dict[str, Any]:
        found = [j for j in jobs.all() if kind is None or j.kind == kind]
        return {"jobs": [j.describe() for j in found[-20:]]}

    @app.get("/api/jobs/{job_id}")
    async def get_job(job_id: str) -> dict[str, Any]:
        return jobs.get(job_id).describe()

    @app.post("/api/jobs/{job_id}/stop")
    async def stop_job(job_id: str) -> dict[str, Any]:
        return (await off_loop(jobs.stop, job_id)).describe()

    @app.get("/api/jobs/{job_id}/events")
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        job = jobs.get(job_id)
        given = request.headers.get("last-event-id") or request.query_params.get("from", "0")
        start = int(given) if given.isdigit() else 0

        async def stream() -> AsyncIterator[bytes]:
            offset, quiet = start, 0.0
            yield b"retry: 1000\n\n"
            while not await request.is_disconnected():
                running = job.running()
                events, offset2 = job.events(offset)
                for event in events:
                    yield f"id: {offset2}\ndata: {json.dumps(event)}\n\n".encode()
                offset = offset2
                if not events and not running:
                    status = json.dumps({"kind": "status", **job.status()})
                    yield f"id: {offset}\nevent: done\ndata: {status}\n\n".encode()
                    return
                quiet = 0.0 if events else quiet + SSE_POLL_S
                if quiet >= SSE_HEARTBEAT_S:
                    quiet = 0.0
                    yield b": alive\n\n"
                await asyncio.sleep(SSE_POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store",
                                          "X-Accel-Buffering": "no"})

    @app.get("/api/jobs/{job_id}/check")
    async def check_result(job_id: str) -> dict[str, Any]:
        job = jobs.get(job_id)
        result = _json(job.folder / "check.json")
        if not result:
            raise HTTPException(404, "This check has no result yet.")
        return {**result, "findings": [_finding_images(f, project)
                                       for f in result.get("findings", [])]}

    # -- runs ---------------------------------------------------------------------------

    @app.get("/api/runs")
    async def runs() -> dict[str, Any]:
        return {"runs": await off_loop(list_runs, project)}

    @app.post("/api/runs/{run}/predict")
    async def predict(run: str, request: Request, top_k: int = TOP_K,
                      threshold: float | None = None) -> dict[str, Any]:
        data = await request.body()
        if not data:
            raise HTTPException(400, "Send an image as the request body.")
        from cnnkit.tasks.threshold import check_threshold

        threshold = check_threshold(threshold, "threshold")

        def answer() -> dict[str, Any]:
            clf = predictors.get(run)
            began = time.perf_counter()
            try:
                found = clf.predict([data], top_k=max(1, min(top_k, 20)), threshold=threshold)
            except CnnkitError as exc:
                raise BadImage(str(exc).replace("<image 0>", "the image"), 400) from None
            top = found[0]  # the predictor's own answer: its unknown rule holds here too
            return {"label": top.label, "probability": top.probability,
                    "reason": top.reason, "unknown_score": top.unknown_score,
                    "top": [{"class": c, "probability": q} for c, q in top.top],
                    "ms": round(1000 * (time.perf_counter() - began), 1)}
        return await off_loop(answer)

    @app.get("/api/runs/{run}/understand")
    async def run_understanding(run: str) -> dict[str, Any]:
        folder = run_folder(project, run)
        report = understanding.read(folder)
        if report is None:
            raise HTTPException(404, f"Run {run!r} has not been analysed yet; start the "
                                     "analysis from the Understand tab.")
        return report

    @app.get("/api/runs/{run}/cam/{name}")
    async def run_cam(run: str, name: str) -> FileResponse:
        folder = run_folder(project, run) / understanding.FOLDER
        if not (name.startswith("cam-") and name.endswith(".png") and
                name[4:-4].isdigit() and (folder / name).is_file()):
            raise HTTPException(404, f"No picture {log.cut(repr(name))} in run {run!r}.")
        return FileResponse(folder / name)

    @app.get("/api/runs/{run}/commands")
    async def run_commands(run: str) -> dict[str, str]:
        return commands(project, run)

    @app.get("/api/runs/{run}/files/{name}")
    async def run_file(run: str, name: str) -> FileResponse:
        folder = run_folder(project, run)
        if name not in RUN_FILES or not (folder / name).is_file():
            raise HTTPException(404, f"Run {run!r} has no {log.cut(repr(name))}; export it "
                                     "from the Ship tab first.")
        return FileResponse(folder / name, media_type=RUN_FILES[name],
                            filename=f"{project.root.name}-{run}-{name}")

    @app.get("/api/runs/{run}/zip")
    async def run_zip(run: str) -> Response:
        folder = run_folder(project, run)
        data = await off_loop(_zip_folder, folder)
        return Response(data, media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="{project.root.name}-{run}.zip"'})

    return app


def _job_options(kind: object, options: dict[str, Any], project: Project) -> dict[str, Any]:
    """The options a job accepts from the page, checked."""
    if kind in ("plan", "train"):
        mode = options.get("mode", "quick")
        if mode not in MODES:
            raise HTTPException(400, f"mode must be one of {', '.join(MODES)}. Received: "
                                     f"{log.cut(repr(mode))}")
        out: dict[str, Any] = {"mode": mode}
        epochs = options.get("epochs")
        if epochs not in (None, ""):
            if not isinstance(epochs, int) or isinstance(epochs, bool) or not 1 <= epochs <= 500:
                raise HTTPException(400, f"epochs must be a whole number from 1 to 500. "
                                         f"Received: {log.cut(repr(epochs))}")
            out["epochs"] = epochs
        return out
    if kind in ("export", "understand"):
        out = {"run": run_folder(project, options.get("run")).name}
        if kind == "export":
            out["int8"] = bool(options.get("int8"))
        return out
    if kind == "check":
        return {}
    raise HTTPException(400, f"kind must be plan, train, export, understand or check. "
                             f"Received: {log.cut(repr(kind))}")


def _finding_images(finding: dict[str, Any], project: Project) -> dict[str, Any]:
    """A finding, with its files as (class, image) pairs the page can show."""
    images = []
    for entry in finding.get("files", [])[:24]:
        # a path, or a group the audit wrote as "A (label, split) = B (...)" or "A ~ B"
        for part in _GROUP_SEP.split(str(entry)):
            where = project.relative(_LABELLED.sub("", part))
            if where is not None and {"class": where[0], "image": where[1]} not in images:
                images.append({"class": where[0], "image": where[1]})
    return {**finding, "images": images}


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                archive.write(path, Path(folder.name) / path.relative_to(folder))
    return buffer.getvalue()
