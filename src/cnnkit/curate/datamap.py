"""A map of the data: the images' codes drawn in 2-D by UMAP, coloured by label, with
suspected label errors, outliers and near-duplicates marked.

The HTML page is one self-contained file (points, thumbnails and script inline): hover
a point to see its image, name, label and why it is marked. Outliers are the images
scikit-learn's ``LocalOutlierFactor`` finds far from their neighbours in code space
(the codes, not the 2-D layout, which stretches distances).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnkit.base import log
from cnnkit.curate.codes import Coded

MAX_POINTS = 5000  # points on the page (a seeded sample beyond that)
THUMB = 64


@dataclass
class DataMap:
    xy: np.ndarray  # (N, 2)
    suspects: dict[int, str] = field(default_factory=dict)  # index -> "given -> likely"
    outliers: set[int] = field(default_factory=set)
    pairs: list[tuple[int, int]] = field(default_factory=list)  # near-duplicates
    notes: list[str] = field(default_factory=list)
    labels_judged: bool = True  # False: no label could be called wrong (see notes)


def layout(codes: np.ndarray, seed: int = 0) -> np.ndarray:
    """UMAP's 2-D layout of the codes (a line or a point for 1-3 images)."""
    n = len(codes)
    if n < 4:
        return np.stack([np.arange(n, dtype=np.float32), np.zeros(n, np.float32)], 1)
    import warnings

    import umap

    threads = torch.get_num_threads()  # numba's OpenMP layer resets torch's (shared)
    try:
        with warnings.catch_warnings():  # "n_jobs overridden by setting random_state"
            warnings.simplefilter("ignore", UserWarning)
            reducer = umap.UMAP(n_neighbors=min(15, n - 1), min_dist=0.1, random_state=seed,
                                init="spectral" if n > 16 else "random")
            return reducer.fit_transform(codes).astype(np.float32)
    finally:
        torch.set_num_threads(threads)


def outliers(codes: np.ndarray) -> set[int]:
    """Images far from their neighbours (LocalOutlierFactor, its own threshold)."""
    if len(codes) < 10:
        return set()
    from sklearn.neighbors import LocalOutlierFactor

    lof = LocalOutlierFactor(n_neighbors=min(20, len(codes) - 1))
    return set(np.flatnonzero(lof.fit_predict(codes) == -1).tolist())


def build_map(coded: Coded, seed: int = 0) -> DataMap:
    """The layout and the marks: probably wrong labels, outliers and near-duplicates."""
    from cnnkit.base.errors import CnnkitError
    from cnnkit.curate.labels import FOLDS, find_wrong_labels
    from cnnkit.curate.near import near_duplicates

    m = DataMap(layout(coded.codes, seed))
    # as many folds as the smallest class allows (from 2): a class of 3 images still
    # leaves the others judged, where check --labels asks for --folds
    counts = np.bincount(coded.labels, minlength=len(coded.classes))
    single = [c for c, n in zip(coded.classes, counts) if n < 2]
    try:
        if single:  # said here: the folds' message names check's --folds, not this tool's
            raise CnnkitError(f"class(es) {', '.join(map(repr, single))} have fewer than 2 "
                              "images; every class needs 2 or more for its labels to be "
                              "judged")
        check = find_wrong_labels(coded, folds=min(FOLDS, int(counts.min())))
        m.suspects = {i.index: f"{i.given} -> {i.likely}?" for i in check.wrong}
        if check.unreliable:
            m.labels_judged = False
            m.notes.append(f"label errors not marked: {check.unreliable}")
    except CnnkitError as exc:
        m.labels_judged = False
        m.notes.append(f"label errors not marked: {exc}")
    m.outliers = outliers(coded.codes)
    m.pairs = [(p.a, p.b) for p in near_duplicates(coded)]
    return m


