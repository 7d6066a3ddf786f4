"""cnnkit runs and cnnkit compare on three real runs."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

import cnnkit
from cnnkit.cli import main


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cnnkit-cache"))
        for lr, epochs in ((0.003, 2), (0.03, 2), (0.01, 1)):
            cnnkit.train("shapes:size=16", model="fast-cnn", epochs=epochs, per_class=20,
                         lr=lr, out=str(out), name=f"lr{lr:g}", plots=False)
    (out / "not-a-run").mkdir()  # a stray folder is skipped
    return out


def test_runs_lists_and_sorts_them(three_runs, capsys):
    assert main(["runs", str(three_runs), "--sort", "test", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["name"] for r in rows) == ["lr0.003", "lr0.01", "lr0.03"]
    tests = [r["test_acc"] for r in rows]
    assert tests == sorted(tests, reverse=True)
    for r in rows:
        saved = json.loads((Path(r["path"]) / "test_metrics.json").read_text())
        assert r["test_acc"] == saved["accuracy"]
        assert r["epochs_done"] == r["epochs_planned"] == (1 if r["name"] == "lr0.01" else 2)
        assert r["size_bytes"] == (Path(r["path"]) / "model.safetensors").stat().st_size
        assert r["model"] == "fast-cnn" and r["mode"] == "scratch" and r["seconds"] > 0
    assert main(["runs", str(three_runs), "--sort", "epochs", "--reverse"]) == 0
    table = capsys.readouterr().out
    lines = [line for line in table.splitlines() if line.startswith("lr")]
    assert lines[0].startswith("lr0.01") and len(lines) == 3
    assert "test acc" in table and "%" in lines[0]


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.diff: list[str] = []
        self.images = 0
        self._in_diff = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self._in_diff = tag == "td" and attrs.get("class") == "diff"
        self.images += tag == "img" and attrs.get("src", "").startswith("data:image/png")

    def handle_data(self, data):
        if self._in_diff:
            self.diff.append(data)
            self._in_diff = False


def test_compare_overlays_curves_and_highlights_differences(three_runs, tmp_path, capsys):
    page = tmp_path / "cmp.html"
    runs = [str(three_runs / n) for n in ("lr0.003", "lr0.03", "lr0.01")]
    assert main(["compare", *runs, "--out", str(page)]) == 0
    html = page.read_text()
    cells = _Cells()
    cells.feed(html)
    assert cells.images == 1
    # lr differs in runs 2 and 3, epochs in run 3; nothing else was changed
    assert sorted(cells.diff) == ["0.01", "0.03", "1"]
    assert all(n in html for n in ("lr0.003", "lr0.03", "lr0.01"))
    assert main(["compare", runs[0], "--out", str(page)]) == 2
    assert "two or more run folders" in capsys.readouterr().err


def test_runs_and_compare_show_the_kept_models_figures(tmp_path, capsys):
    """A run that keeps its last epoch, whose best epoch scored more on validation: the
    listing and the page show the kept model's figures, not the best epoch's."""
    import csv

    options = dict(model="conv4k3-pool2-dense8", epochs=4, lr=0.05, schedule="constant",
                   seed=3, val_fraction=0.25, device="cpu", out=str(tmp_path))
    last = cnnkit.train("shapes:size=12,count=120", keep="last", name="last", **options)
    best = cnnkit.train("shapes:size=12,count=120", keep="best", name="best", plots=False,
                        **options)
    with open(last.run_dir / "metrics.csv", newline="") as fh:
        vals = [float(r["val_acc"]) for r in csv.DictReader(fh)]
    assert max(vals) > vals[-1], f"the case needs a best epoch before the last: {vals}"
    capsys.readouterr()  # the runs' own output
    assert main(["runs", str(tmp_path), "--format", "json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name, run in (("last", last), ("best", best)):
        saved = json.loads((run.run_dir / "test_metrics.json").read_text())
        assert rows[name]["test_acc"] == saved["accuracy"]  # the kept model's test
    assert (rows["last"]["kept"], rows["last"]["kept_epoch"]) == ("last", 4)
    assert rows["last"]["val_acc"] == pytest.approx(vals[-1])
    assert rows["last"]["best_val_acc"] == pytest.approx(max(vals))
    assert (rows["best"]["kept"], rows["best"]["kept_epoch"]) == (
        "best", vals.index(max(vals)) + 1)
    assert rows["best"]["val_acc"] == pytest.approx(max(vals))

    assert main(["runs", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "test acc (kept)" in table and "val acc (kept)" in table
    line = next(x for x in table.splitlines() if x.startswith("last"))
    assert f"{vals[-1]:.2%}" in line and f"{max(vals):.2%}" not in line
    assert "epoch 4 (last)" in line

    report = (last.run_dir / "report.html").read_text()  # the run's own report agrees
    assert f"<b>{vals[-1]:.2%}</b><span>validation accuracy (the kept model: epoch 4)" in report
    assert "not the kept model" in report

    report = (last.run_dir / "report.html").read_text()  # the run's own report agrees
    kept_card = f"<b>{vals[-1]:.2%}</b><span>validation accuracy (the kept model: epoch 4)"
    assert kept_card in report
    assert "not the kept model" in report

    page = tmp_path / "cmp.html"
    assert main(["compare", str(last.run_dir), str(best.run_dir), "--out", str(page)]) == 0
    html = page.read_text()
    assert "val acc (kept)" in html and "best val acc" not in html
    assert "epoch 4 (last)" in html


def test_runs_show_the_start_when_a_fine_tune_kept_it(lite0_features_run, tmp_path, capsys):
    """A fine-tune from a trained start that did worse keeps its start (kept.json): the
    listing shows the start's validation accuracy, as the run recorded it."""
    fast = dict(plots=False, device="cpu", seed=0, out=str(tmp_path))
    first = lite0_features_run  # Lite0's features on the same 60 shapes at 32 px
    second = cnnkit.train("shapes:count=60,size=32", mode="fine-tune", epochs=1, lr=0.5,
                          init_from=str(first.run_dir), batch_size=16, name="wrecked", **fast)
    kept = json.loads((second.run_dir / "kept.json").read_text())
    assert kept["kept"] == "start", "the case needs a fine-tune that did worse than its start"
    capsys.readouterr()
    assert main(["runs", str(tmp_path), "--format", "json"]) == 0
    row = {r["name"]: r for r in json.loads(capsys.readouterr().out)}["wrecked"]
    assert (row["kept"], row["kept_epoch"]) == ("start", 0)
    assert row["val_acc"] == pytest.approx(kept["start"]["val_acc"])
    assert row["best_val_acc"] == pytest.approx(kept["end"]["val_acc"], abs=1e-6)  # csv
    assert row["best_val_acc"] < row["val_acc"]  # before: the listing showed this one
    assert row["test_acc"] == pytest.approx(second.test_accuracy)
    assert main(["runs", str(tmp_path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("wrecked"))
    assert "the start" in line and f"{kept['start']['val_acc']:.2%}" in line


def test_a_multilabel_run_lists_its_exact_match_and_best_epoch(trained_multilabel, tmp_path,
                                                               capsys) -> None:
    from cnnkit.artifacts.rundir import RunDir
    from cnnkit.inspect.runs import kept_model, summarize

    run, _ = trained_multilabel
    summary = summarize(run)
    rows = (run / "metrics.csv").read_text().splitlines()
    last = dict(zip(rows[0].split(","), rows[-1].split(",")))
    saved = json.loads((run / "test_metrics.json").read_text())
    assert summary.figure == "exact"
    assert summary.val_acc == pytest.approx(float(last["val_exact"]))
    assert summary.test_acc == pytest.approx(saved["exact_match"])
    # keep=best picks the epoch with the best exact match, as the loop does
    history = [{"epoch": "1", "val_exact": "0.5", "val_loss": "2.0"},
               {"epoch": "2", "val_exact": "0.4", "val_loss": "1.0"}]
    assert kept_model(RunDir.open(run), {"keep": "best"}, history) == ("best", 1, 0.5)
    assert main(["runs", str(run.parent)]) == 0
    assert "exact" in capsys.readouterr().out
    from cnnkit.inspect.compare import _panels, compare_runs

    assert _panels("exact")[3] == ("val_exact", "validation exact match")
    page = compare_runs([run, run], tmp_path / "compare.html").read_text()
    assert "test exact (kept)" in page and "test acc" not in page


def test_accuracy_and_exact_match_are_shown_as_percentages_and_not_ranked_together():
    from cnnkit.inspect.compare import _summary_table
    from cnnkit.inspect.runs import RunSummary

    def run(name: str, figure: str, test: float, val: float) -> RunSummary:
        return RunSummary(f"runs/{name}", name, "d", "fast-cnn", "scratch", 2, 2, "last", 2,
                          val, test, val, 2, 10.0, 1000, 0.0, True, figure)

    mixed = _summary_table([run("one", "acc", 0.91, 0.9), run("tags", "exact", 0.42, 0.4)],
                           ["one", "tags"])
    assert "test acc / exact (kept)" in mixed
    assert "91.00%" in mixed and "42.00%" in mixed
    cells = [c for c in mixed.split("<td") if "%" in c]
    assert cells and not any('class="best"' in c for c in cells)  # two scales: no winner

    exact = _summary_table([run("a", "exact", 0.42, 0.4), run("b", "exact", 0.47, 0.45)],
                           ["a", "b"])
    assert "test exact (kept)" in exact and "0.47" not in exact.replace("47.00%", "")
    assert ' class="best">47.00%' in exact and ' class="best">45.00%' in exact


def test_runs_tested_on_other_images_are_not_ranked(three_runs, tmp_path, capsys):
    """Runs on other data, or split otherwise, were tested on other images: no green
    'best' in their accuracy columns, and the page says why; the same split is ranked."""
    other = cnnkit.train("shapes:size=16", model="fast-cnn", epochs=1, per_class=20,
                         seed=5, out=str(tmp_path), name="seed5", plots=False)
    page = tmp_path / "cmp.html"
    same = [str(three_runs / n) for n in ("lr0.003", "lr0.03")]
    assert main(["compare", *same, "--out", str(page)]) == 0
    html = page.read_text()
    assert html.count('class="best">') >= 2 and "figures are not ranked" not in html

    assert main(["compare", same[0], str(other.run_dir), "--out", str(page)]) == 0
    html = page.read_text()
    best = [c for c in html.split("<td")[1:] if 'class="best"' in c]
    assert not any("%" in c for c in best), best  # time and size still ranked
    assert "Test figures are not ranked: they were measured on other images (seed differs: 0, 5)" \
        in html


def test_runs_on_a_copy_of_one_folder_are_ranked(tmp_path, capsys):
    """split.json's content hashes tell that a copied folder holds the same images: runs
    on a folder and on its copy were tested on the same images, and are ranked."""
    import shutil

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(("dark", "light")):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(30):
            pixels = rng.integers(0, 120, (16, 16, 3)) + 120 * c
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "data" / name / f"{i}.png")
    shutil.copytree(tmp_path / "data", tmp_path / "copy")
    runs = [cnnkit.train(str(tmp_path / d), model="fast-cnn", epochs=1, out=str(tmp_path),
                         name=f"on-{d}", plots=False).run_dir for d in ("data", "copy")]
    page = tmp_path / "cmp.html"
    assert main(["compare", *map(str, runs), "--out", str(page)]) == 0
    assert "figures are not ranked" not in page.read_text()
