"""Experiment tracking: a run's parameters, per-epoch metrics and files in MLflow or
TensorBoard, as well as in its own folder.

:class:`Trackers` subscribes to the run's events (:mod:`cnnkit.training.events`) on the
process that writes the run folder only (rank 0 of a distributed run): each epoch's row,
the end (files, test metrics) or an error. Both trackers are optional extras, imported
when asked for.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.artifacts.rundir import RunDir
from cnnkit.base import log
from cnnkit.base.atomic import write_json
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.tasks.base import Result
from cnnkit.training.events import EpochEnded, Event, RunEnded, RunFailed

EXTRAS = {"mlflow": ("mlflow", "mlflow"), "tensorboard": ("tensorboard", "tensorboard")}
# An epoch row's numbers that a tracker logs: these, and the task's figure
# (train_<figure>, val_<figure>: train_acc and val_acc for single-label).
EPOCH_METRICS = ("train_loss", "val_loss", "lr", "images_per_s")
STATE_FILE = "tracking.json"  # the MLflow run id, so --resume continues the same run


def check_installed(names: tuple[str, ...]) -> tuple[str, ...]:
    """The trackers ``--track`` asks for (``TrainConfig.trackers``: the run's
    :class:`Trackers` are these), once each is found installed; fails before any work
    when a tracker's package is missing (one line, the fix)."""
    for name in names:
        module, extra = EXTRAS[name]
        if importlib.util.find_spec(module) is None:
            raise CnnkitError(f"--track {name} needs the {module} package, which is not "
                              f"installed: pip install 'cnnkit[{extra}]'")
    return names


def writes_here() -> bool:
    """Whether this process writes the run (every process but rank 1+ of a distributed run)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


class Trackers:
    """Every tracker a run asked for, called together."""

    def __init__(self, run: RunDir, config: TrainConfig, names: tuple[str, ...],
                 resuming: bool = False,
                 samples: tuple[Any, Any, tuple[str, ...]] | None = None) -> None:
        """``names``: the trackers asked for, as :func:`check_installed` found them;
        ``samples``: ``(uint8 images NCHW, labels, classes)`` to show in TensorBoard."""
        self.items: list[Any] = []
        self.run = run
        state = _read_state(run) if resuming else {}
        names = names if writes_here() else ()
        for name in names:
            self.items.append(MLflowTracker(run, config, state) if name == "mlflow"
                              else TensorBoardTracker(run, config, samples if not resuming
                                                      else None))
        if self.items:
            write_json(run.root / STATE_FILE, {k: v for t in self.items for k, v in
                                               t.state().items()})

    def __call__(self, event: Event) -> None:
        """A subscriber to the run's events: epochs, the end, an error."""
        if not self.items:
            return
        if isinstance(event, EpochEnded):
            self.epoch(event.row)
        elif isinstance(event, RunEnded):
            self.finish(self.run, event.history, event.test)
        elif isinstance(event, RunFailed):
            self.fail(event.status)

    def epoch(self, row: dict[str, Any]) -> None:
        """One epoch's row. A tracker that fails mid-run (a server gone) is warned about
        and dropped; the run itself goes on."""
        for t in list(self.items):
            try:
                t.epoch(row)
            except Exception as exc:
                log.warn(f"tracking: {type(t).__name__} failed ({type(exc).__name__}: "
                         f"{exc}); the run goes on without it")
                self.items.remove(t)

    def finish(self, run: RunDir, history: list[dict[str, Any]], test: Result | None
               ) -> None:
        for t in self.items:
            t.finish(run, history, test)

    def fail(self, status: str = "FAILED") -> None:
        for t in self.items:
            try:
                t.fail(status)
            except Exception as exc:  # never hide the run's own error behind ours
                log.warn(f"tracking: could not mark the run {status.lower()} ({exc})")


def _read_state(run: RunDir) -> dict[str, Any]:
    path = run.root / STATE_FILE
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _numeric(row: dict[str, Any]) -> dict[str, float]:
    keys = [k for k in row if k in EPOCH_METRICS or (
        k.startswith(("train_", "val_")) and not k.endswith("_s"))]
    return {k: float(row[k]) for k in keys if isinstance(row.get(k), (int, float))
            and not isinstance(row.get(k), bool)}


def _test_metrics(test: Result | None) -> dict[str, float]:
    return {} if test is None else {f"test_{k}": v for k, v in test.scalars().items()}


