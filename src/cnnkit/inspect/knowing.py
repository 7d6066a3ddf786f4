"""What the report shows of a model's calibration and its unknown rule.

On the evaluation images (the test split; never used to fit either): the top
probability before the temperature (the model as trained) and after it, and each
image's unknown score (what the rule reads: the energy, and with the run's feature
statistics the feature distance too) against the line the run chose on its validation
split. Also
images of none of the classes made from the evaluation images themselves (their pixels
shuffled: the same grey levels, no shape) and uniform noise, to show the rule at work on
inputs unlike every class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cnnkit.tasks.calibration import log_softmax
from cnnkit.tasks.ood import FeatureStats, UnknownRule, energy
from cnnkit.tasks.threshold import reliability

STRANGE = 64  # made-up images of each kind (shuffled pixels, noise)


@dataclass(frozen=True)
class Knowing:
    """Calibration and unknown-rule figures of a model on labelled evaluation images."""

    temperature: float
    fitted_on: int  # validation images the temperature and rule were fitted on
    before: np.ndarray  # top probability at temperature 1, per evaluation image
    after: np.ndarray  # at the fitted temperature
    correct: np.ndarray  # whether the top class is the true one
    scores: np.ndarray | None  # unknown score per evaluation image (None: no rule)
    flags: np.ndarray | None  # whether the rule answers each of them 'unknown'
    kept: float | None  # the share of validation images the rule keeps
    strange: dict[str, tuple[np.ndarray, np.ndarray]]  # made-up images: (scores, flags)
    reads: str = "energy"  # what the rule read here: "energy" or "energy and distance"

    @property
    def ece_before(self) -> float:
        return reliability(self.before, self.correct).ece

    @property
    def ece_after(self) -> float:
        return reliability(self.after, self.correct).ece

    def rows(self) -> list[list[str]]:
        """Per kind of image: how many, the share answered 'unknown', and (for the
        evaluation images) the accuracy of the answered and of the flagged ones."""
        if self.flags is None:
            return []
        flag = self.flags
        out = [["evaluation images (known classes)", f"{len(flag):,}", f"{flag.mean():.1%}",
                _acc(self.correct[~flag]), _acc(self.correct[flag])]]
        for name, (_, f) in self.strange.items():
            out.append([name, f"{len(f):,}", f"{f.mean():.1%}" if len(f) else "-", "-", "-"])
        return out


def _acc(ok: np.ndarray) -> str:
    return f"{ok.mean():.2%}" if len(ok) else "-"


def knowing(model: torch.nn.Module, card: Any, imageset: Any, probs: np.ndarray,
            labels: np.ndarray, stats: FeatureStats | None = None) -> Knowing | None:
    """The figures for a run whose task has a calibration (None when it has none);
    ``stats``: the run's feature statistics, when its unknown rule reads the distance."""
    task = card.task
    cal = getattr(task, "calibration", None)
    if cal is None:
        return None
    t = float(task.temperature)
    lp = np.log(np.maximum(np.asarray(probs, np.float64), 1e-300))
    raw = np.exp(log_softmax(lp * t))  # the model's own probabilities (temperature 1)
    correct = np.asarray(probs).argmax(1) == np.asarray(labels)
    rule = getattr(task, "unknown", None)
    scores = flags = None
    strange: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    reads = "energy"
    if rule is not None:
        crop = imageset.crop_fraction
        if stats is None or not rule.uses_distance:
            stats = None
        else:
            reads = "energy and distance"
        scores, flags = _scored(model, card, rule, stats, imageset.images, crop)
        strange = {k: _scored(model, card, rule, stats, v, crop)
                   for k, v in _made_up(imageset.images).items()}
    return Knowing(t, cal.fitted_on, raw.max(1), np.asarray(probs).max(1), correct,
                   scores, flags, rule.kept if rule else None, strange, reads)


