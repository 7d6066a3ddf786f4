"""--backend reaches the predictor through serve's one builder; backends agree."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tests.serve.conftest import wait_ready

from cnnkit.base.errors import CnnkitError
from cnnkit.serve import ServeConfig, create_app, load_models


def _answer(models, image: bytes) -> dict:
    with TestClient(create_app(models, ServeConfig(max_wait_ms=0)),
                    base_url="http://127.0.0.1") as client:
        wait_ready(client)
        info = client.get("/v1/models").json()["models"][0]
        answer = client.post("/predict", content=image).json()["predictions"][0]
        onnx = client.get("/v1/models/m/model.onnx")
    return {"backend": info["backend"], "top": answer["top"], "file": info["onnx_file"],
            "download": onnx}


def test_torch_and_onnx_backends_serve_the_same_answer(trained) -> None:
    run, data = trained
    image = sorted(data.rglob("*.png"))[0].read_bytes()
    torch_side = _answer(load_models([f"m={run}"], "torch", "cpu", threads=1), image)
    onnx_side = _answer(load_models([f"m={run}"], "onnx", "cpu", threads=1), image)
    assert (torch_side["backend"], onnx_side["backend"]) == ("torch", "onnx")
    # the file a client may run itself: the ONNX backend's, none for torch (one line why)
    assert onnx_side["file"] == "/v1/models/m/model.onnx" and torch_side["file"] is None
    assert onnx_side["download"].status_code == 200
    cached = [p for p in run.glob("model.*.onnx") if ".int8." not in p.name]
    assert onnx_side["download"].content == cached[0].read_bytes()
    assert torch_side["download"].status_code == 404
    assert "--backend onnx" in torch_side["download"].json()["detail"]
    assert [t["label"] for t in torch_side["top"]] == [t["label"] for t in onnx_side["top"]]
    assert np.allclose([t["probability"] for t in torch_side["top"]],
                       [t["probability"] for t in onnx_side["top"]], atol=1e-4)


def test_model_names_and_backends_are_checked_before_serving(trained) -> None:
    run, _ = trained
    with pytest.raises(CnnkitError, match="--backend must be one of"):
        load_models([str(run)], "tensorrt")
    with pytest.raises(CnnkitError, match="Two models are named 'a'"):
        load_models([f"a={run}", f"a={run}"], "torch", "cpu")
    with pytest.raises(CnnkitError, match="cannot name a model in URLs"):
        load_models([f"a b={run}"], "torch", "cpu")
    with pytest.raises(CnnkitError, match="--max-queue"):
        ServeConfig(max_queue=4, max_files=8)
