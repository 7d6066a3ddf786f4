"""The training step: CPU chunking must not change what a batch computes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cnnkit.runtime.inference import chunk_size
from cnnkit.tasks.single_label import SingleLabel
from cnnkit.training.distributed import SINGLE
from cnnkit.training.optim import param_groups
from cnnkit.training.step import TrainStep
from cnnkit.training.transfer import Phase

CPU = torch.device("cpu")


def test_cpu_chunks_are_sized_by_pixels() -> None:
    assert chunk_size(CPU, 224, 32, training=True) == 6
    assert chunk_size(CPU, 224, 256) == 4
    assert chunk_size(CPU, 28, 128, training=True) == 128  # small images: the whole batch
    assert chunk_size(CPU, 1024, 32) == 1
    assert chunk_size(torch.device("cuda"), 224, 256) == 256  # never split on a GPU


def _step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int,
          weights: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    plan = SimpleNamespace(device=CPU, cluster=SINGLE, task=SingleLabel(),
                           pre=SimpleNamespace(img_size=8),
                           config=SimpleNamespace(label_smoothing=0.1, precision="fp32",
                                                  optimizer="sgd", batch_size=len(x)))
    phase = Phase("train", 1, 0.1, lambda m: param_groups(m.named_parameters(), 0.0))
    step = TrainStep(plan, model, phase, class_weights=weights)  # type: ignore[arg-type]
    step.chunk = chunk
    logits, loss = step.forward_backward(x, y)
    return logits, loss, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("targets", ["labels", "weighted labels", "soft"])
def test_chunked_steps_match_one_pass(targets: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    x = torch.randn(10, 3, 8, 8)
    y = torch.randint(0, 5, (10,))
    if targets == "soft":
        y = torch.softmax(torch.randn(10, 5), 1)
    weights = torch.tensor([0.5, 1.0, 2.0, 1.0, 3.0]) if targets != "labels" else None
    whole = _step(model, x, y, 10, weights)
    chunked = _step(model, x, y, 3, weights)  # uneven chunks: 3+3+3+1
    torch.testing.assert_close(chunked[0], whole[0])
    torch.testing.assert_close(chunked[1], whole[1])
    for a, b in zip(chunked[2], whole[2]):
        torch.testing.assert_close(a, b)


def test_warmup_epochs_set_the_warm_up_the_loop_follows(tmp_path, monkeypatch) -> None:
    import cnnkit
    from cnnkit.training import loop

    rates: list[float] = []

    class Watched(TrainStep):
        def __call__(self, x, y, lr=None):
            rates.append(lr)
            return super().__call__(x, y, lr)

    monkeypatch.setattr(loop, "TrainStep", Watched)
    result = cnnkit.train("shapes:size=12,count=60", model="conv4k3-pool2-dense8", epochs=2,
                          batch_size=16, lr=0.01, schedule="constant", warmup_epochs=1,
                          plots=False, device="cpu", out=str(tmp_path))
    steps = len(rates) // 2
    first, second = rates[:steps], rates[steps:]
    # linear from 0 over the first epoch (as timm's warmup_epochs), then the constant rate
    assert first[0] == 0 and first == sorted(first) and first[-1] < 0.01
    assert first[steps // 2] == pytest.approx(0.01 * (steps // 2) / steps)
    assert second == [pytest.approx(0.01)] * steps
    assert result.config.warmup_epochs == 1
    curve = json.loads((result.run_dir / "phases.json").read_text())[0]["lr_curve"]
    assert curve["lr"][curve["epoch"].index(0.5)] == pytest.approx(0.005)  # what the report draws


def test_warmup_epochs_default_to_the_schedules_own_share() -> None:
    from cnnkit.training.optim import warmup_fraction

    assert warmup_fraction("onecycle") == 0.25 and warmup_fraction("cosine") == 0.05
    assert warmup_fraction("cosine", 1, epochs=4) == 0.25
    assert warmup_fraction("onecycle", 0, epochs=4) == 0.0
    assert warmup_fraction("constant", 6, epochs=4) == 1.0  # at most the whole phase


def test_metrics_record_the_rate_used_and_fp16_scales_the_loss(tmp_path, monkeypatch) -> None:
    """lr in metrics.csv is the schedule's rate at the epoch's end, not the phase's peak;
    fp16 trains through torch.amp.GradScaler, whose state the checkpoint keeps. A CPU
    trains fp16 runs in bf16 (tests/training/test_quick_checks.py); here the plan keeps
    fp16, so that the scaler's path (a GPU's in use) runs on the CPU too."""
    import cnnkit
    from cnnkit.training import recipe
    from cnnkit.training.checkpoint import load_checkpoint
    from cnnkit.training.optim import lr_factor

    monkeypatch.setattr(recipe, "settle_precision", lambda precision, device_type: precision)

    result = cnnkit.train("shapes:size=12,count=60", model="conv4k3-pool2-dense8", epochs=3,
                          batch_size=16, precision="fp16", device="cpu", plots=False,
                          out=str(tmp_path), keep_checkpoint=True)
    peak = json.loads((result.run_dir / "config.json").read_text())["lr"]
    rates = [row["lr"] for row in result.history]
    assert len(set(rates)) == 3 and max(rates) < peak  # onecycle: every epoch ends elsewhere
    steps = 54 // 16  # shapes:count=60 less its 10% validation share, in full batches
    for epoch, rate in enumerate(rates):
        expected = peak * lr_factor((epoch + 1) * steps - 1, 3 * steps, "onecycle", 0.25)
        assert rate == pytest.approx(expected, rel=1e-4)
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in result.history)
    meta = load_checkpoint(result.run_dir / "checkpoints" / "last.safetensors")[2]
    assert meta["scaler"]["scale"] > 0


def test_a_run_that_diverges_under_a_weight_decay_given_names_it(tmp_path) -> None:
    """--weight-decay 1e9 sent the loss to nan and the line said only 'lower --lr (now
    0.0005)', the default rate, which was not the cause."""
    import cnnkit
    from cnnkit.base.errors import CnnkitError

    with pytest.raises(CnnkitError, match=r"lower --lr \(now 0\.\d+\) or --weight-decay "
                                          r"\(now 1e\+30\)"):
        cnnkit.train("shapes:count=90,size=16", model="lenet5", epochs=2, img_size=16,
                     batch_size=8, weight_decay=1e30, plots=False, device="cpu", out=str(tmp_path))
