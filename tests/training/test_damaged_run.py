"""A run folder with a damaged file: resume, evaluate and predict say in one line which
file and what to do (no JSONDecodeError, KeyError or TypeError traceback)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from tests.conftest import write_shapes_tree

import cnnkit
from cnnkit.cli import main

OPTIONS = {"model": "conv4k3-pool2-dense8", "epochs": 2, "batch_size": 16, "plots": False,
           "device": "cpu"}


def _stop_after_first(trainer, row) -> None:
    raise KeyboardInterrupt


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A run interrupted after epoch 1 of 2 (its checkpoint kept), on a folder of shapes:
    ``(run, data)``. Tests damage a copy."""
    base = tmp_path_factory.mktemp("stopped")
    data = write_shapes_tree(base / "data", per_class=8, size=12)
    with pytest.raises(KeyboardInterrupt):
        cnnkit.train(str(data), out=str(base / "runs"), name="r", img_size=12,
                     callbacks=[_stop_after_first], **OPTIONS)
    return base / "runs" / "r", data


def _copy(stopped: tuple[Path, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(stopped[0], tmp_path / "r"))


def _one_line(capsys, argv: list, *expected: str) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, err
    return err


@pytest.mark.parametrize("text, why", [
    ('{"data": "x", "epochs": ', "not valid JSON"),
    ("\xff\xfe garbage", "not valid JSON"),
    ("[1, 2]", "not a mapping of options"),
    ('{"data": "x", "epochs": "two"}', "--epochs takes a whole number"),
    ('{"data": "x", "colour": 1}', "Unknown training option(s): colour"),
    ("[" * 100_000, "nested too deeply"),
])
def test_a_damaged_config_is_one_line_naming_it(stopped, tmp_path: Path, capsys, text: str,
                                                why: str) -> None:
    run = _copy(stopped, tmp_path)
    (run / "config.json").write_text(text)
    err = _one_line(capsys, ["train", "--resume", run], "config.json is damaged", why)
    assert "restore it, or start a new run" in err
    _one_line(capsys, ["evaluate", run], "config.json is damaged")
    img = next(stopped[1].rglob("*.png"))
    assert main(["predict", str(run), str(img)]) == 0  # predict reads the model only
    capsys.readouterr()


def test_a_damaged_config_of_an_init_from_run(stopped, tmp_path: Path, capsys) -> None:
    run = _copy(stopped, tmp_path)
    (run / "config.json").write_text("{")
    _one_line(capsys, ["train", stopped[1], "--init-from", run, "--out", tmp_path / "runs"],
              "config.json is damaged")


@pytest.mark.parametrize("doc, why", [
    ("not json", "not valid JSON"),
    ({"classes": "cat"}, "'classes' is not a list of names"),
    ({"classes": ["a", "b"], "test": [["x.png", 7]]}, "'test' rows are not [path, class"),
    ({"classes": ["a", "b"], "test": [["x.png", 0]]}, "its classes are not the model's"),
    ({"classes": ["a", "b"], "test": [["x.png", 0]], "hashes": {"test": [7]}},
     "'hashes' are not a list of content hashes per split"),
])
def test_a_damaged_split_is_one_line_naming_it(stopped, tmp_path: Path, capsys, doc,
                                               why: str) -> None:
    run = _copy(stopped, tmp_path)
    (run / "split.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    err = _one_line(capsys, ["evaluate", run], "split.json is damaged", why)
    assert "cnnkit evaluate RUN DATA" in err


def _edit_checkpoint(path: Path, change) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as fh:
        meta = json.loads(fh.metadata()["cnnkit"])
    tensors = load_file(path)
    meta, tensors = change(meta, tensors)
    save_file(tensors, str(path), metadata={"cnnkit": json.dumps(meta)})


@pytest.mark.parametrize("change, why", [
    (lambda m, t: ({k: v for k, v in m.items() if k != "optimizer"}, t), "optimizer state"),
    (lambda m, t: ({**m, "history": "x"}, t), "history is not a list"),
    (lambda m, t: ({**m, "phase": -1}, t), "phase is not a count"),
    (lambda m, t: (m, {k: v for k, v in t.items() if k != "rng.data"}), "rng.data"),
    (lambda m, t: ([1], t), "its record is not a mapping"),
])
def test_an_edited_checkpoint_is_one_line(stopped, tmp_path: Path, capsys, change,
                                          why: str) -> None:
    run = _copy(stopped, tmp_path)
    _edit_checkpoint(run / "checkpoints" / "last.safetensors", change)
    err = _one_line(capsys, ["train", "--resume", run], "not a readable cnnkit checkpoint",
                    why)
    assert f"--init-from {run}" in err


def test_a_damaged_phase_record_is_written_anew(stopped, tmp_path: Path, capsys) -> None:
    run = _copy(stopped, tmp_path)
    (run / "phases.json").write_text("{oops")
    assert main(["train", "--resume", str(run)]) == 0
    assert "phases.json is damaged" in capsys.readouterr().err
    assert len(json.loads((run / "phases.json").read_text())) == 1


def test_a_damaged_metrics_file_is_one_line_for_the_report(stopped, tmp_path: Path,
                                                           capsys) -> None:
    run = _copy(stopped, tmp_path)
    (run / "metrics.csv").write_bytes(b"\xff\xfe\x00garbage")
    _one_line(capsys, ["report", run], "metrics.csv is damaged")
