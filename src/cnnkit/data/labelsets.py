"""Multi-label data: label sets written in a CSV field, multi-hot targets, and splits
stratified over every label at once.

A labels field lists an image's labels separated by ``|`` or ``;`` (``cat|dog``,
``cat; dog``); a comma separates them too inside a quoted field (``"cat,dog"``).
Spaces around each label are dropped, a label named twice counts once, and an empty
field is an image with no label (allowed, and counted). A CSV is multi-label when its
header names the labels column ``labels`` or ``tags``, or when any row lists more than
one label.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

SEPARATORS = "|;,"
_SPLIT = re.compile(r"[|;,]")
MULTILABEL_HEADERS = ("labels", "tags")


def parse_labels(field: str) -> tuple[str, ...]:
    """The labels a field lists, in the order first named, each once (empty: none)."""
    out: dict[str, None] = {}
    for piece in _SPLIT.split(field):
        name = piece.strip()
        if name:
            out.setdefault(name, None)
    return tuple(out)


def lists_several(field: str) -> bool:
    """Whether a labels field holds a separator (so the file is a multi-label CSV)."""
    return any(sep in field for sep in SEPARATORS)


def multi_hot(label_sets: Sequence[Sequence[int]], num_classes: int) -> torch.Tensor:
    """``(N, num_classes)`` float32 targets: 1 where an image has the label."""
    out = torch.zeros((len(label_sets), num_classes), dtype=torch.float32)
    for i, labels in enumerate(label_sets):
        if len(labels):
            out[i, list(labels)] = 1.0
    return out


def label_sets(targets: torch.Tensor) -> list[tuple[int, ...]]:
    """The label indices of each row of a multi-hot matrix."""
    rows = targets.detach().cpu().numpy() > 0.5
    return [tuple(np.flatnonzero(r).tolist()) for r in rows]


def unlabelled(targets: torch.Tensor) -> int:
    """How many images have no label at all."""
    return int((targets.sum(1) == 0).sum()) if len(targets) else 0


def iterative_split(targets: torch.Tensor, fractions: Sequence[float], seed: int
                    ) -> list[torch.Tensor]:
    """Indices of ``1 - sum(fractions)`` and each fraction of multi-label data, by
    iterative stratification (Sechidis et al., 2011: the rarest label is shared out
    first, each image to the part that most lacks its labels), after a seeded shuffle
    so that ties fall differently with each seed. Images with no label are shared out
    by size. Returns sorted index tensors, the remainder first."""
    from iterstrat.ml_stratifiers import IterativeStratification

    n = len(targets)
    wanted = [f for f in fractions if f > 0]
    if n == 0 or not wanted:
        return [torch.arange(n)] + [torch.empty(0, dtype=torch.long) for _ in fractions]
    order = np.random.default_rng(seed).permutation(n)
    y = targets.detach().cpu().numpy()[order] > 0.5
    r = np.array([*wanted, 1.0 - sum(wanted)], dtype=np.float64)
    folds = IterativeStratification(y, r, np.random.RandomState(seed))
    parts: list[torch.Tensor] = []
    k = 0
    for frac in fractions:
        if frac > 0:
            parts.append(torch.from_numpy(np.sort(order[folds == k])).long())
            k += 1
        else:
            parts.append(torch.empty(0, dtype=torch.long))
    rest = torch.from_numpy(np.sort(order[folds == len(wanted)])).long()
    return [rest, *parts]


def take_per_label(targets: torch.Tensor, per_label: int, seed: int) -> torch.Tensor:
    """Indices of a seeded subset in which each label has about ``per_label`` images
    (at least that many where the data has them; an image counts for all its labels),
    and at most ``per_label`` images with no label."""
    gen = np.random.default_rng(seed)
    y = targets.detach().cpu().numpy() > 0.5
    order = gen.permutation(len(y))
    have = np.zeros(y.shape[1], dtype=np.int64)
    keep: set[int] = set()
    # rarest labels first, so that common ones do not fill the subset on their own
    rarity = np.argsort(y.sum(0), kind="stable")
    for label in rarity:
        for i in order[y[order, label]]:
            if have[label] >= per_label:
                break
            if int(i) in keep:
                continue
            keep.add(int(i))
            have += y[i]
    keep.update(int(i) for i in order[~y[order].any(1)][:per_label])
    return torch.sort(torch.tensor(sorted(keep), dtype=torch.long))[0]