def _thumb(image: torch.Tensor) -> str:
    from PIL import Image

    from cnnkit.curate.sheet import thumbnail

    buf = io.BytesIO()
    Image.fromarray(thumbnail(image, THUMB)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf"]


def _colour(k: int) -> str:
    if k < len(PALETTE):
        return PALETTE[k]
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((k * 0.618) % 1, 0.65, 0.85)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def write_png(m: DataMap, coded: Coded, path: str | os.PathLike) -> Path:
    """A static picture of the map (matplotlib)."""
    from cnnkit.inspect.figures import new_figure, save

    fig = new_figure(8, 7)
    ax = fig.subplots()
    for k, name in enumerate(coded.classes):
        sel = coded.labels == k
        ax.scatter(m.xy[sel, 0], m.xy[sel, 1], s=6, c=_colour(k), label=name, alpha=0.8,
                   linewidths=0)
    for a, b in m.pairs:
        ax.plot(m.xy[[a, b], 0], m.xy[[a, b], 1], c="black", lw=0.8)
    if m.suspects:
        idx = list(m.suspects)
        ax.scatter(m.xy[idx, 0], m.xy[idx, 1], s=40, facecolors="none", edgecolors="red",
                   linewidths=1.2, label="probably wrong label")
    if m.outliers:
        idx = sorted(m.outliers)
        ax.scatter(m.xy[idx, 0], m.xy[idx, 1], s=30, c="black", marker="x",
                   linewidths=0.8, label="outlier")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{len(coded):,} images by {coded.by} (UMAP)")
    ax.legend(loc="best", fontsize=7, markerscale=2)
    return save(fig, path)


def write_html(m: DataMap, coded: Coded, path: str | os.PathLike, title: str) -> Path:
    """The interactive page: points coloured by label, marks, thumbnail on hover."""
    from cnnkit.base.atomic import atomic_path

    n = len(coded)
    shown = np.arange(n)
    if n > MAX_POINTS:
        rng = np.random.default_rng(0)
        keep = set(rng.choice(n, MAX_POINTS, replace=False).tolist())
        keep |= set(m.suspects) | m.outliers | {i for p in m.pairs for i in p}
        shown = np.array(sorted(keep))
        m.notes.append(f"{len(shown):,} of {n:,} images shown (a seeded sample, every marked "
                       "image kept)")
    slot = {int(i): k for k, i in enumerate(shown)}
    points = []
    for i in shown.tolist():
        marks = []
        if i in m.suspects:
            marks.append("probably wrong label: " + m.suspects[i])
        if i in m.outliers:
            marks.append("outlier")
        points.append([round(float(m.xy[i, 0]), 4), round(float(m.xy[i, 1]), 4),
                       int(coded.labels[i]), coded.names[i], coded.splits[i],
                       _thumb(coded.images[i]), marks])
    data = {"points": points, "classes": list(coded.classes),
            "colours": [_colour(k) for k in range(len(coded.classes))],
            "pairs": [[slot[a], slot[b]] for a, b in m.pairs if a in slot and b in slot]}
    wrong = (f"{len(m.suspects)} probably wrong label(s) (red ring)" if m.labels_judged
             else "labels not judged (see the note)")
    counts = (f"{len(coded):,} images, {len(coded.classes)} classes; {wrong}, "
              f"{len(m.outliers)} outlier(s) (black cross), {len(m.pairs)} near-duplicate "
              "pair(s) (joined)")
    notes = "".join(f"<p class=note>{html.escape(t)}</p>" for t in m.notes)
    page = PAGE.replace("$TITLE", html.escape(title)).replace("$COUNTS", html.escape(counts))
    page = page.replace("$NOTES", notes).replace("$BY", html.escape(coded.by))
    page = page.replace("$DATA", json.dumps(data).replace("</", "<\\/"))
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info(f"map: {target} ({counts})")
    for note in m.notes:
        log.info(f"note: {note}")
    return target


PAGE = """<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8><title>$TITLE</title>
<style>
body{font:14px system-ui,sans-serif;margin:16px;color:#222}
#wrap{position:relative;display:inline-block}
canvas{border:1px solid #ccc;cursor:crosshair}
#tip{position:absolute;pointer-events:none;background:#fff;border:1px solid #888;
padding:4px;font-size:12px;display:none;max-width:220px;box-shadow:0 2px 6px #0003}
#tip img{display:block;width:96px;height:96px;image-rendering:pixelated}
.legend span{display:inline-block;margin-right:12px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:5px;margin-right:4px}
.note{color:#666}
</style></head><body>
<h1>$TITLE</h1>
<p>$COUNTS. Codes: $BY, laid out in 2-D by UMAP. Hover a point to see its image.</p>
$NOTES
<div class=legend id=legend></div>
<div id=wrap><canvas id=map width=900 height=700></canvas><div id=tip></div></div>
<script id=data type="application/json">$DATA</script>
<script>
const D = JSON.parse(document.getElementById('data').textContent);
const cv = document.getElementById('map'), ctx = cv.getContext('2d');
const tip = document.getElementById('tip');
const P = D.points, pad = 20;
const xs = P.map(p => p[0]), ys = P.map(p => p[1]);
const x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
const sx = v => pad + (v - x0) / ((x1 - x0) || 1) * (cv.width - 2 * pad);
const sy = v => cv.height - pad - (v - y0) / ((y1 - y0) || 1) * (cv.height - 2 * pad);
const pos = P.map(p => [sx(p[0]), sy(p[1])]);
document.getElementById('legend').innerHTML = D.classes.map((c, k) =>
  `<span><i style="background:${D.colours[k]}"></i>${c.replace(/</g, '&lt;')}</span>`).join('');
function draw() {
  ctx.clearRect(0, 0, cv.width, cv.height);
  ctx.strokeStyle = '#000'; ctx.lineWidth = 1;
  for (const [a, b] of D.pairs) {
    ctx.beginPath(); ctx.moveTo(...pos[a]); ctx.lineTo(...pos[b]); ctx.stroke();
  }
  P.forEach((p, i) => {
    ctx.fillStyle = D.colours[p[2]];
    ctx.beginPath(); ctx.arc(pos[i][0], pos[i][1], 3, 0, 7); ctx.fill();
  });
  P.forEach((p, i) => {
    for (const m of p[6]) {
      const [x, y] = pos[i];
      if (m === 'outlier') {
        ctx.strokeStyle = '#000'; ctx.beginPath();
        ctx.moveTo(x - 4, y - 4); ctx.lineTo(x + 4, y + 4);
        ctx.moveTo(x + 4, y - 4); ctx.lineTo(x - 4, y + 4); ctx.stroke();
      } else {
        ctx.strokeStyle = '#e00'; ctx.lineWidth = 2; ctx.beginPath();
        ctx.arc(x, y, 7, 0, 7); ctx.stroke(); ctx.lineWidth = 1;
      }
    }
  });
}
draw();
const esc = s => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');
cv.addEventListener('mousemove', e => {
  const r = cv.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
  let best = -1, bd = 64;
  pos.forEach(([x, y], i) => {
    const d = (x - mx) ** 2 + (y - my) ** 2;
    if (d < bd) { bd = d; best = i; }
  });
  if (best < 0) { tip.style.display = 'none'; return; }
  const p = P[best];
  tip.innerHTML = `<img src="${p[5]}" alt=""><b>${esc(D.classes[p[2]])}</b> (${esc(p[4])})<br>` +
    `${esc(p[3])}` + p[6].map(m => `<br><span style="color:#c00">${esc(m)}</span>`).join('');
  tip.style.left = (pos[best][0] + 12) + 'px'; tip.style.top = (pos[best][1] + 12) + 'px';
  tip.style.display = 'block'; tip.dataset.index = best;
});
cv.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
</script></body></html>
"""
