"""Derived files are bound to the weights they came from: a record checked before use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnkit.artifacts import derived
from cnnkit.base.errors import CnnkitError

SOURCE = "ab" * 32
OPTIONS = {"precision": "float", "opset": 17}


@pytest.fixture
def made(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07graph" * 100)
    derived.bind(path, SOURCE, OPTIONS)
    return path


def test_a_bound_file_checks_out(made: Path) -> None:
    assert derived.record_path(made) == made.parent / "model.onnx.source.json"
    assert derived.check(made, SOURCE, OPTIONS) is None
    assert derived.check(made) is None
    derived.require(made, SOURCE, OPTIONS)


@pytest.mark.parametrize("change, why", [
    (lambda p: p.write_bytes(p.read_bytes()[:-1] + b"X"), "was changed after it was made"),
    (lambda p: p.write_bytes(p.read_bytes() + b"X"), "was changed after it was made"),
    (lambda p: derived.record_path(p).unlink(), "has no record of the weights"),
    (lambda p: derived.record_path(p).write_text("{"), "record model.onnx.source.json is "
                                                       "damaged"),
    (lambda p: derived.record_path(p).write_text('{"format": "cnnkit-derived", "size": "1"}'),
     "is damaged"),
    (lambda p: derived.record_path(p).write_text(" " * 70_000), "too large to be one"),
])
def test_a_changed_file_or_record_is_not_trusted(made: Path, change, why: str) -> None:
    change(made)
    assert why in derived.check(made, SOURCE, OPTIONS)
    with pytest.raises(CnnkitError, match=rf"model\.onnx cannot be used: .*{why}.*cnnkit "
                                          r"export"):
        derived.require(made)


def test_other_weights_or_options_are_not_trusted(made: Path) -> None:
    assert "made from other weights (sha256 abababababab..., not cdcdcdcdcdcd...)" in \
        derived.check(made, "cd" * 32, OPTIONS)
    assert "made with other options" in derived.check(made, SOURCE, {**OPTIONS, "opset": 18})
    record = json.loads(derived.record_path(made).read_text())
    record["sha256"] = derived.sha256_of(made)
    record["source_sha256"] = "cd" * 32  # a record edited to claim other weights
    derived.record_path(made).write_text(json.dumps(record))
    assert derived.check(made, SOURCE) is not None
