"""What the studio's app holds for its routes (``app.state.studio``): the project, its
jobs and the runs loaded for prediction; with the helpers every group of routes uses
(blocking work off the event loop, a request body read as a JSON object)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from fastapi import HTTPException, Request

from cnnkit.base import log
from cnnkit.studio.jobs import Jobs
from cnnkit.studio.project import Project
from cnnkit.studio.runs import Predictors


@dataclass(frozen=True)
class StudioState:
    """The project the app serves (opened, and held by the caller of ``create_app``),
    its jobs in worker processes, and the finished runs loaded for prediction."""

    project: Project
    jobs: Jobs
    predictors: Predictors


def studio_state(request: Request) -> StudioState:
    """The app's :class:`StudioState` (a route's dependency)."""
    return request.app.state.studio


async def off_loop(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def body_json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        raise HTTPException(400, "The request body must be JSON.") from None
    if not isinstance(value, dict):
        raise HTTPException(400, f"The request body must be a JSON object. Received: "
                                 f"{log.cut(repr(value))}")
    return value
