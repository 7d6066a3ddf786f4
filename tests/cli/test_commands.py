"""The cnnkit command in-process: train, evaluate, predict, models, data info."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from cnnkit.cli import main


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "400")  # long temporary paths stay on one table row


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_from_the_command_line_with_a_config_file(make_tree, tmp_path: Path,
                                                        capsys) -> None:
    data = make_tree(tmp_path / "photos", per_class=6, size=16)
    (tmp_path / "run.yaml").write_text(
        "model: conv4k3-pool2-dense8\nepochs: 3\nbatch_size: 8\nimg_size: 16\n"
        "schedule: cosine\nlabel_smoothing: 0.0\nval_fraction: 0.25\n")
    code, out, err = run_cli(capsys, "train", data, "--config", tmp_path / "run.yaml",
                             "--epochs", "1", "--no-plots", "--device", "cpu", "--out",
                             tmp_path / "runs", "--name", "cli", "--val-fraction", "0.1")
    assert code == 0, err
    assert "Traceback" not in err
    config = json.loads((tmp_path / "runs" / "cli" / "config.json").read_text())
    assert config["epochs"] == 1  # the command line wins over the file
    assert config["schedule"] == "cosine" and config["model"] == "conv4k3-pool2-dense8"
    assert config["batch_size"] == 8 and config["label_smoothing"] == 0.0
    assert config["val_fraction"] == 0.1  # given, though equal to the default: it wins too
    assert config["patience"] == 0 and config["optimizer"] == "adamw"  # TrainConfig's defaults
    assert "test: accuracy" in out and str(tmp_path / "runs" / "cli") in out


def test_evaluate_a_run_on_its_own_held_out_split(trained, tmp_path: Path, capsys) -> None:
    run, data = trained
    code, out, err = run_cli(capsys, "evaluate", run, "--json", tmp_path / "m.json",
                             "--device", "cpu")
    assert code == 0, err
    split = json.loads((run / "split.json").read_text())
    n_test = len(split["test"])
    assert n_test == 6
    assert f"{n_test} images" in out and "accuracy:" in out
    assert "top-1:" in out and "top-3:" not in out  # 3 classes: top-3 is 100% always
    for word in ("precision", "recall", "f1", "support", "macro avg", "confusion matrix",
                 "circle", "square", "triangle"):
        assert word in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n"] == n_test and len(metrics["confusion_matrix"]) == 3
    assert sum(map(sum, metrics["confusion_matrix"])) == n_test
    assert metrics["accuracy"] == pytest.approx(
        json.loads((run / "test_metrics.json").read_text())["accuracy"])
    # DATA = what it was trained on: still only the held-out test images
    code, out2, _ = run_cli(capsys, "evaluate", run, data, "--json", tmp_path / "m2.json")
    assert code == 0 and "held-out test split" in out2
    assert json.loads((tmp_path / "m2.json").read_text())["n"] == n_test


def test_evaluate_a_run_on_other_data(trained, make_tree, tmp_path: Path, capsys) -> None:
    other = make_tree(tmp_path / "new", per_class=3, size=24, seed=7)
    code, out, err = run_cli(capsys, "evaluate", trained[0] / "model.json", other,
                             "--json", tmp_path / "m.json")
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n"] == 9
    assert [row["support"] for row in metrics["per_class"]] == [3, 3, 3]
    assert "9 images" in out


def test_predict_files_folders_and_globs_as_a_table(trained, capsys) -> None:
    run, data = trained
    one = sorted((data / "circle").glob("*.png"))[0]
    code, out, err = run_cli(capsys, "predict", run, one, data / "square",
                             str(data / "triangle" / "00*.png"), "--top-k", "2")
    assert code == 0, err
    rows = [line for line in out.splitlines() if ".png" in line]
    assert len(rows) == 1 + 10 + 9  # the file, the folder, the glob (001..009)
    assert str(one) in rows[0]
    assert all("%" in row for row in rows)
    assert "top-1" in out and "top-2" in out


def test_predict_as_json(trained, capsys) -> None:
    run, data = trained
    files = sorted(str(p) for p in (data / "circle").glob("*.png"))[:3]
    code, out, err = run_cli(capsys, "predict", run, *files, "--format", "json", "-k", "3")
    assert code == 0, err
    preds = json.loads(out)
    assert [p["path"] for p in preds] == files
    for p in preds:
        assert p["label"] in ("circle", "square", "triangle")
        assert len(p["top"]) == 3
        assert sum(t["probability"] for t in p["top"]) == pytest.approx(1, abs=1e-5)
        assert p["probability"] == p["top"][0]["probability"]


def test_predict_as_csv(trained, capsys, tmp_path: Path) -> None:
    run, data = trained
    code, out, err = run_cli(capsys, "predict", run, data / "square", "--format", "csv",
                             "--top-k", "2", "--tta")
    assert code == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    # the columns of an --output file: the answer and its probability, then the top k
    assert rows[0] == ["path", "label", "probability", "label1", "prob1", "label2", "prob2",
                       "error"]
    assert len(rows) == 11
    assert [Path(r[0]).parent.name for r in rows[1:]] == ["square"] * 10
    assert all(r[1] == r[3] and r[2] == r[4] for r in rows[1:])  # no rule: the top class
    assert all(0 <= float(r[4]) <= 1 and float(r[4]) >= float(r[6]) for r in rows[1:])
    # the same rows as a predictions file of the same options
    code, _, err = run_cli(capsys, "predict", run, data / "square", "--output",
                           tmp_path / "p.csv", "--top-k", "2", "--tta")
    assert code == 0, err
    assert list(csv.reader(io.StringIO((tmp_path / "p.csv").read_text()))) == rows


def test_models_lists_the_registry(capsys) -> None:
    code, out, _ = run_cli(capsys, "models", "--family", "scratch")
    assert code == 0
    for name in ("seed-cnn", "lenet5", "vgg-bn", "fast-cnn", "resnet-small"):
        assert name in out


def test_data_info(trained, capsys) -> None:
    code, out, err = run_cli(capsys, "data", "info", trained[1])
    assert code == 0, err
    assert "folder" in out and "circle" in out and "30" in out


def test_help(capsys) -> None:
    code, out, _ = run_cli(capsys)
    assert code == 0 and "train" in out and "predict" in out
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0 and "--epochs" in out and "--config" in out


def test_ctrl_c_keeps_the_finished_epoch_and_resume_continues(tmp_path: Path, capsys,
                                                              monkeypatch) -> None:
    from cnnkit.training.loop import Trainer

    real = Trainer._is_better

    def ctrl_c_in_epoch_2(self, row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt
        return real(self, row)

    monkeypatch.setattr(Trainer, "_is_better", ctrl_c_in_epoch_2)
    code, _, err = run_cli(capsys, "train", "shapes:size=12,count=60", "--model",
                           "conv4k3-pool2-dense8", "--epochs", "3", "--no-plots", "--device",
                           "cpu", "--out", tmp_path / "runs", "--name", "stopped")
    run = tmp_path / "runs" / "stopped"
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert f"cnnkit train --resume {run}" in err
    assert len((run / "metrics.csv").read_text().splitlines()) == 2  # epoch 1 kept
    monkeypatch.undo()
    code, out, err = run_cli(capsys, "train", "--resume", run)
    assert code == 0, err
    assert "resuming" in out and "after epoch 1" in out
    assert [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()] == [
        "epoch", "1", "2", "3"]
    assert (run / "test_metrics.json").is_file()


def test_predict_with_a_threshold(trained, capsys) -> None:
    run, data = trained
    files = sorted(str(p) for p in (data / "circle").glob("*.png"))[:3]
    code, out, err = run_cli(capsys, "predict", run, *files, "--format", "json",
                             "--threshold", "1")  # nothing is that sure: all unknown
    assert code == 0, err
    preds = json.loads(out)
    assert all(p["label"] == "unknown" and p["unknown"] for p in preds)
    assert all(p["top"][0]["label"] in ("circle", "square", "triangle") for p in preds)
    code, out, err = run_cli(capsys, "predict", run, *files, "--threshold", "0")
    assert code == 0, err
    assert "answer (p >= 0)" in out and "0 of 3 image(s) below 0: unknown." in out
    code, out, _ = run_cli(capsys, "predict", run, *files, "--format", "csv",
                           "--threshold", "1")
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0][:2] == ["path", "label"] and rows[1][1] == "unknown"
    code, _, err = run_cli(capsys, "predict", run, *files, "--threshold", "80")
    assert code == 2 and "between 0 and 1" in err and "0.8" in err


def test_predict_answers_each_file_a_bad_one_with_its_own_error(trained, tmp_path: Path,
                                                                 capsys) -> None:
    """Good files keep their answers, in order, beside a fake and an empty one, in every
    format; each bad file is named with its reason; the command succeeds."""
    run, data = trained
    good = sorted(str(p) for p in (data / "circle").glob("*.png"))[:2]
    fake, empty = tmp_path / "fake.png", tmp_path / "empty.jpg"
    fake.write_bytes(b"%PDF-1.4 not an image")
    empty.write_bytes(b"")
    files = [good[0], str(fake), good[1], str(empty)]
    code, out, err = run_cli(capsys, "predict", run, *good, "--format", "json")
    alone = json.loads(out)
    code, out, err = run_cli(capsys, "predict", run, *files, "--format", "json")
    assert code == 0, err
    answers = json.loads(out)
    assert [a["path"] for a in answers] == files
    assert [answers[0], answers[2]] == alone
    assert "error" in answers[1] and "label" not in answers[1]
    assert "empty" in answers[3]["error"]
    assert sum("could not read" in line for line in err.splitlines()) == 2
    code, out, err = run_cli(capsys, "predict", run, *files, "--format", "csv", "-k", "1")
    rows = list(csv.reader(io.StringIO(out)))
    assert [r[0] for r in rows[1:]] == files
    assert rows[1][1] == alone[0]["label"] and rows[1][-1] == ""
    assert rows[2][1] == "" and rows[2][-1] and rows[4][-1]
    code, out, err = run_cli(capsys, "predict", run, *files)
    lines = [line for line in out.splitlines() if "fake.png" in line or ".png" in line]
    assert any("fake.png" in line and "error:" in line for line in lines)
    code, out, err = run_cli(capsys, "predict", run, fake, empty)
    assert code == 2 and "No image could be read" in err


def test_train_help_says_per_class_shrinks_the_validation_split_too(capsys) -> None:
    """--per-class keeps the train:val proportion, so it also limits the validation
    images; the help says so, with the example it gives holding."""
    from cnnkit.data.pipeline import Preprocess
    from cnnkit.data.sources import load_splits

    code, out, _ = run_cli(capsys, "train", "--help")
    text = " ".join(out.split())
    assert code == 0 and "validation split shrinks" in text and "train:val proportion" in text
    assert "(12 per class for N=100 at --val-fraction 0.1); the test split stays whole" in text
    pre = Preprocess(8, 1, (0.5,), (0.5,))
    whole = load_splits("digits", pre, val_fraction=0.1, seed=0)
    few = load_splits("digits", pre, val_fraction=0.1, seed=0, per_class=100)
    assert set(few.val.class_counts()) == {12} and len(few.test) == len(whole.test)
