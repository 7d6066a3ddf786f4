"""The project's classes and images: list, add, rename, move and delete them, and undo a
deletion."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse

from cnnkit._version import __version__
from cnnkit.studio.project import MAX_IMAGE_BYTES
from cnnkit.studio.runs import list_runs
from cnnkit.studio.state import StudioState, body_json, off_loop, studio_state

router = APIRouter()


@router.get("/api/project")
async def get_project(state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    project, jobs = state.project, state.jobs

    def read() -> dict[str, Any]:
        active = jobs.active("train")
        return {"name": project.root.name, "root": str(project.root),
                "classes": [c.__dict__ for c in project.classes()],
                "runs": list_runs(project),
                "training": active.id if active else None,
                "max_image_bytes": MAX_IMAGE_BYTES, "version": __version__}
    return await off_loop(read)


@router.post("/api/classes")
async def add_class(request: Request,
                    state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    body = body_json(await request.body())
    return {"name": await off_loop(state.project.add_class, body.get("name"))}


@router.post("/api/classes/{name}/rename")
async def rename_class(name: str, request: Request,
                       state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    body = body_json(await request.body())
    return {"name": await off_loop(state.project.rename_class, name, body.get("name"))}


@router.delete("/api/classes/{name}")
async def delete_class(name: str, state: StudioState = Depends(studio_state)
                       ) -> dict[str, Any]:
    return {"undo": await off_loop(state.project.delete_class, name)}


@router.get("/api/classes/{name}/images")
async def list_images(name: str, state: StudioState = Depends(studio_state)
                      ) -> dict[str, Any]:
    images = await off_loop(state.project.images, name)
    return {"class": name, "images": [i.__dict__ for i in images]}


@router.post("/api/classes/{name}/images")
async def add_image(name: str, request: Request, filename: str = "the upload",
                    state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    data = await request.body()
    return {"name": await off_loop(state.project.add_image, name, data, filename)}


@router.get("/api/classes/{name}/images/{image:path}")
async def get_image(name: str, image: str,
                    state: StudioState = Depends(studio_state)) -> FileResponse:
    path = await off_loop(state.project.image_path, name, image)
    return FileResponse(path, headers={"Cache-Control": "private, max-age=60",
                                       "X-Content-Type-Options": "nosniff"})


@router.delete("/api/classes/{name}/images/{image:path}")
async def delete_image(name: str, image: str,
                       state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    return {"undo": await off_loop(state.project.delete_image, name, image)}


@router.post("/api/classes/{name}/move/{image:path}")
async def move_image(name: str, image: str, request: Request,
                     state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    body = body_json(await request.body())
    return {"name": await off_loop(state.project.move_image, name, image, body.get("to"))}


@router.post("/api/undo/{entry}")
async def undo(entry: str, state: StudioState = Depends(studio_state)) -> dict[str, Any]:
    return await off_loop(state.project.undo, entry)
