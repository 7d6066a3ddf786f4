"""The *features* mode: the frozen backbone as a feature extractor, a new head on its codes.

The backbone runs once over the data (its features are cached on disk, keyed by the
model, its weights, the preprocessing and the images, so a second run skips it), then
a linear head is fitted to the codes as a multinomial logistic regression with L2
(full-batch L-BFGS: deterministic and seconds on a CPU). The codes are the average and
the maximum of the last feature map side by side (timm's ``catavgmax`` pooling): on
Fashion-MNIST with 100 images per class that is about one point better than the
average alone. The head lands in the backbone's classifier, so the run's model file
predicts like any other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from cnnkit.artifacts.modelfile import ModelCard, save_model
from cnnkit.artifacts.rundir import RunDir
from cnnkit.base import log
from cnnkit.base.atomic import atomic_path, write_json
from cnnkit.base.paths import cache_dir
from cnnkit.data.imageset import ImageSet, take_per_class
from cnnkit.data.loader import BatchLoader
from cnnkit.data.pipeline import Preprocess
from cnnkit.runtime.backends import OnnxBackend
from cnnkit.runtime.inference import chunk_size
from cnnkit.tasks.base import Task
from cnnkit.training.events import BestModel, EpochEnded, Events, PhaseStarted, Working
from cnnkit.training.recipe import Plan

ROUND_ITERATIONS = 25  # L-BFGS iterations per reported "epoch"
C = 0.5  # inverse L2 strength, as scikit-learn's LogisticRegression(C=...)
SMALL_HEAD_VALUES = 1 << 22  # codes (images x features) a head fits on one thread


@torch.no_grad()  # not inference_mode: the head trains on these tensors
def extract(model: nn.Module, data: ImageSet, pre: Preprocess, device: torch.device, *,
            batch_size: int = 64, channels_last: bool = False, label: str = "features",
            events: Events | None = None, graph: OnnxBackend | None = None) -> torch.Tensor:
    """Pre-logits codes ``(N, D)`` of the frozen model, float32 on the CPU; ``events``
    hears how many images are done (:class:`Working` named ``label``); ``graph``: the
    model's codes graph on onnxruntime (:mod:`cnnkit.training.codes_onnx`) codes them
    in the model's place."""
    model.eval()
    if graph is not None:  # batches as the graph takes them, on its device
        batch_size = graph.batch_size(pre.img_size, max(batch_size, len(data)))
        device, channels_last = graph.device, False
    else:
        batch_size = chunk_size(device, pre.img_size, batch_size)
    loader = BatchLoader(data, pre, batch_size, device, channels_last=channels_last)
    events = events if events is not None else Events()
    start, done = time.perf_counter(), 0
    events.emit(Working(label, 0, len(data)))
    out = []
    with graph.preprocessing() if graph is not None else contextlib.nullcontext():
        for x, _ in loader:
            codes = graph(x) if graph is not None else \
                model.forward_head(model.forward_features(x), pre_logits=True)
            out.append(codes.float().cpu())
            done += len(x)
            events.emit(Working(label, done, len(data), time.perf_counter() - start))
    return torch.cat(out) if out else torch.empty(0)


def cached_features(model: nn.Module, identity: dict[str, Any], data: ImageSet,
                    pre: Preprocess, device: torch.device, *, channels_last: bool,
                    label: str, events: Events | None = None,
                    graph: Callable[[], OnnxBackend | None] | None = None
                    ) -> tuple[torch.Tensor, bool]:
    """Features from the disk cache when the same model has seen the same images before;
    ``graph`` gives the model's codes graph on onnxruntime (or None) when they are not."""
    path = cache_path(identity, data, pre)
    if path.is_file():
        try:
            # A fresh copy: the file's tensor sits wherever its header ends, and the math
            # library takes other kernels for unaligned memory, whose last bits L-BFGS
            # grows into another head; copied, a cached run fits the head it fitted fresh.
            return load_file(str(path))["features"].clone(), True
        except Exception:  # a torn or foreign file: recompute it
            path.unlink(missing_ok=True)
    feats = extract(model, data, pre, device, channels_last=channels_last, label=label,
                    events=events, graph=graph() if graph is not None else None)
    with atomic_path(path) as tmp:
        save_file({"features": feats.contiguous()}, str(tmp))
    return feats, False


def identity_of(architecture: dict[str, Any], weights: str | None) -> dict[str, Any]:
    """What, besides the preprocessing and the images, names a run's features in the
    cache: the backbone's architecture and its weights (``--weights``, or the package's)."""
    return {"architecture": architecture, "weights": _weights_id(weights)}


def cache_path(identity: dict[str, Any], data: ImageSet, pre: Preprocess) -> Path:
    """Where the features of ``data`` under ``identity`` and ``pre`` are cached (the file
    may not exist): named by a hash of all three, the images' bytes included."""
    header = json.dumps({**identity, "pre": pre.to_dict(), "v": 1}, sort_keys=True,
                        default=str)
    return cache_dir("features") / f"{_digest(header, data.images)}.safetensors"