def store_uri(state: dict[str, Any]) -> str:
    """Where MLflow runs go: ``MLFLOW_TRACKING_URI``; else, resuming, the store the run
    began in; else MLflow's own default here (``sqlite:///mlflow.db`` in the current
    folder, or an older ``./mlruns`` that holds runs), made absolute, so that
    ``mlflow ui`` started in the same folder shows the run."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or state.get("mlflow_uri")
    if not uri:
        import mlflow

        uri = mlflow.get_tracking_uri()
    if uri.startswith("file:") or "://" not in uri:  # a file store: MLflow 3 asks to opt in
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def ui_command(uri: str) -> str:
    """The command that opens ``uri``'s runs in MLflow's UI (http://127.0.0.1:5000)."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    opt_in = "MLFLOW_ALLOW_FILE_STORE=true " if uri.startswith("file:") or "://" not in uri \
        else ""
    return f"{opt_in}mlflow ui --backend-store-uri {uri}"


class MLflowTracker:
    """Parameters, per-epoch metrics (step = epoch), the model files, metrics, plots and
    report as artifacts, in the store :func:`store_uri` names."""

    def __init__(self, run: RunDir, config: TrainConfig, state: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        uri = store_uri(state)
        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        self.logged: set[int] = set()
        run_id = state.get("mlflow_run_id")
        if run_id and state.get("mlflow_uri") == uri:
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
            history = self.client.get_metric_history(run_id, "train_loss")
            self.logged = {int(m.step) for m in history}
            log.info(f"mlflow: continuing run {run_id} in {uri}")
            return
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "cnnkit")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else \
            self.client.create_experiment(name)
        created = self.client.create_run(experiment_id, run_name=run.root.name,
                                         tags={"cnnkit.run_dir": str(run.root.resolve()),
                                               "cnnkit.data": str(config.data)})
        self.run_id = created.info.run_id
        from mlflow.entities import Param

        params = [Param(k, _param(v)) for k, v in sorted(config.to_dict().items())]
        self.client.log_batch(self.run_id, params=params)
        log.info(f"mlflow: run {self.run_id} in {uri} (experiment {name!r}); to see it: "
                 f"{ui_command(uri)}")

    def state(self) -> dict[str, Any]:
        return {"mlflow_run_id": self.run_id, "mlflow_uri": self.uri}

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step)
                                                    for k, v in values.items()])

    def epoch(self, row: dict[str, Any]) -> None:
        step = int(row["epoch"])
        if step not in self.logged:
            self._log(_numeric(row), step)
            self.logged.add(step)

    def finish(self, run: RunDir, history: list[dict[str, Any]], test: Result | None
               ) -> None:
        for row in history:  # rows no epoch hook saw (--mode features)
            if "epoch" in row:
                self.epoch(row)
        last = int(history[-1]["epoch"]) if history else 0
        if test is not None:
            self._log(_test_metrics(test), last)
        for name in ("model.safetensors", "model.json", "config.json", "classes.txt",
                     "metrics.csv", "test_metrics.json", "phases.json", "report.html",
                     "lr_find.json"):
            path = run.root / name
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        if run.plots_dir.is_dir():
            self.client.log_artifacts(self.run_id, str(run.plots_dir), "plots")
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


def _param(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict, tuple)) else str(value)
    return text[:6000]  # MLflow's limit on a parameter's value


class TensorBoardTracker:
    """Scalars per epoch, the training samples at the start and the confusion matrix at
    the end, as event files in ``<run>/tensorboard``."""

    def __init__(self, run: RunDir, config: TrainConfig,
                 samples: tuple[Any, Any, tuple[str, ...]] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = run.root / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.folder))
        self.writer.add_text("config", "```\n" + config.to_json() + "\n```", 0)
        if samples is not None:
            images, labels, classes = samples
            self.writer.add_images("samples/train", images, 0, dataformats="NCHW")
            self.writer.add_text("samples/labels", ", ".join(classes[int(i)] for i in labels),
                                 0)
        self.logged: set[int] = set()
        log.info(f"tensorboard: {self.folder} (tensorboard --logdir {run.root.parent})")

    def state(self) -> dict[str, Any]:
        return {"tensorboard": str(self.folder)}

    def epoch(self, row: dict[str, Any]) -> None:
        step = int(row["epoch"])
        if step in self.logged:
            return
        self.logged.add(step)
        values = _numeric(row)
        for key, value in values.items():
            split, _, what = key.partition("_")
            tag = {"loss": f"loss/{split}", "acc": f"accuracy/{split}"}.get(what, key)
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def finish(self, run: RunDir, history: list[dict[str, Any]], test: Result | None
               ) -> None:

        for row in history:
            if "epoch" in row:
                self.epoch(row)
        last = int(history[-1]["epoch"]) if history else 0
        for key, value in _test_metrics(test).items():
            self.writer.add_scalar(f"test/{key.removeprefix('test_')}", value, last)
        if test is not None and getattr(test, "confusion", None) is not None:
            picture = _confusion_picture(run, test)
            self.writer.add_image("confusion_matrix", picture, last, dataformats="HWC")
            matrix = np.asarray(test.confusion)
            self.writer.add_text("confusion_matrix/counts", _markdown_matrix(
                matrix, test.classes), last)
        self.writer.flush()
        self.writer.close()

    def fail(self, status: str) -> None:
        self.writer.close()


def _confusion_picture(run: RunDir, test: Any) -> Any:
    """The report's confusion-matrix PNG as an (H, W, 3) uint8 array (drawn apart, and
    not left in the run folder, when the run wrote no plots)."""

    from PIL import Image

    path = run.plots_dir / "confusion_matrix.png"
    if path.is_file():
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    from cnnkit.inspect.plots import plot_confusion

    with tempfile.TemporaryDirectory() as tmp:
        drawn = plot_confusion(test.confusion, list(test.classes), Path(tmp) / "cm.png",
                               f"Confusion matrix on the test set ({test.n:,} images)")
        with Image.open(drawn) as img:
            return np.asarray(img.convert("RGB"))


def _markdown_matrix(matrix: Any, classes: Any) -> str:
    head = "| true \\ predicted | " + " | ".join(map(str, classes)) + " |"
    rule = "|---" * (len(classes) + 1) + "|"
    rows = [f"| {c} | " + " | ".join(str(int(v)) for v in r) + " |"
            for c, r in zip(classes, matrix)]
    return "\n".join([head, rule, *rows])
