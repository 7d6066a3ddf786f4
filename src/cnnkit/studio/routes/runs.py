"""A project's finished runs: the list, live predictions from one (inference only), what
the analysis of one found (its report and class activation maps), the commands that use
it from a terminal, and its files to download."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, Response

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.studio import understand as understanding
from cnnkit.studio.project import BadImage, check_image
from cnnkit.studio.runs import (
    RUN_FILES,
    commands,
    exported_file,
    finished_run,
    list_runs,
    run_folder,
    zip_folder,
)
from cnnkit.studio.state import StudioState, off_loop, studio_state

TOP_K = 5

router = APIRouter()


@router.get("/api/runs")
async def runs(state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    return {"runs": await off_loop(list_runs, state.project)}


@router.post("/api/runs/{run}/predict")
async def predict(run: str, request: Request, top_k: int = TOP_K,
                  threshold: float | None = None,
                  state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    data = await request.body()
    if not data:
        raise HTTPException(400, "Send an image as the request body.")
    from cnnkit.tasks.threshold import check_threshold

    threshold = check_threshold(threshold, "threshold")
    predictors = state.predictors

    def answer() -> dict[str, Any]:
        clf = predictors.get(run)
        began = time.perf_counter()
        try:
            found = clf.predict([data], top_k=max(1, min(top_k, 20)), threshold=threshold)
        except CnnkitError as exc:
            check_image(data, "The file")  # says what is wrong as an upload's refusal does
            raise BadImage(str(exc).replace("<image 0>", "the image"), 400) from None
        top = found[0]  # the predictor's own answer: its unknown rule holds here too
        note = clf.task.load_note()  # what cnnkit predict warns of (no calibration)
        return {"label": top.label, "probability": top.probability,
                "note": note and note.replace("--threshold", "the unknown threshold"),
                "reason": top.reason, "unknown_score": top.unknown_score,
                "top": [{"class": c, "probability": q} for c, q in top.top],
                "ms": round(1000 * (time.perf_counter() - began), 1)}
    return await off_loop(answer)


@router.get("/api/runs/{run}/understand")
async def run_understanding(run: str,
                            state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    folder = run_folder(state.project, run)
    report = understanding.read(folder)
    if report is None:
        raise HTTPException(404, f"Run {run!r} has not been analysed yet; start the "
                                 "analysis from the Understand tab.")
    return report


@router.get("/api/runs/{run}/cam/{name}")
async def run_cam(run: str, name: str,
                  state: StudioState = Depends(studio_state)) -> FileResponse:
    folder = run_folder(state.project, run) / understanding.FOLDER
    if not (name.startswith("cam-") and name.endswith(".png") and
            name[4:-4].isdigit() and (folder / name).is_file()):
        raise HTTPException(404, f"No picture {log.cut(repr(name))} in run {run!r}.")
    return FileResponse(folder / name)


@router.get("/api/runs/{run}/commands")
async def run_commands(run: str, state: StudioState = Depends(studio_state)) -> dict[str, str]:
    return commands(state.project, run)


@router.get("/api/runs/{run}/files/{name}")
async def run_file(run: str, name: str,
                   state: StudioState = Depends(studio_state)) -> FileResponse:
    project = state.project
    folder = run_folder(project, run)
    path = await off_loop(exported_file, folder, name)
    return FileResponse(path, media_type=RUN_FILES[name],
                        filename=f"{project.root.name}-{run}-{name}")


@router.get("/api/runs/{run}/zip")
async def run_zip(run: str, state: StudioState = Depends(studio_state)) -> Response:
    project = state.project
    folder = finished_run(project, run, "download its folder")
    data = await off_loop(zip_folder, folder)
    name = quote(f"{project.root.name}-{run}.zip")  # as FileResponse names a download
    return Response(data, media_type="application/zip", headers={
        "Content-Disposition": f"attachment; filename*=utf-8''{name}"})