_DIGESTS: dict[tuple[int, str], tuple[weakref.ref[torch.Tensor], str]] = {}


def _digest(header: str, images: torch.Tensor) -> str:
    """The SHA-1 of ``header`` and then ``images``' bytes, hashed once per tensor and
    header: the estimate looks the features up before the run reads them, and the
    images do not change in between."""
    key = (id(images), header)
    hit = _DIGESTS.get(key)
    if hit is not None and hit[0]() is images:
        return hit[1]
    digest = hashlib.sha1(header.encode())
    digest.update(images.cpu().contiguous().numpy().tobytes())
    for old in [k for k, (ref, _) in _DIGESTS.items() if ref() is None]:
        del _DIGESTS[old]
    _DIGESTS[key] = (weakref.ref(images), digest.hexdigest())
    return _DIGESTS[key][1]


def codes_graph(model: nn.Module, pre: Preprocess, device: torch.device,
                architecture: dict[str, Any]) -> Callable[[], OnnxBackend | None]:
    """The model's codes graph on onnxruntime (:mod:`cnnkit.training.codes_onnx`), made
    or opened at the first call only (none when every feature is in the cache)."""
    made: list[OnnxBackend | None] = []

    def get() -> OnnxBackend | None:
        if not made:
            from cnnkit.training import codes_onnx

            made.append(codes_onnx.runner(model, pre, device, architecture))
        return made[0]
    return get


def fit_head(features: torch.Tensor, labels: torch.Tensor, outputs: int, task: Task, *,
             class_weights: torch.Tensor | None = None, rounds: int = 4,
             val: tuple[torch.Tensor, torch.Tensor] | None = None,
             on_round: Any = None, c: float = C) -> nn.Linear:
    """A linear head with L2 (inverse strength ``c``, as scikit-learn's ``C``) on the
    task's loss (for single-label, multinomial logistic regression), by full-batch
    L-BFGS, starting from zero."""
    head = nn.Linear(features.shape[1], outputs)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    lam = 1.0 / (c * len(features))
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=ROUND_ITERATIONS,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = task.loss(head(features), labels, weight=class_weights) \
            + 0.5 * lam * head.weight.pow(2).sum()
        loss.backward()
        return loss

    with _threads_for(features):
        for r in range(rounds):
            start = time.perf_counter()
            opt.step(closure)
            if on_round is not None:
                on_round(r, head, time.perf_counter() - start)
    return head


@contextlib.contextmanager
def _threads_for(features: torch.Tensor) -> Iterator[None]:
    """One torch thread for a small head's many tiny steps: a thread pool's start-up
    costs more than such a step's work, and where other processes share the cores its
    spinning threads wait for each other (3 classes on 72 x 3,328 codes: 0.2 s on one
    thread, 12-18 s on two under a load of 9; docs/benchmarks.md, "The studio")."""
    before = torch.get_num_threads()
    small = features.numel() <= SMALL_HEAD_VALUES
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


def fit(plan: Plan, model: nn.Module, splits: Any, card: ModelCard, run: RunDir,
        class_weights: torch.Tensor | None, events: Events | None = None
        ) -> list[dict[str, Any]]:
    """Extract (or reuse) features, fit the head, save the model; returns metrics rows.
    ``events`` hears the features' progress, the phase, each round and the model."""
    events = events if events is not None else Events()
    cfg = plan.config
    device = plan.device
    model = model.to(device)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    pre = card.preprocess
    for p in model.parameters():
        p.requires_grad_(False)
    identity = identity_of(card.architecture.to_dict(), cfg.weights)
    start = time.perf_counter()
    graph = codes_graph(model, pre, device, card.architecture.to_dict())
    train_x, hit = cached_features(model, identity, splits.train, pre, device,
                                   channels_last=plan.channels_last, label="features (train)",
                                   events=events, graph=graph)
    extract_s = time.perf_counter() - start
    log.info(f"features: {tuple(train_x.shape)} from the frozen {card.architecture.name} "
             + ("(from the cache)" if hit else f"in {extract_s:.1f}s"
                + (" (onnxruntime)" if graph() is not None else "")))
    val = None
    if splits.val is not None:
        val_x, _ = cached_features(model, identity, splits.val, pre, device,
                                   channels_last=plan.channels_last, label="features (val)",
                                   events=events, graph=graph)
        val = (val_x, splits.val.labels.cpu())
    elapsed0 = time.perf_counter() - start
    task, figure = plan.task, plan.task.figure
    history: list[dict[str, Any]] = []
    labels = splits.train.labels.cpu()
    weights = None if class_weights is None else class_weights.cpu()

    def on_round(r: int, head: nn.Linear, seconds: float) -> None:
        with torch.no_grad():
            logits = head(train_x)
            row: dict[str, Any] = {
                "epoch": r + 1, "phase": "head (features)", "lr": 1.0,
                "train_loss": task.loss(logits, labels).item(),
                f"train_{figure}": task.hits(logits, labels).item() / task.units(labels)}
            if val is not None:
                vl = head(val[0])
                row["val_loss"] = task.loss(vl, val[1]).item()
                row[f"val_{figure}"] = task.hits(vl, val[1]).item() / task.units(val[1])
        prev = history[-1]["elapsed_s"] if history else elapsed0
        row.update(train_time_s=seconds, eval_time_s=0.0,
                   images_per_s=len(train_x) * ROUND_ITERATIONS / max(seconds, 1e-9),
                   elapsed_s=prev + seconds)
        history.append(row)
        events.emit(EpochEnded(r + 1, cfg.epochs, row, True, unit="round",
                               note=f"L-BFGS, {ROUND_ITERATIONS} steps", figure=figure))

    # The problem is convex: the last round is the converged fit. (Picking a round by a
    # few-image validation split would only pick noise.)
    events.emit(PhaseStarted(0, "head (features)", cfg.epochs, len(card.classes) *
                             (int(train_x.shape[1]) + 1), 0, "base", announce=False))
    head = fit_head(train_x, labels, task.outputs(card.classes), task, class_weights=weights,
                    rounds=cfg.epochs, val=val, on_round=on_round)
    trained, total = _install_head(model, head)
    save_model(model, card, run.model_path)
    last = history[-1] if history else {}
    events.emit(BestModel(len(history), run.model_path, last.get(f"val_{figure}"),
                          last.get("val_loss"), figure=figure))
    run.write_metrics(history)
    _write_head_phase(run, index=0, mode="features", name="head (features)",
                      epochs=cfg.epochs, trained=trained, total=total,
                      feature_dim=int(train_x.shape[1]), features_cached=hit,
                      extract_s=round(extract_s, 2))
    log.info(f"trained {trained:,} head parameters on frozen features; {total - trained:,} "
             "backbone parameters frozen throughout")
    return history


