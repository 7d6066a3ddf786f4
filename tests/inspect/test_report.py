"""Run folders get plots and report.html at the end of training, and again on demand."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from cnnkit.cli import main
from cnnkit.inspect.plots import lr_curve, phase_plan
from cnnkit.inspect.report import write_run_report
from cnnkit.training.optim import lr_factor, warmup_fraction

PLOTS = ("curves", "confusion_matrix", "per_class", "confidence", "samples", "top_losses")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cnnkit import train

    out = tmp_path_factory.mktemp("runs")
    result = train("shapes:size=24,count=90", model="seed-cnn", epochs=2, batch_size=32,
                   out=str(out), device="cpu")
    return result.run_dir


def _png(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


def test_training_leaves_plots_and_a_self_contained_report(run: Path) -> None:
    for name in PLOTS:
        width, height = _png(run / "plots" / f"{name}.png")
        assert width >= 600 and height >= 300
    html = (run / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(PLOTS)
    assert "src=\"http" not in html and "<script" not in html  # readable offline
    test = json.loads((run / "test_metrics.json").read_text())
    assert f"{test['accuracy']:.2%}" in html
    for text in ("circle", "square", "triangle", "Confusion matrix", "Top losses",
                 "(3x3x3+1)x32", "Configuration", "onecycle", "--threshold P",
                 "accuracy of answers"):
        assert text in html
    # Class counts per split, from the data the run was trained on.
    assert "<th class=\"n\">validation</th>" in html


def test_summary_of_a_run_folder(run: Path, capsys) -> None:
    assert main(["summary", str(run)]) == 0
    out = capsys.readouterr().out
    assert "input 3x24x24" in out and "(3x3x3+1)x32" in out and "3 classes" in out
    assert main(["summary", str(run), "--img-size", "64"]) == 2
    assert "own input size" in capsys.readouterr().err


def test_report_command_regenerates_and_shows_phases(run: Path, capsys) -> None:
    shutil.rmtree(run / "plots")
    (run / "report.html").unlink()
    # phases.json as fine-tuning writes it (cnnkit.training.loop / features.probe)
    phases = [{"index": -1, "mode": "fine-tune", "name": "head (linear probe)", "epochs": 0,
               "lr": None, "trainable_params": 1290, "frozen_params": 223744,
               "frozen": "base", "lr_scales": [1.0, 1.0]},
              {"index": 0, "mode": "fine-tune", "name": "fine-tune", "epochs": 1, "lr": 0.001,
               "trainable_params": 225034, "frozen_params": 0, "frozen": "none",
               "lr_scales": [0.49, 1.0]}]
    recorded = (run / "phases.json").read_text()
    (run / "phases.json").write_text(json.dumps(phases))
    try:
        assert main(["report", str(run), "--device", "cpu"]) == 0
    finally:
        (run / "phases.json").write_text(recorded)
    assert "report.html" in capsys.readouterr().out
    html = (run / "report.html").read_text()
    assert "Mode and phases: fine-tune" in html and "head (linear probe)" in html
    assert "223,744" in html and "0.00049 .. 0.001" in html
    assert all((run / "plots" / f"{name}.png").is_file() for name in PLOTS)


def test_report_on_the_validation_split_when_there_is_no_test_split(run: Path) -> None:
    from cnnkit.artifacts.modelfile import read_card
    from cnnkit.data.sources import load_splits

    card, _ = read_card(run)
    splits = load_splits("shapes:size=24,count=90", card.preprocess)
    report = write_run_report(run, splits=replace(splits, test=None), top_loss_count=3)
    assert report.eval_split == "validation"
    html = report.html.read_text()
    assert "validation accuracy" in html and "held-out validation set" in html
    assert set(report.plots) == {"curves", "confusion", "per_class", "confidence", "samples",
                                 "top_losses"}


def test_folder_run_without_plots_then_report_after_the_data_is_gone(
        tmp_path: Path, shapes_tree: Path, capsys) -> None:
    from cnnkit import train

    data = tmp_path / "photos"
    shutil.copytree(shapes_tree, data)
    result = train(str(data), model="conv8k3-pool2-dense16", epochs=1, img_size=24,
                   batch_size=16, out=str(tmp_path / "runs"), device="cpu", plots=False)
    run = result.run_dir
    assert not (run / "plots").exists() and not (run / "report.html").exists()
    shutil.rmtree(data)
    report = write_run_report(run)
    assert "cannot be loaded" in capsys.readouterr().err
    assert set(report.plots) == {"curves", "confusion", "per_class"}
    html = report.html.read_text()
    assert "test images per class" in html and "circle" in html


def test_learning_rate_curve_is_the_loops_schedule(run: Path) -> None:
    phases = json.loads((run / "phases.json").read_text())
    config = json.loads((run / "config.json").read_text())
    record = phases[0]["lr_curve"]
    lr, epochs = phases[0]["lr"], phases[0]["epochs"]
    total = len(record["lr"]) - 1
    assert record["epoch"][0] == 0 and record["epoch"][-1] == epochs == 2
    assert record["lr"][7] == pytest.approx(lr * lr_factor(7, total, config["schedule"],
                                                           warmup_fraction(config["schedule"])),
                                            rel=1e-5)
    xs, ys = lr_curve(phase_plan([], config, phases))  # the plot draws what the loop recorded
    assert list(xs) == record["epoch"] and list(ys) == record["lr"]
    assert ys.max() == pytest.approx(lr, rel=1e-5) and 0 < xs[ys.argmax()] < 1

    rows = [{"epoch": "1", "phase": "train", "lr": "0.01"},
            {"epoch": "2", "phase": "train", "lr": "0.01"}]
    plan = phase_plan(rows, {"epochs": 4})  # no phases.json; stopped early after 2 of 4 epochs
    assert [(p.name, p.epochs, p.lr) for p in plan] == [("train", 4, 0.01)]
    xs, ys = lr_curve(plan)  # no recorded curve: the peak rate, held flat
    assert list(xs) == [0, 4] and list(ys) == [0.01, 0.01]
    two = phase_plan([{"phase": "head", "lr": "0.04"}, {"phase": "fine-tune", "lr": "0.01"}],
                     {"epochs": 3})
    assert [(p.name, p.epochs) for p in two] == [("head", 1), ("fine-tune", 2)]


def test_a_multilabel_report_shows_map_pr_curves_and_cooccurrence(trained_multilabel,
                                                                   tmp_path: Path) -> None:
    run, _ = trained_multilabel
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    report = write_run_report(copy, top_loss_count=1)
    assert {"curves", "pr_curves", "per_label", "cooccurrence", "samples",
            "top_losses"} <= set(report.plots)
    html = report.html.read_text()
    for text in ("mAP (macro)", "exact match", "Hamming loss", "Label co-occurrence",
                 "Top losses per label", "train exact"):
        assert text in html
    assert "Confusion matrix" not in html and "accuracy" not in html.split("<h2")[1]
