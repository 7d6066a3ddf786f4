"""The model card ``cnnkit export`` writes beside its files (``<name>.card.json`` and
``<name>.card.md``): what the model was trained on, what it answers, how well (measured
through the exported file on the run's held-out test split), how sure it is when right
and wrong, the input recipe, what it is for and where it fails, and each runtime's
parity with torch."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit._version import __version__
from cnnkit.artifacts.modelcard import ModelCard
from cnnkit.artifacts.rundir import RunDir
from cnnkit.base.atomic import write_json, write_text
from cnnkit.data.imageset import ImageSet
from cnnkit.export.parity import Parity
from cnnkit.export.quantize import Comparison
from cnnkit.tasks.metrics import compute
from cnnkit.tasks.single_label import SingleLabel
from cnnkit.tasks.threshold import reliability

FORMAT = "cnnkit-model-card"
FORMAT_VERSION = 1
Z95 = 1.959964  # the normal quantile of a two-sided 95% interval
SINGLE_LABEL = SingleLabel.name


@dataclass(frozen=True)
class CardPaths:
    json: Path
    markdown: Path


def card_paths(model_file: Path) -> CardPaths:
    """``model.onnx`` -> ``model.card.json`` and ``model.card.md`` beside it."""
    stem = model_file.name[: -len(".onnx")] if model_file.name.endswith(".onnx") \
        else model_file.stem
    return CardPaths(model_file.with_name(stem + ".card.json"),
                     model_file.with_name(stem + ".card.md"))


def wilson(successes: int, n: int) -> tuple[float, float]:
    """The Wilson score 95% interval of a proportion (sound for small ``n`` and near 0/1)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + Z95 ** 2 / n
    centre = (p + Z95 ** 2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def test_split_sha256(test: ImageSet) -> str:
    """The sha256 of the test split as the model saw it: decoded pixels, then labels."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(test.images.numpy()).tobytes())
    h.update(np.ascontiguousarray(test.labels.numpy()).astype("<i8").tobytes())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def measure(probs: np.ndarray, test: ImageSet) -> dict[str, Any]:
    """Test-split metrics and calibration of the exported file's probabilities."""
    result = compute(torch.from_numpy(np.log(np.clip(probs, 1e-12, None))), test.labels,
                     test.classes)
    right = round(result.accuracy * result.n)
    conf = probs.max(1)
    ok = result.predicted == result.labels
    rel = reliability(conf, ok)
    return {
        "test_images": result.n,
        "accuracy": result.accuracy,
        "accuracy_95ci": list(wilson(right, result.n)),
        "top_k_accuracy": {str(k): v for k, v in result.top_k.items()},
        "macro_f1": result.macro["f1"],
        "per_class": result.per_class,
        "calibration": {
            "expected_calibration_error": rel.ece, "bins": len(rel.counts),
            "mean_confidence": float(conf.mean()),
            "mean_confidence_right": float(conf[ok].mean()) if ok.any() else None,
            "mean_confidence_wrong": float(conf[~ok].mean()) if (~ok).any() else None,
        },
    }


def measure_multilabel(probs: np.ndarray, test: ImageSet, task: dict[str, Any]
                       ) -> dict[str, Any]:
    """A multi-label file's test-split metrics at its card's thresholds."""
    from cnnkit.tasks.multilabel_metrics import compute_multilabel

    r = compute_multilabel(probs, test.labels.numpy(), test.classes,
                           task.get("thresholds") or 0.5)
    return {"test_images": r.n, "mAP": r.map_macro, "mAP_micro": r.map_micro,
            "exact_match": r.exact_match, "hamming_loss": r.hamming_loss,
            "micro_f1": r.micro["f1"], "unlabelled": r.unlabelled,
            "per_label": [{k: row[k] for k in ("label", "threshold", "precision", "recall",
                                               "f1", "ap", "support")}
                          for row in r.per_label]}


def build(card: ModelCard, model: str, files: list[Path], parities: list[Parity],
          run: RunDir | None, test: ImageSet | None, probs: np.ndarray | None,
          comparison: Comparison | None) -> dict[str, Any]:
    """The card as a dict (what ``<name>.card.json`` holds)."""
    pre = card.preprocess
    config = run.read_config() if run is not None else {}
    data: dict[str, Any] = {"source": config.get("data") or _pretrained_data(card),
                            "mode": config.get("mode") or card.info.get("mode")}
    split_file = run.split_path if run is not None else None
    if split_file is not None and split_file.is_file():
        data["split_record"] = {"file": split_file.name, "sha256": file_sha256(split_file)}
    metrics = None
    multi = card.task.name == "multi-label"
    if test is not None and probs is not None and test.labels.ndim == 1 \
            and card.task.name == SINGLE_LABEL:
        data["test_split"] = {"images": len(test), "sha256": test_split_sha256(test),
                              "hashed": "decoded uint8 pixels, then int64 labels"}
        metrics = {"measured_with": files[0].name, **measure(probs, test)}
    elif multi and test is not None and probs is not None and test.labels.ndim == 2:
        data["test_split"] = {"images": len(test), "sha256": test_split_sha256(test),
                              "hashed": "decoded uint8 pixels, then the label sets as int64"}
        metrics = {"measured_with": files[0].name,
                   **measure_multilabel(probs, test, card.task.card_fields())}
    out: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "cnnkit_version": __version__,
        "model": {"name": run.root.name if run is not None else model,
                  "architecture": card.architecture.name,
                  "weights_sha256": card.sha256 or None},
        "files": [{"file": f.name, "bytes": f.stat().st_size, "sha256": file_sha256(f),
                   "runtime": "executorch" if f.suffix == ".pte" else "onnxruntime",
                   "precision": "int8" if f.name.endswith(".int8.onnx") else "float"}
                  for f in files],
        "data": data,
        "task": card.task.name,
        "classes": list(card.classes),
        "input": {"size": pre.img_size, "channels": pre.channels,
                  "resize_shorter_side_to": round(pre.img_size / pre.crop_pct),
                  "crop": "centre", "interpolation": pre.interpolation,
                  **({"colour": "grey (luma), repeated into each channel"} if pre.grey else {}),
                  "mean": list(pre.mean), "std": list(pre.std), "scale": "pixels / 255",
                  "layout": "NCHW float32, input name 'input', output logits"},
        # how the outputs become answers (a consumer of the file alone needs this)
        "output": ("a sigmoid of each logit is that label's probability; a label is "
                   "answered at or above its threshold" if multi else _softmax(card.task)),
        **({"thresholds": dict(zip(card.classes, card.task.card_fields().get(
            "thresholds") or [0.5] * len(card.classes)))} if multi else {}),
        "metrics": metrics,
        "int8": None if comparison is None else {
            "test_images": comparison.images, "figure": comparison.figure,
            "float_accuracy": comparison.float_accuracy,
            "int8_accuracy": comparison.int8_accuracy,
            "points": (comparison.int8_accuracy - comparison.float_accuracy) * 100,
            "speedup": comparison.speedup,
            **({"float_unknown": comparison.float_unknown,
                "int8_unknown": comparison.int8_unknown}
               if comparison.int8_unknown is not None else {})},
        "parity": [p.to_dict() for p in parities],
    }
    out["intended_use"] = _intended_use(out)
    out["limits"] = _limits(out, test)
    return out


