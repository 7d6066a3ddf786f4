"""Progress where output is a log file: plain lines during a long epoch, none for short."""

from __future__ import annotations

import itertools

from cnnkit.base import progress


def _run_epoch(monkeypatch, seconds_per_step: float, steps: int = 50) -> None:
    clock = itertools.count(0.0, seconds_per_step)
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    bar = progress.EpochBar(2, 8, steps, "fine-tune")
    assert bar.plain  # pytest's captured stdout is not a terminal
    for _ in range(steps):
        bar.update(0.5, 0.9, 120.0)
    bar.close()


def test_a_long_epoch_prints_a_line_every_tenth(monkeypatch, capsys) -> None:
    _run_epoch(monkeypatch, seconds_per_step=5.0)
    out = capsys.readouterr().out.splitlines()
    lines = [ln for ln in out if ln.startswith("epoch 2/8 fine-tune ") and "━" not in ln]
    assert len(lines) == 9  # 5/50 ... 45/50; rich prints the finished bar itself
    assert lines[0].startswith("epoch 2/8 fine-tune 5/50 loss 0.5000 acc 90.00% 120 img/s")
    assert lines[0].endswith("0:25 < 3:45")  # 5 steps in 25 s, 45 left


def test_a_short_epoch_prints_only_the_finished_bar(monkeypatch, capsys) -> None:
    _run_epoch(monkeypatch, seconds_per_step=0.01)
    out = capsys.readouterr().out
    assert "5/50" not in out and "50/50" in out
