"""Jobs in worker processes: start one (its options from the page, checked), list them,
stop one, stream a job's events to the page (Server-Sent Events) and read a data
check's findings."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import StreamingResponse

from cnnkit.base import log
from cnnkit.studio.project import Project
from cnnkit.studio.runs import finished_run, read_json
from cnnkit.studio.state import StudioState, body_json, off_loop, studio_state

SSE_POLL_S = 0.25
SSE_HEARTBEAT_S = 15.0
MODES = ("quick", "better", "scratch")
_GROUP_SEP = re.compile(r" = | ~ ")
_LABELLED = re.compile(r" \([^()]*\)$")

router = APIRouter()


@router.post("/api/jobs")
async def start_job(request: Request,
                    state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    body = body_json(await request.body())
    kind = body.get("kind")
    options = _job_options(kind, body.get("options") or {}, state.project)
    job = await off_loop(state.jobs.start, kind, options)
    return job.describe()


@router.get("/api/jobs")
async def list_jobs(kind: str | None = None,
                    state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    found = [j for j in state.jobs.all() if kind is None or j.kind == kind]
    return {"jobs": [j.describe() for j in found[-20:]]}


@router.get("/api/jobs/{job_id}")
async def get_job(job_id: str, state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    return state.jobs.get(job_id).describe()


@router.post("/api/jobs/{job_id}/stop")
async def stop_job(job_id: str, state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    return (await off_loop(state.jobs.stop, job_id)).describe()


@router.get("/api/jobs/{job_id}/events")
async def job_events(job_id: str, request: Request,
                     state: StudioState = Depends(studio_state)) -> StreamingResponse:
    job = state.jobs.get(job_id)
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


@router.get("/api/jobs/{job_id}/check")
async def check_result(job_id: str,
                       state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    job = state.jobs.get(job_id)
    result = read_json(job.folder / "check.json")
    if not result:
        raise HTTPException(404, "This check has no result yet.")
    return {**result, "findings": [_finding_images(f, state.project)
                                   for f in result.get("findings", [])]}


def _job_options(kind: object, options: dict[str, Any], project: Project) -> dict[str, Any]:
    """The options a job accepts from the page, checked."""
    if kind in ("plan", "train", "check"):  # a check measures images for the mode's input
        mode = options.get("mode", "quick")
        if mode not in MODES:
            raise HTTPException(400, f"mode must be one of {', '.join(MODES)}. Received: "
                                     f"{log.cut(repr(mode))}")
        out: dict[str, Any] = {"mode": mode}
        if kind == "check":
            return out
        epochs = options.get("epochs")
        if epochs not in (None, ""):
            if not isinstance(epochs, int) or isinstance(epochs, bool) or not 1 <= epochs <= 500:
                raise HTTPException(400, f"epochs must be a whole number from 1 to 500. "
                                         f"Received: {log.cut(repr(epochs))}")
            out["epochs"] = epochs
        return out
    if kind in ("export", "understand"):
        folder = finished_run(project, options.get("run"),
                              "export it" if kind == "export" else "analyse it")
        out = {"run": folder.name}
        if kind == "export":
            out["int8"] = bool(options.get("int8"))
        return out
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
