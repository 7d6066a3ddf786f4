"""What to label next: unlabelled images ranked by uncertainty with diversity.

The run's model gives each unlabelled image its class probabilities and its codes (the
pre-logits features). The ``CANDIDATES`` x ``n`` images with the smallest margin between
the two likeliest classes are the candidates (the model is least sure of them); from
those, k-center greedy picks ``n`` that are far from each other and from the images the
run was trained on (each pick is the candidate farthest from everything chosen or
labelled so far), so a batch is not 100 copies of one confusing kind of image
(Sener and Savarese 2018, "Active Learning for CNNs: A Core-Set Approach"; margin then
diversity as in Citovsky et al. 2021, "Batch Active Learning at Scale").
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.base.errors import CnnkitError

CANDIDATES = 3  # the most uncertain CANDIDATES * n images are the pool k-center picks from


def margins(probs: np.ndarray) -> np.ndarray:
    """The likeliest class's probability minus the second's (small: unsure)."""
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def k_center_greedy(codes: np.ndarray, n: int, centres: np.ndarray | None = None,
                    first: int = 0) -> list[int]:
    """``n`` rows of ``codes`` picked one by one, each the farthest (Euclidean) from the
    ``centres`` and the rows picked before it; without centres the first pick is
    ``first``."""
    n = min(n, len(codes))
    if n <= 0:
        return []
    x = torch.from_numpy(np.ascontiguousarray(codes, dtype=np.float32))
    if centres is not None and len(centres):
        c = torch.from_numpy(np.ascontiguousarray(centres, dtype=np.float32))
        dist = torch.cat([torch.cdist(x, c[s:s + 4096]).amin(1, keepdim=True)
                          for s in range(0, len(c), 4096)], 1).amin(1)
        picks: list[int] = []
    else:
        picks = [first]
        dist = torch.cdist(x, x[first:first + 1])[:, 0]
    while len(picks) < n:
        i = int(torch.argmax(dist))
        picks.append(i)
        dist = torch.minimum(dist, torch.cdist(x, x[i:i + 1])[:, 0])
    return picks


def select(probs: np.ndarray, codes: np.ndarray, n: int,
           labelled: np.ndarray | None = None) -> list[int]:
    """Indices of the ``n`` images to label next, in the order picked."""
    m = margins(probs)
    pool = np.argsort(m, kind="stable")[:max(n, CANDIDATES * n)]
    chosen = k_center_greedy(codes[pool], n, labelled)
    return [int(pool[i]) for i in chosen]


@dataclass
class Suggestion:
    files: list[str]  # in the order picked
    predicted: list[str]
    confidence: list[float]  # the likeliest class's probability
    margin: list[float]
    unlike: list[bool]  # the run's unknown rule calls it unlike every class it knows
    images: torch.Tensor  # uint8, the picked images, for the contact sheet
    pool: int  # unlabelled images read
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"pool": self.pool, "suggested": len(self.files),
                "seconds": round(self.seconds, 2),
                "images": [{"file": f, "predicted": p, "confidence": round(c, 4),
                            "margin": round(m, 4), "unlike": u} for f, p, c, m, u in
                           zip(self.files, self.predicted, self.confidence, self.margin,
                               self.unlike)]}


def unlabelled_files(folder: str) -> list[str]:
    """The image files under ``folder``; one clear line when there are none."""
    from cnnkit.data.scan import scan_images

    path = Path(os.path.expanduser(folder))
    if not path.is_dir():
        raise CnnkitError(f"Unlabelled folder not found: {folder!r}. Pass a folder of images "
                          "to choose from.")
    scan = scan_images(path)
    scan.warn()
    files = sorted(scan.files)
    if not files:
        raise CnnkitError(f"No images found in {folder!r} (looked in every sub-folder). Put "
                          "the unlabelled images there (.jpg, .png, ...).")
    return files


def suggest(run: str, folder: str, n: int = 100, *, use_labelled: bool = True) -> Suggestion:
    """The ``n`` images of ``folder`` the run's model would learn most from, labelled."""
    from cnnkit.artifacts.modelfile import load_model
    from cnnkit.artifacts.rundir import RunDir
    from cnnkit.base.device import pick_device
    from cnnkit.data.sources import load_files
    from cnnkit.training.features import cached_features

    if n < 1:
        raise CnnkitError(f"--n must be at least 1. Received: {n}")
    start = time.perf_counter()
    folder_run = RunDir.open(run)
    if not folder_run.model_path.is_file():
        raise CnnkitError(f"{folder_run.root} has no model.safetensors yet. Pass a finished "
                          "run.")
    files = unlabelled_files(folder)
    model, card = load_model(folder_run.model_path)
    if card.task.name != "single-label":
        raise CnnkitError(f"{folder_run.root} is a {card.task.name} model; suggest ranks by "
                          "the margin between a single-label model's two likeliest classes. "
                          "Pass a single-label run.")
    pre = card.preprocess
    data = load_files(files, [0] * len(files), card.classes, pre)
    device = pick_device("auto")
    model = model.to(device).eval()
    identity = {"run_model": card.sha256 or str(folder_run.model_path.resolve())}
    codes, _ = cached_features(model, identity, data, pre, device, channels_last=False,
                               label="unlabelled")
    with torch.no_grad():
        logits = model.get_classifier()(codes.to(device)).float().cpu()
    probs = card.task.scores(logits).exp().numpy()  # at the run's calibrated temperature
    labelled = _labelled_codes(folder_run, model, card, identity, device) if use_labelled \
        else None
    picks = select(probs, codes.numpy(), n, labelled)
    m = margins(probs)
    unlike = unlike_every_class(card, folder_run.root, logits.numpy(), codes.numpy())
    paths = data.paths or tuple(files)
    return Suggestion([paths[i] for i in picks],
                      [card.classes[int(probs[i].argmax())] for i in picks],
                      [float(probs[i].max()) for i in picks], [float(m[i]) for i in picks],
                      [bool(unlike[i]) for i in picks],
                      data.images[torch.tensor(picks, dtype=torch.long)], len(data),
                      time.perf_counter() - start)


