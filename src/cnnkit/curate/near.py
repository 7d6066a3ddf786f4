"""Near-duplicates: resized, re-encoded, slightly cropped or brightened copies of one
picture, within a class, under two labels or across splits.

Two stages. The codes propose: each image's ``NEIGHBOURS`` nearest by cosine similarity,
from ``PROPOSE`` up. They cannot decide alone: a pretrained network's codes are made to
be the same for two different pullovers, and were (0.978) where a cropped copy scored
0.82. The pixels decide: a copy keeps the picture's fine detail, two look-alike items do
not. Each candidate pair's *detail match* is the correlation of the images' high-pass
detail (the grey image minus its Gaussian blur, at 32 x 32), the best over a few centre
crops of either image (a cropped copy is a zoomed one); brightness and contrast cancel.
Pairs from ``MATCH`` up are reported. Files with identical bytes are left to the audit's
exact-copy check. The figures behind these values are in docs/design-notes.md.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.curate.codes import Coded

NEIGHBOURS = 5
PROPOSE = 0.8  # cosine similarity of the codes from which a neighbour is a candidate
MATCH = 0.9  # detail match from which a candidate pair is a near-duplicate
SIDE = 32  # the detail is compared at this side
SIGMA = 1.0  # blur of the detail's high-pass, pixels at SIDE
SCALES = (1.0, 0.93, 0.86, 0.8)  # centre crops tried (a share of the side)
SMOOTH = 0.02  # detail under this share of the pixels' spread: compared by the pixels
BLOCK = 1024  # rows of the similarity matrix at once


@dataclass(frozen=True)
class NearPair:
    a: int
    b: int
    similarity: float  # of the codes
    match: float  # of the detail

    def to_dict(self, coded: Coded) -> dict[str, Any]:
        return {"a": coded.names[self.a], "b": coded.names[self.b],
                "label_a": coded.classes[coded.labels[self.a]],
                "label_b": coded.classes[coded.labels[self.b]],
                "split_a": coded.splits[self.a], "split_b": coded.splits[self.b],
                "similarity": round(self.similarity, 4), "match": round(self.match, 4)}


def candidates(codes: np.ndarray, k: int = NEIGHBOURS, floor: float = PROPOSE
               ) -> dict[tuple[int, int], float]:
    """Pairs ``(i, j)``, ``i < j``, where one is among the other's ``k`` nearest codes
    with a cosine similarity of at least ``floor``; with that similarity."""
    out: dict[tuple[int, int], float] = {}
    n = len(codes)
    k = min(k, n - 1)
    if k < 1:
        return out
    for start in range(0, n, BLOCK):
        sims = codes[start:start + BLOCK] @ codes.T
        rows = np.arange(len(sims))
        sims[rows, start + rows] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for r, js in enumerate(top):
            i = start + r
            for j in js.tolist():
                s = float(sims[r, j])
                if s >= floor:
                    out[(min(i, j), max(i, j))] = s
    return out


def _grey(images: torch.Tensor) -> torch.Tensor:
    x = images.float()
    return x.mean(1, keepdim=True) if x.shape[1] != 1 else x


def _detail(images: torch.Tensor, scales: tuple[float, ...]) -> torch.Tensor:
    """Unit-length high-pass detail ``(N, len(scales), SIDE * SIDE)`` of each image's
    centre crops."""
    x = _grey(images)
    n = len(x)
    views = []
    for s in scales:
        theta = torch.tensor([[s, 0.0, 0.0], [0.0, s, 0.0]]).expand(n, 2, 3)
        grid = F.affine_grid(theta, [n, 1, SIDE, SIDE], align_corners=False)
        views.append(F.grid_sample(x, grid, mode="bilinear", padding_mode="border",
                                   align_corners=False))
    v = torch.stack(views, 1).reshape(-1, 1, SIDE, SIDE)
    radius = int(2 * SIGMA + 0.5)
    taps = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-taps ** 2 / (2 * SIGMA ** 2))
    g = g / g.sum()
    blur = F.conv2d(F.pad(v, (radius, radius, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    blur = F.conv2d(F.pad(blur, (0, 0, radius, radius), mode="replicate"),
                    g.view(1, 1, -1, 1))
    d = (v - blur).reshape(n, len(scales), -1)
    d = d - d.mean(-1, keepdim=True)
    plain = v.reshape(n, len(scales), -1)
    plain = plain - plain.mean(-1, keepdim=True)
    # An image with (almost) no detail, a flat colour or a smooth gradient, is compared
    # by its plain pixels instead.
    smooth = d.norm(dim=-1) < SMOOTH * plain.norm(dim=-1)
    d = torch.where(smooth[..., None], plain, d)
    return d / d.norm(dim=-1, keepdim=True).clamp(min=1e-6)


def detail_match(images_a: torch.Tensor, images_b: torch.Tensor) -> np.ndarray:
    """For each pair of images (uint8 ``(N, C, H, W)`` each), the best correlation of
    one's detail with the other's, over centre crops of either."""
    if not len(images_a):
        return np.empty(0)
    da, db = _detail(images_a, SCALES), _detail(images_b, SCALES)
    return _match(da, db).numpy()


def _match(da: torch.Tensor, db: torch.Tensor) -> torch.Tensor:
    """Pairs' detail match from their details (``SCALES[0]`` is the whole image)."""
    ab = torch.einsum("nsd,nd->ns", db.float(), da[:, 0].float()).amax(1)
    ba = torch.einsum("nsd,nd->ns", da.float(), db[:, 0].float()).amax(1)
    return torch.maximum(ab, ba)


