"""Model files: safetensors + JSON sidecar round trip, and clear errors for wrong files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import cnnkit
from cnnkit.errors import CnnkitError
from cnnkit.modelfile import load_model, read_card


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    return cnnkit.train("shapes:count=60,size=16", model="conv8k3-pool2-dense16", epochs=1,
                        out=str(out), plots=False, device="cpu").run_dir


def test_round_trip_predicts_like_the_trained_model(run: Path) -> None:
    from cnnkit.data import builtin

    _, _, test = builtin.load_builtin("shapes:count=60,size=16")
    images = [img.permute(1, 2, 0).numpy() for img in test.images[:6]]
    clf = cnnkit.load(str(run), device="cpu")
    probs = clf.predict_proba(images)
    assert probs.shape == (6, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # The same file through each of its names gives the same model.
    for name in (run / "model.json", run / "model.safetensors"):
        again = cnnkit.load(str(name), device="cpu").predict_proba(images)
        assert np.array_equal(again, probs)
    # And equals the model rebuilt by hand from the sidecar.
    model, card = load_model(run)
    x = clf.transform(images)
    with torch.no_grad():
        direct = model(x).softmax(1).numpy()
    assert np.allclose(direct, probs, atol=1e-6)
    assert card.classes == ("circle", "square", "triangle")


def test_a_moved_run_folder_still_loads(run: Path, tmp_path: Path) -> None:
    moved = shutil.copytree(run, tmp_path / "elsewhere")
    assert cnnkit.load(str(moved), device="cpu").classes == ("circle", "square", "triangle")


@pytest.mark.parametrize(("damage", "words"), [
    (lambda d: (d / "model.json").unlink(), "has no model.json"),
    (lambda d: (d / "model.json").write_text("{not json"), "not valid JSON"),
    (lambda d: (d / "model.json").write_text('{"format": "other"}'), "not a cnnkit model sidecar"),
    (lambda d: (d / "model.safetensors").unlink(), "is missing"),
    (lambda d: (d / "model.safetensors").write_bytes(b"garbage"), "not a readable safetensors"),
])
def test_broken_model_files_get_one_clear_error(run: Path, tmp_path: Path, damage,
                                                words: str) -> None:
    copy = shutil.copytree(run, tmp_path / "copy")
    damage(copy)
    with pytest.raises(CnnkitError, match=words):
        load_model(copy)


def test_weights_of_another_model_are_refused(run: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(run, tmp_path / "copy")
    doc = json.loads((copy / "model.json").read_text())
    doc["architecture"]["layers"][0]["filters"] = 4
    (copy / "model.json").write_text(json.dumps(doc))
    with pytest.raises(CnnkitError, match="does not fit this model"):
        load_model(copy)


def test_pickles_are_never_loaded(tmp_path: Path) -> None:
    pickle = tmp_path / "model.pth"
    torch.save({"anything": 1}, pickle)
    with pytest.raises(CnnkitError, match="pickles are not loaded"):
        read_card(pickle)
    with pytest.raises(CnnkitError, match="not a cnnkit run"):
        read_card(tmp_path)
