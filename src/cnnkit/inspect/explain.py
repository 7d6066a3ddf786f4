"""``explain``: one image through a trained or pretrained model, as pictures.

Writes ``gradcam.png`` (where the model looks for the top or a chosen class),
``feature_maps_N_<layer>.png`` (what chosen layers pass on) and ``filters.png`` (the
first layer's learned kernels) into one folder.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.base.errors import CnnkitError
from cnnkit.data.decode import CorruptImageError
from cnnkit.inspect.figures import plot_feature_maps, plot_filters, plot_gradcam, to_display
from cnnkit.inspect.gradcam import (
    default_feature_layers,
    feature_maps,
    first_conv,
    grad_cam,
)


@dataclass(frozen=True)
class Explanation:
    class_name: str
    probability: float
    top: list[tuple[str, float]]
    cam: np.ndarray  # (H, W) in 0..1 at the model's input size
    layer: str
    files: list[Path]


def class_index(classes: tuple[str, ...], name: str, noun: str = "class") -> int:
    """A class by name (any case), by its number, or by one of its comma-separated names
    (``noun``: what the model calls its classes, for the error)."""
    if name.strip() in classes:  # exactly as named first: 'coat' and 'Coat' may both exist
        return classes.index(name.strip())
    lowered = [c.lower() for c in classes]
    key = name.strip().lower()
    if key in lowered:
        return lowered.index(key)
    if key.isdigit() and int(key) < len(classes):
        return int(key)
    synonyms = [i for i, c in enumerate(lowered) if key in (s.strip() for s in c.split(","))]
    if len(synonyms) == 1:
        return synonyms[0]
    close = difflib.get_close_matches(key, lowered, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(classes[lowered.index(c)]) for c in close)}?" \
        if close else ""
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    plural = "classes" if noun == "class" else f"{noun}s"
    raise CnnkitError(f"No {noun} {name!r} in this model.{hint} Its {plural}: {shown}")


def _file_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "layer"


def explain(predictor: Any, image: str | os.PathLike | Any, out_dir: str | os.PathLike, *,
            class_name: str | None = None, layers: list[str] | None = None,
            cam_layer: str | None = None, top_k: int = 5) -> Explanation:
    """Grad-CAM, feature maps and first-layer filters of ``predictor`` (a
    :class:`cnnkit.runtime.predict.Classifier`) on one ``image``, written as PNGs to ``out_dir``."""
    model, card, device = predictor.model, predictor.card, predictor.device
    pre = card.preprocess
    try:
        x = predictor.transform([image]).to(device)
    except CorruptImageError as exc:
        raise CnnkitError(str(exc)) from None
    except FileNotFoundError:
        raise CnnkitError(f"Image not found: {image}.") from None
    noun = "label" if card.task.name == "multi-label" else "class"
    target = None if class_name is None else class_index(card.classes, class_name, noun)
    # each label's own probability for a multi-label model (a sigmoid), else the softmax
    cam = grad_cam(model, x, target, layer=cam_layer,
                   to_probs=lambda z: card.task.scores(z).exp())
    probs = cam.probs[0]
    k = max(1, min(top_k, len(card.classes)))
    order = np.argsort(-probs)[:k]
    top = [(card.classes[i], float(probs[i])) for i in order]
    chosen = int(cam.classes[0])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    img = to_display(x[0], pre.mean, pre.std)
    files = [plot_gradcam(img, cam.cams[0], card.classes[chosen], float(probs[chosen]), top,
                          cam.layer, cam.layer_shape, out / "gradcam.png",
                          source=str(image) if isinstance(image, (str, os.PathLike)) else "",
                          noun=noun)]
    names = layers or default_feature_layers(model, x)
    maps = feature_maps(model, x, names)
    modules = dict(model.named_modules())
    for i, name in enumerate(names, 1):
        files.append(plot_feature_maps(maps[name], name, type(modules[name]).__name__, img,
                                       out / f"feature_maps_{i}_{_file_part(name)}.png"))
    conv_name, conv = first_conv(model)
    files.append(plot_filters(conv.weight.detach().float().cpu().numpy(), conv_name,
                              out / "filters.png"))
    return Explanation(card.classes[chosen], float(probs[chosen]), top, cam.cams[0], cam.layer,
                       files)