def _same_bytes(a: str, b: str) -> bool:
    try:
        if os.path.getsize(a) != os.path.getsize(b):
            return False
        return _digest(a) == _digest(b)
    except OSError:
        return False


def _digest(path: str) -> str:
    return hashlib.blake2b(Path(path).read_bytes(), digest_size=16).hexdigest()


def near_duplicates(coded: Coded, match: float = MATCH) -> list[NearPair]:
    """Pairs of near-identical images, the closest first (identical files left out)."""
    cands = candidates(coded.codes)
    pairs = list(cands)
    used = sorted({i for p in pairs for i in p})
    slot = {i: k for k, i in enumerate(used)}
    # Each image's detail once (half precision: 8 KB an image), then every pair.
    details = torch.cat([_detail(coded.images[used[s:s + BLOCK]], SCALES).half()
                         for s in range(0, len(used), BLOCK)]) if used else torch.empty(0)
    scores: list[float] = []
    for start in range(0, len(pairs), BLOCK):
        chunk = pairs[start:start + BLOCK]
        ia = torch.tensor([slot[p[0]] for p in chunk])
        ib = torch.tensor([slot[p[1]] for p in chunk])
        scores += _match(details[ia], details[ib]).tolist()
    out = []
    for (i, j), m in zip(pairs, scores):
        if m < match:
            continue
        a, b = coded.names[i], coded.names[j]
        if os.path.isfile(a) and os.path.isfile(b) and _same_bytes(a, b):
            continue
        out.append(NearPair(i, j, cands[(i, j)], float(m)))
    return sorted(out, key=lambda p: -p.match)


SHEET_LIMIT = 32  # pairs on the contact sheet (all are in the CSV)


def write_near_files(pairs: list[NearPair], coded: Coded, out: str | os.PathLike
                     ) -> dict[str, Path]:
    """``near.csv`` (every pair) and the contact sheet ``near.png`` (pairs side by side)."""
    import csv

    from cnnkit.base.atomic import atomic_path
    from cnnkit.curate.sheet import contact_sheet

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / "near.csv", "sheet": folder / "near.png"}
    with atomic_path(paths["csv"]) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "label_a", "label_b", "split_a", "split_b", "similarity",
                    "match"])
        for p in pairs:
            d = p.to_dict(coded)
            w.writerow([d["a"], d["b"], d["label_a"], d["label_b"], d["split_a"],
                        d["split_b"], d["similarity"], d["match"]])
    shown = pairs[:SHEET_LIMIT]
    images, captions = [], []
    for r, p in enumerate(shown, 1):
        for k in (p.a, p.b):
            images.append(coded.images[k])
            captions.append([f"{r}. {Path(coded.names[k]).name}",
                             f"{coded.classes[coded.labels[k]]}, {coded.splits[k]}"])
    contact_sheet(images, captions, paths["sheet"], columns=8,
                  title=f"{len(pairs)} near-duplicate pair(s), side by side, closest first")
    return paths