def _pretrained_data(card: ModelCard) -> str:
    return str(card.info.get("data") or "the weights' own training set (ImageNet-1k "
               "classes for a pretrained name)")


def _intended_use(card: dict[str, Any]) -> str:
    classes = card["classes"]
    shown = ", ".join(classes[:12]) + (f" and {len(classes) - 12} more" if len(classes) > 12
                                       else "")
    if card.get("task", SINGLE_LABEL) != SINGLE_LABEL:
        return (f"Tagging images like those of {card['data']['source']} with any of "
                f"{len(classes)} classes ({shown}), a probability for each ({card['task']}).")
    return (f"Sorting images like those of {card['data']['source']} into one of "
            f"{len(classes)} classes ({shown}). It answers one of these classes for any "
            "image; use a threshold on the top probability (`--threshold`) where an image "
            "may show none of them.")


def _limits(card: dict[str, Any], test: ImageSet | None) -> list[str]:
    limits = [f"Input is resized to {card['input']['resize_shorter_side_to']} px on the "
              f"shorter side and centre-cropped to {card['input']['size']} px: detail "
              "outside the centre, or smaller than a few pixels at that size, is lost."]
    m = card["metrics"]
    if m is not None and "mAP" in m:
        limits.append(f"mAP {m['mAP']:.4f} and exact match {m['exact_match']:.2%} were "
                      f"measured on {m['test_images']:,} held-out images from the same "
                      "source; images from elsewhere may score lower. The thresholds were "
                      "chosen for each label's F1 on the validation split.")
        weak = sorted((r for r in m["per_label"] if r["ap"] is not None),
                      key=lambda r: r["ap"])[:3]
        if weak:
            limits.append("Weakest labels on the test split: " + ", ".join(
                f"{r['label']} (AP {r['ap']:.2f})" for r in weak) + ".")
        return limits
    if m is None:
        limits.append("Not measured: " + ("the run has no held-out test split." if
                                          card["data"].get("mode") else
                                          "a pretrained model without a test split here.")
                      + " Evaluate it on your own labelled images (`cnnkit evaluate`) "
                      "before relying on it.")
        if test is not None and test.labels.ndim == 2:
            limits[-1] = ("Multi-label test split: its metrics are not in this card; see "
                          "`cnnkit evaluate`.")
        return limits
    lo, hi = m["accuracy_95ci"]
    limits.append(f"Accuracy {m['accuracy']:.2%} was measured on {m['test_images']:,} "
                  f"held-out images from the same source (95% interval {lo:.1%}-{hi:.1%}); "
                  "images from elsewhere (other cameras, lighting, backgrounds) may score "
                  "lower.")
    weak = sorted((c for c in m["per_class"] if c["support"]), key=lambda c: c["recall"])
    if weak and weak[0]["recall"] < m["accuracy"]:
        names = ", ".join(f"{c['class']} ({c['recall']:.0%} recall)" for c in weak[:3]
                          if c["recall"] < m["accuracy"])
        limits.append(f"Weakest classes on the test split: {names}.")
    small = [c["class"] for c in m["per_class"] if c["support"] < 30]
    if small:
        limits.append(f"{len(small)} of {len(m['per_class'])} classes have fewer than 30 "
                      "test images: their figures are rough.")
    ece = m["calibration"]["expected_calibration_error"]
    if ece > 0.05:
        limits.append(f"Probabilities are not calibrated (expected calibration error "
                      f"{ece:.3f}): read them as a ranking, not as a chance of being right.")
    return limits