PROBE_LIMIT = 10_000  # images the linear probe fits on (a stratified sample beyond that)


def probe(plan: Plan, model: nn.Module, splits: Any, run: RunDir,
          class_weights: torch.Tensor | None, events: Events | None = None) -> None:
    """Phase 1 of fine-tuning: fit the new head to the frozen base's codes (LP-FT).

    Fine-tuning from a fitted head changes the pretrained features less than from a
    random one (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"); on
    Fashion-MNIST with 100 images per class a head trained for an epoch of SGD reached
    59% validation accuracy, the probe about 85%.
    """
    cfg = plan.config
    data = splits.train
    if len(data) > PROBE_LIMIT:
        per = max(1, PROBE_LIMIT // len(data.classes))
        data = data.subset(take_per_class(data.labels, per, cfg.seed))
    model = model.to(plan.device)
    start = time.perf_counter()
    codes = extract(model, data, plan.pre, plan.device, channels_last=plan.channels_last,
                    label="linear probe", events=events)
    labels = data.labels.cpu()
    task = plan.task
    head = fit_head(codes, labels, task.outputs(data.classes), task,
                    class_weights=None if class_weights is None else class_weights.cpu())
    trained, total = _install_head(model, head)
    with torch.no_grad():
        figure = task.hits(head(codes), labels).item() / task.units(labels)
    seconds = time.perf_counter() - start
    log.info(f"phase head (linear probe): fitted {trained:,} head parameters to the frozen "
             f"base's features of {len(data):,} images in {seconds:.1f}s (train "
             f"{task.figure_name} {figure:.2%}); base frozen ({total - trained:,} parameters)")
    _write_head_phase(run, index=-1, mode="fine-tune", name="head (linear probe)", epochs=0,
                      trained=trained, total=total, images=len(data),
                      seconds=round(seconds, 2), **{f"train_{task.figure}": figure})


def _install_head(model: nn.Module, head: nn.Linear) -> tuple[int, int]:
    """Copy a fitted head into the model's classifier; returns (its parameters, all)."""
    classifier = model.get_classifier()
    with torch.no_grad():
        classifier.weight.copy_(head.weight.to(classifier.weight.device))
        classifier.bias.copy_(head.bias.to(classifier.bias.device))
    return (sum(p.numel() for p in classifier.parameters()),
            sum(p.numel() for p in model.parameters()))


def _write_head_phase(run: RunDir, *, index: int, mode: str, name: str, epochs: int,
                      trained: int, total: int, **extra: Any) -> None:
    """phases.json for a head fitted on the frozen base (same fields as the loop's)."""
    write_json(run.root / "phases.json", [{
        "index": index, "mode": mode, "name": name, "epochs": epochs, "lr": None,
        "trainable_params": trained, "frozen_params": total - trained, "frozen": "base",
        "frozen_blocks": None, "blocks": None, "lr_scales": [1.0, 1.0],
        "batch_norm": "running statistics kept", **extra}])


def _weights_id(weights: str | None) -> str:
    if not weights:
        return "pretrained"
    p = Path(weights)
    st = p.stat()
    return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"
