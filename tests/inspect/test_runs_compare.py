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