def _scored(model: torch.nn.Module, card: Any, rule: UnknownRule, stats: FeatureStats | None,
            images: torch.Tensor, crop: float) -> tuple[np.ndarray, np.ndarray]:
    """The rule's unknown scores of ``images`` and whether it answers each 'unknown'."""
    from cnnkit.data.imageset import ImageSet
    from cnnkit.models.feature_distance import WithDistance
    from cnnkit.runtime.inference import view_outputs

    data = ImageSet(images.cpu(), torch.zeros(len(images), dtype=torch.long), card.classes,
                    crop_fraction=crop)
    device = next(model.parameters()).device
    net = (WithDistance(model, stats.means, stats.whiten, stats.iso).to(device) if stats is not None
           else model)
    views, distances = view_outputs(net, data, card.preprocess, device)
    e = energy(views[0])
    d = distances[0] if distances is not None else None
    return rule.score(e, d), rule.unknown(e, d)


def _made_up(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Images of none of the classes, as many as :data:`STRANGE` of each kind, seeded."""
    g = torch.Generator().manual_seed(0)
    pick = images[torch.randperm(len(images), generator=g)[:STRANGE]].cpu()
    n, c, h, w = pick.shape
    flat = pick.reshape(n, c, h * w)
    order = torch.stack([torch.randperm(h * w, generator=g) for _ in range(n)])
    shuffled = torch.gather(flat, 2, order[:, None, :].expand(n, c, h * w)).reshape(pick.shape)
    noise = torch.randint(0, 256, pick.shape, generator=g, dtype=torch.uint8)
    return {"their pixels shuffled (made up)": shuffled, "uniform noise (made up)": noise}


def plot_knowing(k: Knowing, path: Any, eval_name: str) -> Any:
    """Reliability before and after the temperature, beside the unknown scores of the
    evaluation images and of the made-up ones against the rule's line."""
    from cnnkit.inspect.figures import new_figure, save

    fig = new_figure(12, 4.6)
    diag, hist = fig.subplots(1, 2)
    for conf, colour, name in ((k.before, "tab:grey", "before (the model's own)"),
                               (k.after, "tab:blue", f"after (temperature {k.temperature:.3g})")):
        rel = reliability(conf, k.correct)
        edges = np.asarray(rel.edges)
        centres = (edges[:-1] + edges[1:]) / 2
        acc = np.asarray(rel.accuracy)
        have = ~np.isnan(acc)
        diag.plot(centres[have], acc[have], "o-", color=colour,
                  label=f"{name}: ECE {rel.ece:.3f}")
    diag.plot([0, 1], [0, 1], "--", color="black", lw=0.8, label="calibrated")
    diag.set_xlim(0, 1)
    diag.set_ylim(0, 1.02)
    diag.set_xlabel("top-class probability (bin)")
    diag.set_ylabel("accuracy in the bin")
    diag.legend(loc="upper left", fontsize=8)
    diag.set_title(f"Reliability on the {eval_name} images")
    if k.scores is not None:
        bins = np.linspace(0.0, 1.0, 41)
        hist.hist(k.scores, bins=bins, color="tab:green", alpha=0.7,
                  label=f"{eval_name} images (known classes)", density=True)
        for (name, (scores, _)), colour in zip(k.strange.items(), ("tab:orange", "tab:red")):
            hist.hist(scores, bins=bins, color=colour, alpha=0.5, label=name, density=True)
        if k.kept is not None:
            hist.axvline(k.kept, color="black", ls="--", label=f"unknown above {k.kept:.2f}")
        hist.set_xlabel(f"unknown score ({k.reads}): share of validation images less "
                        "strange")
        hist.set_ylabel("share of images (density)")
        hist.legend(loc="upper left", fontsize=8)
        hist.set_title("Unknown inputs: the rule chosen on the validation split")
    else:
        hist.axis("off")
    fig.suptitle("Calibrated probabilities and unknown inputs", fontsize=12)
    return save(fig, path)
