"""model.safetensors + model.json: a round trip that predicts the same, and clear refusals."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import cnnkit
from cnnkit.artifacts.modelfile import ModelCard, load_model, read_card, save_model, update_card
from cnnkit.base.errors import CnnkitError
from cnnkit.data.pipeline import Preprocess
from cnnkit.models import create_model
from cnnkit.models.build import resolve
from cnnkit.runtime.predict import Classifier
from cnnkit.tasks.single_label import SingleLabel

CLASSES = ("cat", "dog", "T-shirt/top")


def _saved(tmp_path: Path, spec: str = "conv8k3samebn-pool2-drop0.2-dense16bn",
           channels: int = 3) -> tuple[torch.nn.Module, ModelCard, Path]:
    torch.manual_seed(0)
    model = create_model(spec, len(CLASSES), channels, 20)
    # make batch-norm statistics non-trivial, as after training
    model.train()
    with torch.no_grad():
        model(torch.randn(8, channels, 20, 20) * 2 + 0.3)
    model.eval()
    arch, _ = resolve(spec)
    pre = Preprocess(20, channels, (0.4,) * channels, (0.2,) * channels)
    card = ModelCard(arch, CLASSES, pre, {"note": "test"})
    path = save_model(model, card, tmp_path / "m" / "model.safetensors")
    return model, card, path


def _images(n: int = 6) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (24 + i, 30, 3), dtype=np.uint8) for i in range(n)]


def test_save_load_round_trip_predicts_identically(tmp_path: Path) -> None:
    model, card, path = _saved(tmp_path)
    in_memory = Classifier(model, card, torch.device("cpu"))
    expected = in_memory.predict_proba(_images())
    for where in (path, path.with_suffix(".json"), path.parent):
        # torch on both sides: bit-identical (the onnx backend agrees to 1e-4, test_backends)
        loaded = cnnkit.load(str(where), device="cpu", backend="torch")
        assert loaded.classes == CLASSES
        assert loaded.card.preprocess == card.preprocess
        np.testing.assert_array_equal(loaded.predict_proba(_images()), expected)
    reloaded, _ = load_model(path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  reloaded.state_dict().values()))


def test_a_trained_run_loads_the_same_way_from_each_of_its_files(trained) -> None:
    run, data = trained
    files = sorted(str(p) for p in data.rglob("*.png"))[:5]
    by_run = cnnkit.load(str(run), device="cpu").predict_proba(files)
    assert by_run.shape == (5, 3)
    np.testing.assert_allclose(by_run.sum(1), 1, atol=1e-5)
    for where in (run / "model.json", run / "model.safetensors"):
        np.testing.assert_array_equal(
            cnnkit.Classifier.load(where, device="cpu").predict_proba(files), by_run)


def test_the_sidecar_describes_the_model(tmp_path: Path) -> None:
    _, _, path = _saved(tmp_path, channels=1)
    doc = json.loads(path.with_suffix(".json").read_text())
    assert doc["format"] == "cnnkit-model" and doc["num_classes"] == 3
    assert doc["classes"] == list(CLASSES)
    assert doc["input"]["img_size"] == 20 and doc["input"]["channels"] == 1
    assert doc["input"]["mean"] == [0.4] and doc["weights"] == "model.safetensors"
    assert doc["architecture"]["layers"][0]["filters"] == 8
    card, _ = read_card(path)
    assert card.info == {"note": "test"}
    assert doc["task"] == {"name": "single-label"}
    assert card.task == SingleLabel()


def test_a_sidecar_from_before_tasks_reads_as_single_label(tmp_path: Path) -> None:
    model, card, path = _saved(tmp_path)
    sidecar = path.with_suffix(".json")
    doc = json.loads(sidecar.read_text())
    del doc["task"]
    sidecar.write_text(json.dumps(doc))
    old, _ = read_card(path)
    assert old.task == SingleLabel() and old == replace(card, sha256=old.sha256)
    expected = Classifier(model, card, torch.device("cpu")).predict_proba(_images())
    loaded = cnnkit.load(str(path), device="cpu", backend="torch")
    np.testing.assert_array_equal(loaded.predict_proba(_images()), expected)
    doc["task"] = "single-label"  # a name alone (a hand-written sidecar) is read too
    sidecar.write_text(json.dumps(doc))
    assert read_card(path)[0].task == SingleLabel()


def _copy_run(trained, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained[0], tmp_path / "run"))


def test_errors_for_paths_that_are_not_models(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="Not found"):
        cnnkit.load(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnkitError, match=r"is not a cnnkit run: it has no model\.json"):
        cnnkit.load(str(tmp_path / "empty"))
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(CnnkitError, match="is not a cnnkit model"):
        cnnkit.load(str(tmp_path / "model.bin"))


def test_a_weights_file_without_its_sidecar(trained, tmp_path: Path) -> None:
    run = _copy_run(trained, tmp_path)
    (run / "model.json").unlink()
    with pytest.raises(CnnkitError, match=r"has no sidecar model\.json"):
        cnnkit.load(str(run / "model.safetensors"))


@pytest.mark.parametrize("damage, message", [
    (lambda doc: "{ not json", "is not valid JSON"),
    (lambda doc: "[1, 2]", "is not a cnnkit model sidecar"),
    (lambda doc: json.dumps({**doc, "format": "other"}), "is not a cnnkit model sidecar"),
    (lambda doc: json.dumps({k: v for k, v in doc.items() if k != "classes"}),
     r"model\.json is incomplete or damaged: no 'classes'"),
    (lambda doc: json.dumps({k: v for k, v in doc.items() if k != "weights"}),
     r"model\.json is incomplete or damaged: no 'weights'"),
    (lambda doc: json.dumps({**doc, "input": {"img_size": 16}}),
     r"model\.json is incomplete or damaged: no 'channels'"),
    (lambda doc: json.dumps({**doc, "architecture": "seed-cnn"}),
     r"model\.json is incomplete or damaged"),
    (lambda doc: json.dumps({**doc, "architecture": {"name": "no-such-net"}}),
     "Unknown model 'no-such-net'"),
    (lambda doc: json.dumps({**doc, "architecture": {"name": "x", "layers": [{"units": 3}]}}),
     r"model\.json is incomplete or damaged: architecture\.layers\[0\]\.type 'None' is not a "
     "layer type"),
    (lambda doc: json.dumps({**doc, "format_version": 99}), "written by a newer cnnkit"),
    (lambda doc: json.dumps({**doc, "task": {"name": "detection"}}),
     r"model\.json holds a model for the task 'detection', which this cnnkit does not know "
     r"\(single-label.*\); upgrade cnnkit"),
    (lambda doc: json.dumps({**doc, "task": 3}),
     r"model\.json is incomplete or damaged: task must be a task's name or an object"),
    (lambda doc: json.dumps({**doc, "task": {"threshold": 0.5}}),
     r"model\.json is incomplete or damaged: task must be a task's name or an object"),
    (lambda doc: json.dumps({**doc, "weights": "other.safetensors"}),
     r"weights file .*other\.safetensors named by model\.json is missing"),
])
def test_damaged_sidecars_are_clear_errors(trained, tmp_path: Path, damage,
                                           message: str) -> None:
    run = _copy_run(trained, tmp_path)
    doc = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(damage(doc))
    with pytest.raises(CnnkitError, match=message):
        cnnkit.load(str(run))


def test_a_json_that_is_not_a_sidecar(trained) -> None:
    with pytest.raises(CnnkitError, match="is not a cnnkit model sidecar"):
        cnnkit.load(str(trained[0] / "config.json"))


def test_corrupt_or_wrong_weights_are_clear_errors(trained, tmp_path: Path) -> None:
    run = _copy_run(trained, tmp_path)
    (run / "model.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0garbage")
    with pytest.raises(CnnkitError, match="is not a readable safetensors file"):
        cnnkit.load(str(run))
    # another model's weights under this sidecar
    _, _, other = _saved(tmp_path / "other")
    shutil.copy(other, run / "model.safetensors")
    with pytest.raises(CnnkitError, match="does not fit this model's architecture"):
        cnnkit.load(str(run))


def test_weights_that_changed_after_saving_are_refused(trained, tmp_path: Path) -> None:
    run = _copy_run(trained, tmp_path)
    state = load_file(str(run / "model.safetensors"))
    key = next(iter(state))
    state[key] = state[key] + 1.0  # same architecture and shapes, other values
    save_file(state, str(run / "model.safetensors"))
    with pytest.raises(CnnkitError, match=r"has changed since its sidecar model\.json"):
        cnnkit.load(str(run))


def test_pickles_are_never_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_unpickling)
    model = create_model("seed-cnn", 10, 1, 28)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    (tmp_path / "model.pth").write_bytes((tmp_path / "model.pt").read_bytes())
    for name in ("model.pt", "model.pth"):
        with pytest.raises(CnnkitError, match=r"pickles are not loaded"):
            cnnkit.load(str(tmp_path / name))
    # export's ExecuTorch file was refused as if it were a pickle ("not a cnnkit model")
    (tmp_path / "model.pte").write_bytes(b"\0" * 64)
    with pytest.raises(CnnkitError, match=r"model\.pte is an ExecuTorch program, for "
                                          r"ExecuTorch's own runtime.*or its model\.onnx"):
        cnnkit.load(str(tmp_path / "model.pte"))
    # a pickle renamed to .safetensors is refused by the safetensors reader, not unpickled
    _, _, path = _saved(tmp_path / "x")
    path.write_bytes((tmp_path / "model.pt").read_bytes())
    with pytest.raises(CnnkitError, match="not a readable safetensors file"):
        cnnkit.load(str(path))


def test_weights_that_cannot_mean_an_answer_are_refused(tmp_path: Path) -> None:
    # NaN weights (a diverged run's) answered class '0' at 'nan%', and whole-number
    # weights were cast to float and answered, both with the sha256 in the sidecar right
    _, card, path = _saved(tmp_path)
    state = load_file(str(path))
    key = next(k for k, v in state.items() if v.ndim == 2)
    for name, bad, said in (("nan", state[key] * float("nan"), "NaN or infinite weights"),
                            ("inf", state[key] + float("inf"), "NaN or infinite weights"),
                            ("int", state[key].to(torch.int32), "whole numbers (torch.int32)")):
        run = tmp_path / name
        shutil.copytree(path.parent, run)
        save_file({**state, key: bad}, str(run / path.name))
        update_card(run / path.name, replace(card, sha256=None))
        with pytest.raises(CnnkitError, match=rf"{name}/model\.safetensors holds {re.escape(said)}"
                                              rf".*\(e\.g\. '{re.escape(key)}'\)"):
            load_model(run)
    half = tmp_path / "half"  # other float widths are weights all the same
    shutil.copytree(path.parent, half)
    save_file({k: v.half() if v.is_floating_point() else v for k, v in state.items()},
              str(half / path.name))
    update_card(half / path.name, replace(card, sha256=None))
    assert load_model(half)[0] is not None
