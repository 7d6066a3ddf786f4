"""Start-up: commands import the heavy libraries only where they use them.

Timings are for benchmarks/startup.py; these tests check what makes them: which
modules a command's process has loaded when it is done.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

HEAVY = ("torch", "torchvision", "timm", "matplotlib", "sklearn", "skimage", "scipy",
         "huggingface_hub", "onnxruntime", "fastapi", "uvicorn")

_PROBE = """
import contextlib, io, json, sys
from cnnkit.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps([code, sorted({m.split(".")[0] for m in sys.modules})]))
"""


def _loaded(*argv: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, *argv], capture_output=True,
                         text=True, check=True)
    code, modules = json.loads(out.stdout.splitlines()[-1])
    assert code == 0, out.stderr
    return set(modules)


def test_listing_models_loads_no_heavy_library() -> None:
    assert _loaded("models") & set(HEAVY) == set()
    assert _loaded("models", "--family", "pretrained") & set(HEAVY) == set()


def test_help_loads_no_heavy_library() -> None:
    assert _loaded("--help") & set(HEAVY) == set()
    assert _loaded("train", "--help") & set(HEAVY) == set()


def test_a_layer_stacks_summary_needs_no_torch() -> None:
    assert _loaded("summary", "seed-cnn") & set(HEAVY) == set()
    assert _loaded("summary", "conv8k3-pool2-dense16", "--img-size", "64") & set(HEAVY) == set()
    loaded = _loaded("summary", "resnet-small")  # not a stack: built and traced
    assert "torch" in loaded and loaded & (set(HEAVY) - {"torch"}) == set()


def test_the_registry_and_its_names_need_no_torch() -> None:
    code = ("import sys; from cnnkit.models.registry import list_models, get_model_info; "
            "from cnnkit.models.build import resolve; "
            "assert len(list_models()) >= 10; resolve('seed-cnn'); "
            "resolve('conv8k3-pool2-dense16'); "
            "import json; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert not set(json.loads(out.stdout)) & set(HEAVY)


def test_predicting_with_a_run_needs_torch_once_then_onnxruntime_alone(trained, tmp_path
                                                                        ) -> None:
    run = shutil.copytree(trained[0], tmp_path / "run", ignore=shutil.ignore_patterns("*.onnx"))
    image = str(sorted((trained[1] / "circle").glob("*.png"))[0])
    loaded = _loaded("predict", str(run), image, "--device", "cpu")
    assert "torch" in loaded  # the first prediction exports the weights for onnxruntime
    assert loaded & (set(HEAVY) - {"torch", "onnxruntime"}) == set()
    for device in ("cpu", "auto"):  # then the export alone: no torch
        assert _loaded("predict", str(run), image, "--device", device) & set(HEAVY) == {
            "onnxruntime"}
    loaded = _loaded("predict", str(run), image, "--device", "cpu", "--backend", "torch")
    assert "torch" in loaded and loaded & (set(HEAVY) - {"torch"}) == set()


def test_a_missing_data_path_is_said_before_torch_loads(tmp_path) -> None:
    for data, said in ((str(tmp_path / "no-such-folder"), "Data not found"),
                       (str(tmp_path / "labels.csv"), "CSV file not found")):
        out = subprocess.run([sys.executable, "-c", _PROBE, "train", data, "--devices", "2"],
                             capture_output=True, text=True)
        code, modules = json.loads(out.stdout.splitlines()[-1])
        assert code == 2 and said in out.stderr, out.stderr
        assert not set(modules) & set(HEAVY)  # nor any process started for --devices 2


def test_evaluating_a_folder_that_is_no_run_is_said_before_torch_loads(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE, "evaluate", str(tmp_path)],
                         capture_output=True, text=True)
    code, modules = json.loads(out.stdout.splitlines()[-1])
    assert code == 2 and "is not a cnnkit run" in out.stderr, out.stderr
    assert not set(modules) & set(HEAVY)
