"""What a finished run got right and wrong, image by image: the studio's "Understand".

For the run's held-out images (its test split, else its validation split, as recorded
in split.json) this writes ``<run>/studio/understand.json``: each image's true and
predicted class with the probabilities, per-class precision and recall, the confusion
matrix (whose cells the page opens), and the top losses, each with a Grad-CAM picture
(``<run>/studio/cam-N.png``) of where the model looked for the class it chose. It runs
in the studio's worker process after training, or on demand for an older run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.artifacts.rundir import RunDir
from cnnkit.base.atomic import write_json
from cnnkit.base.errors import CnnkitError

FOLDER = "studio"
FILE = "understand.json"
TOP_LOSSES = 9
CAM_ALPHA = 0.45


def understand(run_dir: str | os.PathLike, project: str | os.PathLike,
               top: int = TOP_LOSSES) -> dict[str, Any]:
    """Analyse ``run_dir``'s held-out images; image paths are given relative to
    ``project`` (class, file) so that the page can show and relabel them."""
    from cnnkit.data.sources import load_files
    from cnnkit.inspect.report import top_losses
    from cnnkit.runtime.predict import Classifier

    run = RunDir(run_dir)
    clf = Classifier.load(run.root, "cpu", "torch")
    split = run.read_split()
    if split is None:
        raise CnnkitError(f"{run.root} has no split.json, so its held-out images are unknown.")
    part = "test" if split.get("test") else "val"
    rows = split.get(part) or []
    if not rows:
        raise CnnkitError(f"{run.root} held no images out (no test or validation split); "
                          "add images so that each class has at least 10.")
    names = split["classes"]
    kept = [(p, clf.classes.index(names[int(y)])) for p, y in rows if os.path.isfile(p)]
    out_dir = run.root / FOLDER
    out_dir.mkdir(exist_ok=True)
    report: dict[str, Any] = {"split": part, "classes": list(clf.classes),
                              "missing": len(rows) - len(kept), "images": [],
                              "top_losses": []}
    if not kept:
        write_json(out_dir / FILE, report)
        return report
    data = load_files([p for p, _ in kept], [y for _, y in kept], clf.classes,
                      clf.card.preprocess)
    result = clf.evaluate_set(data)
    root = Path(project).resolve()
    report.update(n=result.n, accuracy=result.accuracy, per_class=result.per_class,
                  confusion=result.confusion)
    for (path, label), pred, probs in zip(kept, result.predicted, result.probs):
        where = _in_project(path, root)
        report["images"].append({"class": where[0] if where else None,
                                 "image": where[1] if where else None,
                                 "path": path, "true": int(label), "predicted": int(pred),
                                 "probs": [round(float(p), 6) for p in probs]})
    for k, item in enumerate(top_losses(clf.model, clf.card, data, result, top)):
        name = f"cam-{k}.png"
        _overlay(item.image, item.cam).save(out_dir / name)
        entry = report["images"][item.index]
        report["top_losses"].append({"index": item.index, "class": entry["class"],
                                     "image": entry["image"], "true": item.true,
                                     "predicted": item.predicted, "p_true": item.p_true,
                                     "p_pred": item.p_pred, "loss": item.loss, "cam": name})
    write_json(out_dir / FILE, report)
    return report


def read(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """A run's understand.json, or None when it has not been written."""
    path = Path(run_dir) / FOLDER / FILE
    if not path.is_file():
        return None
    return RunDir(run_dir).read_json(path, "analyse the run again from the page")


def _in_project(path: str, root: Path) -> tuple[str, str] | None:
    try:
        rel = Path(os.path.abspath(path)).relative_to(root)
    except ValueError:
        return None
    parts = rel.parts
    return (parts[0], "/".join(parts[1:])) if len(parts) >= 2 else None


def _overlay(image: np.ndarray, cam: np.ndarray) -> Any:
    """The model's view of an image with its Grad-CAM on top (the report's colours)."""
    import matplotlib
    from PIL import Image

    from cnnkit.inspect.figures import HEAT

    img = np.clip(image, 0, 1)
    if img.ndim == 2 or img.shape[2] == 1:
        img = np.repeat(img.reshape(img.shape[0], img.shape[1], 1), 3, axis=2)
    heat = matplotlib.colormaps[HEAT](np.clip(cam, 0, 1))[:, :, :3]
    mixed = (1 - CAM_ALPHA) * img + CAM_ALPHA * heat
    return Image.fromarray((mixed * 255 + 0.5).astype(np.uint8))
