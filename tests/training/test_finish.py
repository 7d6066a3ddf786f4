"""The end of a run: its test line says how the figures were measured, and `cnnkit
evaluate` repeats them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cnnkit
from cnnkit.evaluation import evaluate_run


def test_a_tta_run_says_its_test_figures_are_flip_averaged(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    """With --tta the printed test figures (and test_metrics.json) are flip-averaged while
    `cnnkit evaluate RUN` answers without it unless asked: a run of 40 test images printed
    top-5 75.00% and evaluate gave 77.50%, with nothing saying why."""
    result = cnnkit.train("shapes:count=60,size=32", model="lenet5", epochs=1, tta=True,
                          plots=False, device="cpu", out=str(tmp_path))
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if s.startswith("test"))
    assert line.startswith(f"test (flip TTA: cnnkit evaluate {result.run_dir} --tta): "), line
    saved = json.loads((result.run_dir / "test_metrics.json").read_text())
    again = evaluate_run(result.run_dir, tta=True, device="cpu")
    assert again.accuracy == pytest.approx(saved["accuracy"])
    assert again.to_dict()["top_k_accuracy"] == pytest.approx(saved["top_k_accuracy"])
