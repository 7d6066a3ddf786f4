"""The report's plots: what they draw for awkward results."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnkit.inspect import plots


def _drawn(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The figure ``plots`` would save, kept to read its texts."""
    kept: dict = {}

    def keep(fig, path):
        kept["fig"] = fig
        return Path(path)

    monkeypatch.setattr(plots, "save", keep)
    return kept


def _row(name: str, p: float, r: float, f: float, support: int, predicted: int) -> dict:
    return {"class": name, "precision": p, "recall": r, "f1": f, "support": support,
            "predicted": predicted}


def test_a_class_with_no_image_draws_no_scores(monkeypatch, tmp_path: Path) -> None:
    """The per-class bars of a class absent from the test split say 'no image', not three
    0.00 scores that read as a class the model always misses."""
    kept = _drawn(monkeypatch)
    plots.plot_per_class([_row("cat", 1, 1, 1, 3, 3), _row("coffee", 0, 0, 0, 0, 0),
                          _row("rocket", 1, 1, 1, 3, 3)], tmp_path / "p.png", "per class")
    ax = kept["fig"].axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("0.00") == 0 and "no image in this data" in texts


def test_the_lowest_f1_of_many_classes_leaves_out_classes_with_no_image(
        monkeypatch, tmp_path: Path) -> None:
    kept = _drawn(monkeypatch)
    rows = [_row(f"absent{i}", 0, 0, 0, 0, 0) for i in range(plots.MAX_BARS)]
    rows += [_row(f"seen{i}", 0.5, 0.5, 0.5 + i / 100, 4, 4) for i in range(plots.MAX_BARS)]
    plots.plot_per_class(rows, tmp_path / "p.png", "per class")
    labels = [t.get_text() for t in kept["fig"].axes[0].get_yticklabels()]
    assert all(label.startswith("seen") for label in labels)