def keep_other_files(card: dict[str, Any], paths: CardPaths) -> dict[str, Any]:
    """``card`` with the files (and their parity) of the card already at ``paths`` that
    another export of the same weights wrote (``model.onnx`` then ``model.pte``), as
    long as each is still there unchanged; one card describes every runtime."""

    try:
        old = json.loads(paths.json.read_text())
        same = old.get("format") == FORMAT and old["model"]["weights_sha256"] == \
            card["model"]["weights_sha256"] is not None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return card
    if not same:
        return card
    names = {f["file"] for f in card["files"]}
    kept = []
    for f in old.get("files", []):
        path = paths.json.parent / str(f.get("file"))
        if f.get("file") not in names and path.is_file() and file_sha256(path) == f.get("sha256"):
            kept.append(f)
    kept_names = {f["file"] for f in kept}
    return {**card, "files": card["files"] + kept,
            "parity": card["parity"] + [p for p in old.get("parity", [])
                                        if p.get("file") in kept_names]}


def write(card: dict[str, Any], paths: CardPaths) -> CardPaths:
    """Write the card as JSON and as Markdown (each atomically)."""
    card = keep_other_files(card, paths)
    write_json(paths.json, card)
    write_text(paths.markdown, markdown(card))
    return paths


def markdown(card: dict[str, Any]) -> str:
    """The card for people: the same facts as the JSON."""
    model, data, pre, m = card["model"], card["data"], card["input"], card["metrics"]
    lines = [f"# Model card: {model['name']}", "",
             f"{model['architecture']} image classifier, {len(card['classes'])} classes; "
             f"written by cnnkit {card['cnnkit_version']} (`cnnkit export`).", "",
             "## Intended use", "", card["intended_use"], "", "## Files", "",
             "file | runtime | precision | bytes | sha256", "--- | --- | --- | --- | ---"]
    lines += [f"{f['file']} | {f.get('runtime', 'onnxruntime')} | {f['precision']} | "
              f"{f['bytes']:,} | `{f['sha256']}`"
              for f in card["files"]]
    lines += ["", "## Data", "", f"- source: {data['source']}"]
    if data.get("mode"):
        lines.append(f"- training mode: {data['mode']}")
    if model.get("weights_sha256"):
        lines.append(f"- weights sha256: `{model['weights_sha256']}`")
    if "split_record" in data:
        lines.append(f"- split record: {data['split_record']['file']} (sha256 "
                     f"`{data['split_record']['sha256']}`)")
    if "test_split" in data:
        t = data["test_split"]
        lines.append(f"- test split: {t['images']:,} images, sha256 `{t['sha256']}` "
                     f"({t['hashed']})")
    lines += ["", "## Classes", "", ", ".join(f"`{c}`" for c in card["classes"]), "",
              "## Input", "",
              f"{_channels(pre)}; "
              f"resize the shorter side to "
              f"{pre['resize_shorter_side_to']} px ({pre['interpolation']}), centre-crop "
              f"{pre['size']} x {pre['size']}, {pre['scale']}, subtract mean {pre['mean']}, "
              f"divide by std {pre['std']}; {pre['layout']} "
              f"({card.get('output', 'softmax gives probabilities')}).", ""]
    if "thresholds" in card:
        lines += ["## Thresholds", "", "label | threshold", "--- | ---"]
        lines += [f"{c} | {t:.4f}" for c, t in card["thresholds"].items()] + [""]
    lines += ["## Metrics on the test split", ""]
    if m is None:
        lines.append("Not measured (see the limits below).")
    elif "mAP" in m:
        lines += [f"Measured with {m['measured_with']} on {m['test_images']:,} held-out "
                  f"images: mAP **{m['mAP']:.4f}** (micro {m['mAP_micro']:.4f}), exact match "
                  f"{m['exact_match']:.2%}, Hamming loss {m['hamming_loss']:.4f}, micro F1 "
                  f"{m['micro_f1']:.3f}.", "",
                  "label | threshold | precision | recall | F1 | AP | test images",
                  "--- | --- | --- | --- | --- | --- | ---"]
        lines += [f"{r['label']} | {r['threshold']:.3f} | {r['precision']:.3f} | "
                  f"{r['recall']:.3f} | {r['f1']:.3f} | "
                  f"{'-' if r['ap'] is None else format(r['ap'], '.3f')} | {r['support']}"
                  for r in m["per_label"]]
    else:
        lo, hi = m["accuracy_95ci"]
        top = ", ".join(f"top-{k} {v:.2%}" for k, v in m["top_k_accuracy"].items() if k != "1")
        lines += [f"Measured with {m['measured_with']} on {m['test_images']:,} held-out "
                  f"images: accuracy **{m['accuracy']:.2%}** (95% interval {lo:.2%}-"
                  f"{hi:.2%}){', ' + top if top else ''}, macro F1 {m['macro_f1']:.3f}.", "",
                  "class | precision | recall | F1 | test images", "--- | --- | --- | --- | ---"]
        lines += [f"{c['class']} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | "
                  f"{c['support']}" for c in m["per_class"]]
        cal = m["calibration"]
        right, wrong = cal["mean_confidence_right"], cal["mean_confidence_wrong"]
        lines += ["", "## Calibration", "",
                  f"Expected calibration error {cal['expected_calibration_error']:.3f} "
                  f"({cal['bins']} bins); mean top probability {cal['mean_confidence']:.3f}"
                  + (f", {right:.3f} when right" if right is not None else "")
                  + (f", {wrong:.3f} when wrong" if wrong is not None else "") + "."]
    if card["int8"] is not None:
        q = card["int8"]
        lines += ["", "## int8", "",
                  f"On the whole test split ({q['test_images']:,} images), "
                  f"{q.get('figure', 'accuracy')}: float "
                  f"{q['float_accuracy']:.2%}, int8 {q['int8_accuracy']:.2%} "
                  f"({q['points']:+.2f} points), {q['speedup']:.2f}x the float file's speed."
                  + (f" Answered 'unknown', each file by its own rule: float "
                     f"{q['float_unknown']:.1%}, int8 {q['int8_unknown']:.1%} of the test "
                     "images."
                     if q.get("int8_unknown") is not None else "")]
    lines += ["", "## Parity with PyTorch", "",
              "runtime | file | images | largest probability difference | same answers | "
              "top-1 agreement", "--- | --- | --- | --- | --- | ---"]
    lines += [f"{p['runtime']} | {p['file']} | {p['images']} ({p['where']}) | "
              f"{p['max_prob_diff']:.1e} | "
              + (f"{p['answer_agreement']:.1%}" if p.get("answer_agreement") is not None
                 else "-")
              + f" | {p['top1_agreement']:.1%}" for p in card["parity"]]
    lines += ["", "## Known limits", ""] + [f"- {x}" for x in card["limits"]] + [""]
    return "\n".join(lines)


def _softmax(task: Any) -> str:
    """How a single-label file's logits become its probabilities: at the calibrated
    temperature where the run fitted one (the logits' own softmax answers otherwise)."""
    t = getattr(task, "temperature", 1.0)
    if t == 1.0:
        return "softmax gives probabilities"
    return f"softmax of the logits divided by the temperature {t:.6g} gives probabilities"


def _channels(pre: dict[str, Any]) -> str:
    if "colour" in pre:
        return f"{pre['channels']} channels, each the image's grey (luma)"
    return "3 channels (RGB)" if pre["channels"] == 3 else "1 channel (grey)"
