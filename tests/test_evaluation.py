"""Evaluating a run: its own held-out split unless other data is given."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import cnnkit
from cnnkit.base.errors import CnnkitError
from cnnkit.evaluation import same_source

OPTIONS = {"model": "conv4k3-pool2-dense8", "epochs": 1, "batch_size": 16, "plots": False,
           "device": "cpu"}


def test_the_held_out_split_is_read_from_split_json(make_tree, tmp_path: Path) -> None:
    data = make_tree(tmp_path / "photos", per_class=10, size=16)
    result = cnnkit.train(str(data), out=str(tmp_path / "runs"), img_size=16, **OPTIONS)
    recorded = json.loads((result.run_dir / "split.json").read_text())["test"]
    # New photos arrive after training: re-splitting the folder would move files around.
    make_tree(tmp_path / "more", per_class=5, size=16, seed=9)
    for f in (tmp_path / "more").rglob("*.png"):
        shutil.copy(f, data / f.parent.name / f"new-{f.name}")
    for data_arg in (None, str(data), str(tmp_path / "photos" / ".")):
        metrics = cnnkit.evaluate(str(result.run_dir), data_arg)
        assert metrics.n == len(recorded) == result.test.n
        assert metrics.accuracy == pytest.approx(result.test_accuracy)
    # any other folder is used whole
    assert cnnkit.evaluate(str(result.run_dir), str(tmp_path / "more")).n == 15


def test_a_builtin_runs_own_test_split(tmp_path: Path) -> None:
    result = cnnkit.train("shapes:size=12,count=60", out=str(tmp_path / "runs"), **OPTIONS)
    assert not (result.run_dir / "split.json").exists()
    for data in (None, "shapes:count=60,size=12"):
        metrics = cnnkit.evaluate(str(result.run_dir), data)
        assert metrics.n == 15 and metrics.accuracy == pytest.approx(result.test_accuracy)
    assert cnnkit.evaluate(str(result.run_dir), "shapes:size=12,count=40").n == 10
    with pytest.raises(CnnkitError, match="'digits' has no test split"):
        cnnkit.evaluate(str(result.run_dir), "digits")


def test_a_run_without_a_test_split(make_tree, tmp_path: Path) -> None:
    data = make_tree(tmp_path / "photos", per_class=4, size=16)
    result = cnnkit.train(str(data), out=str(tmp_path / "runs"), img_size=16,
                          test_fraction=0.0, **OPTIONS)
    with pytest.raises(CnnkitError, match="without a held-out test split"):
        cnnkit.evaluate(str(result.run_dir))
    assert cnnkit.evaluate(str(result.run_dir), str(data)).n == 12  # asked for: all of it


def test_a_model_file_alone_needs_data(trained, tmp_path: Path) -> None:
    for name in ("model.json", "model.safetensors"):
        shutil.copy(trained[0] / name, tmp_path / name)
    with pytest.raises(CnnkitError, match="outside a run folder"):
        cnnkit.evaluate(str(tmp_path / "model.json"))
    assert cnnkit.evaluate(str(tmp_path / "model.json"), str(trained[1])).n == 30


def test_same_source(make_tree, tmp_path: Path) -> None:
    data = make_tree(tmp_path / "d", per_class=2, size=16)
    assert same_source(str(data), str(tmp_path / "d" / ".." / "d"))
    assert not same_source(str(data), str(tmp_path / "gone"))
    assert same_source("shapes", "shapes:size=32")
    assert not same_source("shapes", "shapes:seed=1")
    assert not same_source("digits", str(data))


def test_multi_label_data_for_a_single_label_model_is_one_clear_line(trained, tmp_path: Path,
                                                                    capsys) -> None:
    from cnnkit.cli import main

    run, data = trained
    files = sorted(p.relative_to(data) for p in data.rglob("*.png"))[:4]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data / f, tmp_path / f)
    (tmp_path / "tags.csv").write_text("".join(f"{f},{f.parent.name}|circle\n" for f in files))
    assert main(["evaluate", str(run), str(tmp_path / "tags.csv")]) == 2
    err = capsys.readouterr().err
    assert "is multi-label data" in err and "model is single-label" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(CnnkitError, match="is multi-label data"):
        cnnkit.train(str(tmp_path / "tags.csv"), init_from=str(run), epochs=1, device="cpu",
                     out=str(tmp_path / "runs"), plots=False)


def test_a_multilabel_run_is_evaluated_at_its_thresholds_or_one_given(
        trained_multilabel, tmp_path: Path, capsys) -> None:
    from cnnkit.artifacts.modelcard import read_card
    from cnnkit.cli import main
    from cnnkit.evaluation import evaluate_run

    run, csv = trained_multilabel
    held = evaluate_run(run, device="cpu")  # the run's own test split (split.json)
    saved = json.loads((run / "test_metrics.json").read_text())
    assert held.n == saved["n"] and held.map_macro == pytest.approx(saved["mAP"]["macro"])
    card, _ = read_card(run)
    assert held.thresholds == card.task.thresholds
    at_half = cnnkit.evaluate(str(run), threshold=0.5)  # the Python API as the CLI
    assert at_half.thresholds == (0.5,) * 10 and at_half.map_macro == held.map_macro
    everything = evaluate_run(run, device="cpu", threshold=0.0)  # every label answered
    assert everything.micro["recall"] == 1.0 and everything.hamming_loss > 0.5
    assert main(["evaluate", str(run), "--threshold", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "mAP" in out and "exact match" in out and "Hamming loss" in out
    # bad input: one clear line each
    single = tmp_path / "single.csv"
    single.write_text("".join(f"{csv.parent / f'm{i:03d}.png'},Bag\n" for i in range(3)))
    assert main(["evaluate", str(run), str(single)]) == 2
    err = capsys.readouterr().err
    assert "one class per image and the model is multi-label" in err
    assert len(err.strip().splitlines()) == 1
    unknown = tmp_path / "unknown.csv"
    unknown.write_text(f"path,labels\n{csv.parent / 'm000.png'},Bag|Hat\n")
    assert main(["evaluate", str(run), str(unknown)]) == 2
    err = capsys.readouterr().err
    assert "'Hat'" in err and "not among the model's classes" in err
    assert len(err.strip().splitlines()) == 1


def test_a_threshold_for_a_single_label_evaluation_is_one_clear_line(trained, capsys) -> None:
    from cnnkit.cli import main

    run, _ = trained
    assert main(["evaluate", str(run), "--threshold", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "is single-label" in err and len(err.strip().splitlines()) == 1


def test_a_copy_of_the_training_folder_is_known_by_its_contents(trained, make_tree,
                                                                tmp_path: Path, capsys) -> None:
    """`cp -r photos copy; cnnkit evaluate RUN copy` counted the 18 images the run had
    trained on and the 6 it had validated on as new ones, without a word (the check
    compared paths): the copy's figures are those of its 6 unseen images."""
    from cnnkit.cli import main

    run, data = trained
    copy = Path(shutil.copytree(data, tmp_path / "copy"))
    test = json.loads((run / "test_metrics.json").read_text())
    assert main(["evaluate", str(run), str(copy)]) == 0
    captured = capsys.readouterr()
    assert "24 of the 30 images of" in captured.err and "trained on (18)" in captured.err
    assert "validated on (6)" in captured.err and "other 6" in captured.err
    assert captured.out.startswith(f"{test['n']} images") and test["n"] == 6
    metrics = cnnkit.evaluate(str(run), str(copy))
    assert metrics.n == 6 and metrics.accuracy == pytest.approx(test["accuracy"])
    assert cnnkit.evaluate(str(run), str(copy), include_seen=True).n == 30
    assert "They are counted (--include-seen)" in capsys.readouterr().err
    # only images it trained on: nothing held out is left, so no figures
    train = json.loads((run / "split.json").read_text())["train"]
    for path, _ in train:
        dest = tmp_path / "seen" / Path(path).parent.name / Path(path).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest)
    assert main(["evaluate", str(run), str(tmp_path / "seen")]) == 2
    err = capsys.readouterr().err
    assert "All 18 images" in err and "--include-seen" in err and len(err.splitlines()) == 1
    assert cnnkit.evaluate(str(run), str(tmp_path / "seen"), include_seen=True).n == 18
    assert "18 of the 18 images" in capsys.readouterr().err
    # images it has never seen are all used, without a word
    new = make_tree(tmp_path / "new", per_class=4, size=20, seed=7)
    assert cnnkit.evaluate(str(run), str(new)).n == 12
    assert "warning" not in capsys.readouterr().err


def test_a_run_without_recorded_hashes_still_knows_its_files(trained, tmp_path: Path,
                                                            capsys) -> None:
    """A split.json written before it recorded hashes: its files are hashed where they are;
    where they are gone, a warning says a copy cannot be recognised."""
    run, data = trained
    old = Path(shutil.copytree(run, tmp_path / "old"))
    doc = json.loads((old / "split.json").read_text())
    assert {"algorithm", "train", "val", "test"} <= doc.pop("hashes").keys()
    (old / "split.json").write_text(json.dumps(doc))
    copy = shutil.copytree(data, tmp_path / "copy")
    assert cnnkit.evaluate(str(old), str(copy)).n == 6
    assert "24 of the 30 images" in capsys.readouterr().err
    doc["train"] = [[str(tmp_path / "gone" / Path(p).name), y] for p, y in doc["train"]]
    (old / "split.json").write_text(json.dumps(doc))
    assert cnnkit.evaluate(str(old), str(copy)).n == 24  # only the validation images known
    err = capsys.readouterr().err
    assert "records no content hashes" in err and "18 of the files it lists are gone" in err
