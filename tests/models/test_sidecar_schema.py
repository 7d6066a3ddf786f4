"""model.json is validated before anything is built: hostile edits are one-line refusals."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnkit
from cnnkit.base.errors import CnnkitError
from cnnkit.models.registry import list_models
from cnnkit.models.sidecar_schema import MAX_IMG_SIZE, validate


def _run(trained, tmp_path: Path) -> tuple[Path, dict]:
    run = Path(shutil.copytree(trained[0], tmp_path / "run"))
    return run, json.loads((run / "model.json").read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda doc: "[" * 200_000 + "]" * 200_000, "nested too deeply"),
    (lambda doc: {**doc, "input": {**doc["input"], "std": [0, 0, 0]}}, "std must be positive"),
    (lambda doc: {**doc, "input": {**doc["input"], "std": [0]}}, "std must hold 3 finite"),
    (lambda doc: {**doc, "input": {**doc["input"], "img_size": 100_000}},
     f"img_size must be 8 to {MAX_IMG_SIZE}"),
    (lambda doc: {**doc, "input": {**doc["input"], "img_size": "16"}},
     "img_size must be a whole number"),
    (lambda doc: {**doc, "architecture": {**doc["architecture"], "layers": [
        {**doc["architecture"]["layers"][0], "filters": 1e9}]}},
     r"layers\[0\]\.filters = 1000000000\.0 is outside"),
    (lambda doc: {**doc, "architecture": {**doc["architecture"],
                                          "layers": [{"type": "conv"}] * 10_000}},
     "list of 1 to 256 layers"),
    (lambda doc: {**doc, "classes": ["a", "a", "b"]}, "classes has a name twice"),
    (lambda doc: {**doc, "input": {**doc["input"], "grey": "yes"}}, "grey must be true or"),
    (lambda doc: {**doc, "weights": "../../etc/passwd.safetensors"}, "weights must be a "),
    (lambda doc: {**doc, "architecture": {"name": "resnet152"}},
     r"does not fit this model's architecture: the sidecar's 'resnet152' has 5\d,\d{3},\d{3}"),
])
def test_a_hostile_sidecar_is_refused_before_anything_is_built(trained, tmp_path: Path, edit,
                                                                message: str) -> None:
    run, doc = _run(trained, tmp_path)
    new = edit(doc)
    (run / "model.json").write_text(new if isinstance(new, str) else json.dumps(new))
    with pytest.raises(CnnkitError, match=message):
        cnnkit.load(str(run))


def test_a_huge_sidecar_file_is_not_read(trained, tmp_path: Path) -> None:
    run, _ = _run(trained, tmp_path)
    with open(run / "model.json", "wb") as fh:
        fh.truncate(17 * 2**20)
    with pytest.raises(CnnkitError, match="more than any model's sidecar"):
        cnnkit.load(str(run))


@pytest.mark.parametrize("info", [m for m in list_models() if getattr(m.builder, "layers", None)],
                         ids=lambda m: m.name)
def test_every_registered_stack_passes_the_schema(info) -> None:
    doc = {"architecture": {"name": info.name, "layers": list(info.builder.layers)},
           "classes": ["a", "b"], "weights": "model.safetensors",
           "input": {"img_size": 32, "channels": 3, "mean": [0.5] * 3, "std": [0.5] * 3}}
    validate(doc, "model.json")


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
FIELDS = [("architecture",), ("architecture", "name"), ("architecture", "layers"),
          ("classes",), ("input",), ("input", "img_size"), ("input", "channels"),
          ("input", "mean"), ("input", "std"), ("input", "crop_pct"), ("weights",),
          ("num_classes",), ("sha256",), ("format_version",)]


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.sampled_from(FIELDS), JSON)
def test_any_edit_of_a_sidecar_loads_or_is_refused_with_cnnkits_error(trained, field,
                                                                       value) -> None:
    doc = json.loads((trained[0] / "model.json").read_text())
    target = doc
    for key in field[:-1]:
        target = target[key]
    target[field[-1]] = value
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(shutil.copytree(trained[0], Path(tmp) / "run"))
        (run / "model.json").write_text(json.dumps(doc))
        try:
            loaded = cnnkit.load(str(run))
        except CnnkitError:
            return
        assert list(loaded.classes) == doc["classes"]  # an edit that passed is a usable model


@settings(max_examples=60, deadline=None)
@given(JSON)
def test_any_json_document_is_refused_with_cnnkits_error(doc) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "model.json").write_text(json.dumps(doc))
        with pytest.raises(CnnkitError):
            cnnkit.load(str(Path(tmp) / "model.json"))
