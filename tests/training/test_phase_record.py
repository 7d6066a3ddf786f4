"""phases.json and what a phase's start says."""

from __future__ import annotations

from pathlib import Path

import pytest

import cnnkit


def test_a_warm_up_as_long_as_the_phase_is_said(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """--warmup-epochs 50 with -e 1: the rate rose over the whole run to the peak at its
    last step and the model was kept unannealed, with nothing said."""
    opts = {"model": "lenet5", "plots": False, "device": "cpu", "img_size": 16,
            "out": str(tmp_path)}
    cnnkit.train("shapes:count=30,size=16", epochs=1, warmup_epochs=50, **opts)
    assert ("--warmup-epochs 50 spans all of phase train's 1 epoch: its learning rate rises "
            "to the peak at the phase's last step and never anneals") in capsys.readouterr().err
    cnnkit.train("shapes:count=30,size=16", epochs=2, warmup_epochs=1, **opts)
    assert "--warmup-epochs" not in capsys.readouterr().err