def unlike_every_class(card: Any, root: Path, logits: np.ndarray, codes: np.ndarray
                       ) -> np.ndarray:
    """Whether the run's unknown rule answers each image 'unknown' as predict does (by
    the energy of its raw logits and, with the statistics beside the weights, the
    distance of its codes); all False for a run without a rule."""
    from cnnkit.runtime.exports import stats_beside
    from cnnkit.tasks.ood import energy

    rule = getattr(card.task, "unknown", None)
    if rule is None:
        return np.zeros(len(logits), dtype=bool)
    stats = stats_beside(card, root)
    distance = stats.distance(codes) if stats is not None else None
    return np.asarray(rule.unknown(energy(logits), distance), dtype=bool)


def _labelled_codes(run: Any, model: torch.nn.Module, card: Any, identity: dict[str, Any],
                    device: torch.device) -> np.ndarray | None:
    """Codes of the images the run was trained on, when they can still be read."""
    import json

    from cnnkit.base import log
    from cnnkit.base.config import TrainConfig
    from cnnkit.data.sources import load_run_splits
    from cnnkit.training.features import cached_features

    try:
        config = TrainConfig.from_dict(json.loads(run.config_path.read_text()))
        quiet = log.silent()
        log.set_quiet(True)
        try:
            splits = load_run_splits(config, card.preprocess)
        finally:
            log.set_quiet(quiet)
    except (CnnkitError, OSError, ValueError, KeyError) as exc:
        log.warn(f"the run's training images cannot be read ({exc}); suggestions are kept "
                 "apart from each other only, not from what it was trained on")
        return None
    codes, _ = cached_features(model, identity, splits.train, card.preprocess, device,
                               channels_last=False, label="labelled")
    return codes.numpy()


def write_suggestion(s: Suggestion, out: str | os.PathLike) -> dict[str, Path]:
    """``to_label.csv`` (``path,label`` with the label left empty, to fill in) and the
    contact sheet ``to_label.png``."""
    from cnnkit.base.atomic import atomic_path, write_json
    from cnnkit.curate.sheet import contact_sheet

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / "to_label.csv", "json": folder / "to_label.json",
             "sheet": folder / "to_label.png"}
    base = folder.resolve()
    with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "rank", "model_guess", "confidence", "unlike"])
        for r, (f, p, c, u) in enumerate(zip(s.files, s.predicted, s.confidence, s.unlike),
                                         1):
            w.writerow([os.path.relpath(os.path.abspath(f), base), "", r, p, f"{c:.3f}",
                        "yes" if u else ""])
    write_json(paths["json"], s.to_dict())
    contact_sheet(list(s.images), [[f"{r}. {Path(f).name}",
                                    "unlike every class" if u else f"guess {p} {c:.0%}"]
                                   for r, (f, p, c, u) in enumerate(zip(
                                       s.files, s.predicted, s.confidence, s.unlike), 1)],
                  paths["sheet"], columns=10,
                  title=f"{len(s.files)} image(s) to label next, of {s.pool:,} (most useful "
                        "first); fill in the label column of to_label.csv")
    return paths
