"""What a running server holds, kept on the app (``app.state.cnnkit``) for its routes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

from cnnkit.serve.batcher import MicroBatcher
from cnnkit.serve.loading import ServedModel
from cnnkit.serve.settings import ServeConfig

RETRY_AFTER_S = 1


@dataclass
class ServerState:
    """The models, the options, and per model its batcher; a pool of image decoders."""

    models: dict[str, ServedModel]
    config: ServeConfig
    decoders: ThreadPoolExecutor
    batchers: dict[str, MicroBatcher] = field(default_factory=dict)

    def model(self, name: str) -> ServedModel:
        """The model named ``name`` in a URL, or 404 listing the names there are."""
        if name not in self.models:
            raise HTTPException(404, f"No model named {name!r}; this server has: "
                                     f"{', '.join(self.models)} (GET /v1/models).")
        return self.models[name]

    def only_model(self) -> ServedModel:
        """The one model of a one-model server (``POST /predict``), or 404."""
        if len(self.models) != 1:
            raise HTTPException(404, f"This server holds {len(self.models)} models; POST to "
                                     "/v1/models/{name}/predict with one of: "
                                     f"{', '.join(self.models)}.")
        return next(iter(self.models.values()))

    def describe(self, served: ServedModel) -> dict[str, Any]:
        batcher = self.batchers.get(served.name)
        file = onnx_path(served)
        return {**served.describe(),
                "onnx_file": f"/v1/models/{served.name}/model.onnx" if file else None,
                **({"stats": batcher.stats()} if batcher else {})}


def onnx_path(served: ServedModel) -> Path | None:
    """The ONNX file the model runs on (onnx or onnx-int8 backends), if it runs on one."""
    path = getattr(served.classifier.backend, "path", None)
    return Path(path) if path is not None and Path(path).is_file() else None


def server_state(request: Request) -> ServerState:
    """The routes' dependency: the state of the app that received ``request``."""
    return request.app.state.cnnkit
