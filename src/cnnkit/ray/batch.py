"""Batch prediction on a Ray cluster: a Ray Data pipeline of predictor actors.

``predict`` returns the rows as a lazy ``ray.data.Dataset`` to compose; ``predict_to_folder``
(``cnnkit predict ... --ray --output DIR``) has each actor write its blocks' rows, one
file per block, and checks at the end that every input has its row.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cnnkit.artifacts.modelcard import find_sidecar, read_card
from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.base.progress import RateBar
from cnnkit.ray.cluster import connect, quiet_data, resources
from cnnkit.ray.inputs import list_inputs
from cnnkit.ray.predictor import (
    FORMATS,
    FileWriter,
    Options,
    Predictor,
    ShippedModel,
    columns,
    is_url,
)
from cnnkit.runtime.exports import names_onnx_file
from cnnkit.runtime.predfile import (
    MAX_RECORD_BYTES,
    MadeBy,
    card_sha256,
    check_made_by,
    parse_record,
)
from cnnkit.runtime.predict import load_predictor
from cnnkit.tasks.base import Task
from cnnkit.tasks.threshold import check_threshold

BLOCK_SIZE = 1000  # images per block (and so per output file) at most
RETRIES = 3  # restarts of a lost actor (and retries of its block) before the job fails
RECORD = ".cnnkit.json"  # in the output folder: what made its rows (cnnkit.runtime.predfile)


@dataclass(frozen=True)
class Placement:
    """How many predictor actors, and what each one holds."""

    workers: int
    cpus: float
    gpus: float

    @property
    def device(self) -> str:
        return "cuda" if self.gpus else "cpu"


@dataclass(frozen=True)
class FolderSummary:
    output: str
    files: list[str]
    written: int
    errors: int
    skipped: int  # already in the folder from an earlier run
    seconds: float
    workers: int

    @property
    def rate(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def ship(model: str | os.PathLike, device: str) -> ShippedModel:
    """The model's files as bytes, read here (so workers need not see the run folder):
    the ONNX export (made once and cached, as ``cnnkit predict`` does) for CPU actors."""
    if names_onnx_file(model):
        return _ship_onnx(model, device)
    if os.path.exists(model):
        _single_label(read_card(model)[0].task.name, model)
    if device == "cpu":
        clf = load_predictor(str(model), "cpu", "onnx")
        _single_label(clf.task.name, model)
        path = Path(clf.backend.path)  # an OnnxBackend
        return ShippedModel(clf.card, {path.name: path.read_bytes()}, path.name)
    if not os.path.exists(model):  # a pretrained name: built on each GPU worker
        return ShippedModel(load_predictor(str(model), "cpu", "auto").card, {}, str(model))

    card, weights = read_card(model)
    sidecar = find_sidecar(model)
    files = {sidecar.name: sidecar.read_bytes(), weights.name: weights.read_bytes()}
    rule = getattr(card.task, "unknown", None)
    if rule is not None and rule.uses_distance:  # the feature statistics the rule reads
        stats = sidecar.parent / str((rule.features or {}).get("file", ""))
        if stats.is_file():
            files[stats.name] = stats.read_bytes()
    return ShippedModel(card, files, sidecar.name)


def _ship_onnx(model: str | os.PathLike, device: str) -> ShippedModel:
    """An ONNX file ``cnnkit export`` made, given as the model: CPU actors run it as it is
    (float or int8, checked as ``cnnkit predict`` checks it)."""
    if device != "cpu":
        raise CnnkitError(f"{model} is an ONNX export, which --ray runs on CPU workers; for "
                          "the cluster's GPUs pass the run folder it was exported from (or "
                          "--device cpu).")
    clf = load_predictor(str(model), "cpu", "auto")
    _single_label(clf.task.name, model)
    path = Path(clf.backend.path)
    return ShippedModel(clf.card, {path.name: path.read_bytes()}, path.name)


def _single_label(task: str, model: str | os.PathLike) -> None:
    """--ray's files have single-label columns (label, probability, top-k): a
    multi-label model's label sets do not fit them."""
    if task != "single-label":
        raise CnnkitError(f"{model} is a {task} model, and --ray writes single-label columns; "
                          "use `cnnkit predict MODEL FILES --output FILE.csv` (with --shard "
                          "I/N to split the files over machines).")


def place(ray: Any, workers: int | None, cpus_per_worker: float, gpus: bool | None
          ) -> Placement:
    """Actors on the cluster's GPUs when it has some (and ``gpus`` is not False), else one
    per ``cpus_per_worker`` CPUs."""
    if workers is not None and workers < 1:
        raise CnnkitError(f"--workers takes how many predictor actors to run (1 or more). "
                          f"Received: {workers}")
    if not cpus_per_worker > 0:
        raise CnnkitError(f"cpus_per_worker must be above 0. Received: {cpus_per_worker}")
    cpus, gpu_count = resources(ray)
    if gpus is None:
        gpus = gpu_count >= 1
    if gpus:
        if gpu_count < 1:
            raise CnnkitError("gpus=True asks for GPU actors, and the Ray cluster has no "
                              "GPU. Leave gpus unset (or False) to predict on its CPUs.")
        return Placement(workers or int(gpu_count), 1.0, 1.0)
    return Placement(workers or max(1, int(cpus // cpus_per_worker)), cpus_per_worker, 0.0)


def _block_size(requested: int | None, images: int, workers: int) -> int:
    """``requested``, or :data:`BLOCK_SIZE` but small enough that every worker has a block."""
    if requested is None:
        return max(1, min(BLOCK_SIZE, -(-images // workers)))
    if requested < 1:
        raise CnnkitError(f"block_size must be at least 1. Received: {requested}")
    return requested


def _dataset(ray: Any, paths: Sequence[str], block_size: int) -> Any:
    import pyarrow as pa

    files = [p if is_url(p) else os.path.abspath(p) for p in paths]  # as workers read them
    tables = [pa.table({"path": pa.array(paths[i:i + block_size], pa.string()),
                        "file": pa.array(files[i:i + block_size], pa.string()),
                        "index": pa.array(range(i, min(i + block_size, len(paths))),
                                          pa.int64())})
              for i in range(0, len(paths), block_size)]
    return ray.data.from_arrow(tables)


def _map(ray: Any, ds: Any, cls: type, kwargs: dict[str, Any], where: Placement,
         blocks: int) -> Any:
    """``ds`` through a pool of ``cls`` actors; the model's bytes go to the object store
    once (small constructor arguments: an actor can always be restarted)."""
    shipped = kwargs["model"]
    kwargs = {**kwargs, "model": replace(shipped, files=ray.put(shipped.files))}
    fits = max(1, int(resources(ray)[1 if where.gpus else 0] //
                      (where.gpus or where.cpus)))
    most = max(1, min(where.workers, blocks))  # an actor without a block would idle
    pool = ray.data.ActorPoolStrategy(min_size=min(most, fits), max_size=most)
    with warnings.catch_warnings():  # Ray 2.60 names no other way to bound the retries
        warnings.simplefilter("ignore", DeprecationWarning)
        return ds.map_batches(cls, fn_constructor_kwargs=kwargs, batch_size=None,
                              batch_format="pyarrow", compute=pool, num_cpus=where.cpus,
                              num_gpus=where.gpus or None, max_restarts=RETRIES,
                              max_task_retries=RETRIES)


def predict(model: str | os.PathLike, inputs: str | Sequence[str] | Any, *, top_k: int = 5,
            batch_size: int = 64, tta: bool = False, threshold: float | None = None,
            workers: int | None = None, cpus_per_worker: float = 1.0,
            gpus: bool | None = None, block_size: int | None = None, chunk: int = 64,
            address: str | None = None) -> Any:
    """The predictions of ``model`` (a run folder, model.json or pretrained name) for
    ``inputs`` as a lazy ``ray.data.Dataset`` with the columns of ``cnnkit predict
    --output`` (path, label, probability, label1, prob1, ..., error).

    ``inputs``: image files, folders, globs or fsspec URLs, or a Dataset with a ``path``
    column. Each of ``workers`` actors (default: the cluster's GPUs, or one per
    ``cpus_per_worker`` CPUs) runs the onnxruntime backend on that many threads (torch on
    a GPU). Leave a CPU free when the next step (a write) runs tasks of its own:
    ``workers=`` one fewer than the cluster's CPUs.
    """
    options = _options(top_k, batch_size, tta, threshold, chunk)
    ray = connect(address)
    where = place(ray, workers, cpus_per_worker, gpus)
    blocks = where.workers
    if isinstance(inputs, (str, os.PathLike, list, tuple)):
        paths = list(dict.fromkeys(list_inputs([str(i) for i in (
            [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)])))
        block_size = _block_size(block_size, len(paths), where.workers)
        ds, blocks = _dataset(ray, paths, block_size), -(-len(paths) // block_size)
    elif "path" in (inputs.columns() or []):
        ds = inputs.select_columns(["path"])  # read as given: absolute paths or URLs
    else:
        raise CnnkitError(f"inputs must be image paths or a ray.data.Dataset with a 'path' "
                          f"column. Received a dataset with columns {inputs.columns()}.")
    shipped = ship(model, where.device)
    return _map(ray, ds, Predictor, {"model": shipped, "options": options,
                                     "device": where.device,
                                     "threads": max(1, int(where.cpus))}, where, blocks)


def _options(top_k: int, batch_size: int, tta: bool, threshold: float | None,
             chunk: int) -> Options:
    for name, value in (("top_k", top_k), ("batch_size", batch_size), ("chunk", chunk)):
        if value < 1:
            raise CnnkitError(f"{name} must be at least 1. Received: {value}")
    return Options(top_k, batch_size, tta, check_threshold(threshold, "threshold"), chunk)


def predict_to_folder(model: str | os.PathLike, inputs: str | Sequence[str],
                      output: str | os.PathLike, *, fmt: str = "csv", top_k: int = 5,
                      batch_size: int = 64, tta: bool = False,
                      threshold: float | None = None, workers: int | None = None,
                      cpus_per_worker: float = 1.0, gpus: bool | None = None,
                      block_size: int | None = None, chunk: int = 64,
                      address: str | None = None, progress: bool = True,
                      overwrite: bool = False) -> FolderSummary:
    """Predict ``inputs`` on the cluster into the folder ``output`` (local, shared by every
    node, or an fsspec URL): one CSV (or Parquet) file of ``--output`` rows per block.
    Running it again with the same folder predicts only the images without a row, when
    the folder's record (``.cnnkit.json``) says the same model and options made them
    (else one line names the difference; ``overwrite`` starts the folder afresh)."""
    if fmt not in FORMATS:
        raise CnnkitError(f"--format with --ray is csv or parquet. Received: {fmt!r}")
    options = _options(top_k, batch_size, tta, threshold, chunk)
    output = str(output)
    files = list(dict.fromkeys(list_inputs([str(i) for i in (
        [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)])))
    ray = connect(address)
    quiet_data(ray)
    where = place(ray, workers, cpus_per_worker, gpus)
    shipped = ship(model, where.device)
    k = max(1, min(top_k, len(shipped.card.classes)))
    folder = OutputFolder(output, fmt, k, shipped.card.task)
    if overwrite:
        folder.clear()
    done = folder.done()
    folder.bind(MadeBy(model=str(model), weights_sha256=shipped.card.sha256 or "",
                       card_sha256=card_sha256(shipped.card), top_k=k,
                       threshold=options.threshold, tta=tta,
                       runtime="onnx" if where.device == "cpu" else "torch", shard=None),
                len(done))
    todo = [f for f in files if f not in done]
    started = time.monotonic()
    reported: list[dict[str, Any]] = []
    if todo:
        block_size = _block_size(block_size, len(todo), where.workers)
        where = replace(where, workers=min(where.workers, -(-len(todo) // block_size)))
        ds = _map(ray, _dataset(ray, todo, block_size), FileWriter,
                  {"model": shipped, "options": options, "output": output, "fmt": fmt,
                   "run_id": uuid.uuid4().hex[:8], "device": where.device,
                   "threads": max(1, int(where.cpus))}, where, where.workers)
        bar = RateBar(len(todo), f"predicting on Ray ({log.plural(where.workers, 'worker')})",
                      enabled=progress)
        try:
            for row in _rows(ds):
                reported.append(row)
                bar.advance(int(row["rows"]))
        except Exception as exc:
            bar.close()
            if type(exc).__module__.startswith("ray") or isinstance(exc, CnnkitError):
                raise CnnkitError(folder.failed(_reason(exc), todo)) from None
            raise
        bar.close()
    written = sum(int(r["rows"]) for r in reported)
    folder.check(reported, todo, written)
    return FolderSummary(output, sorted({str(r["file"]) for r in reported}), written,
                         sum(int(r["errors"]) for r in reported), len(files) - len(todo),
                         time.monotonic() - started, where.workers)


def _rows(ds: Any) -> Iterator[dict[str, Any]]:
    yield from ds.iter_rows()


def _reason(exc: BaseException) -> str:
    """One line for a failed job: the first line of the innermost cause Ray reports."""
    cause: BaseException = exc
    while getattr(cause, "cause", None) is not None or cause.__cause__ is not None:
        nxt = getattr(cause, "cause", None) or cause.__cause__
        if nxt is cause or not isinstance(nxt, BaseException):
            break
        cause = nxt
    lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Traceback", "File ", "ray::"))]
    text = (useful or lines or [type(cause).__name__])[-1 if isinstance(
        cause, CnnkitError) else 0]
    return f"{type(cause).__name__}: {text}"[:300]


class OutputFolder:
    """The folder of part files: what it already holds (to resume), and the check that
    every input has its row once the job ends."""

    def __init__(self, output: str, fmt: str, k: int, task: Task | None = None) -> None:
        if Path(output).suffix.lower() in (".csv", ".jsonl", ".ndjson", ".parquet"):
            raise CnnkitError(f"With --ray, --output is a folder (one file per block of "
                              f"images), not a file. Received: {output}")
        self.output, self.fmt, self.k, self.task = output, fmt, k, task
        if is_url(output):
            import fsspec

            self.fs, self.root = fsspec.core.url_to_fs(output)
        else:
            from fsspec.implementations.local import LocalFileSystem

            self.fs, self.root = LocalFileSystem(), str(Path(output).absolute())
            Path(output).mkdir(parents=True, exist_ok=True)

    @property
    def record(self) -> str:
        return f"{self.root}/{RECORD}"

    def bind(self, now: MadeBy, rows: int) -> None:
        """Stop unless the ``rows`` already here were made as ``now`` makes them; then
        record ``now`` (before any new row)."""
        before = None
        if self.fs.exists(self.record):
            with self.fs.open(self.record, "rb") as fh:
                before = parse_record(fh.read(MAX_RECORD_BYTES + 1), self.record)
        if rows:
            check_made_by(self.output, before, now, rows, RECORD,
                          "--overwrite to start it afresh, or choose another --output")
        if before != now:
            with self.fs.open(self.record, "wb") as fh:
                fh.write(json.dumps(now.to_dict(), indent=2).encode())

    def clear(self) -> None:
        """``--overwrite``: the part files and the record removed (nothing else)."""
        for name in self.parts():
            self.fs.rm(f"{self.root}/{name}")
        if self.fs.exists(self.record):
            self.fs.rm(self.record)

    def parts(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(self.root, detail=False)]
        names = [n for n in names if not n.startswith(".")]
        other = [n for n in names if not (n.startswith("part-") and
                                          n.endswith((".csv", ".parquet")))]
        if other:
            raise CnnkitError(f"--output {self.output} holds other files ({other[0]!r}...); "
                              f"choose a new or empty folder, or the folder of an earlier "
                              f"--ray run to finish it.")
        wrong = [n for n in names if not n.endswith(f".{self.fmt}")]
        if wrong:
            raise CnnkitError(f"--output {self.output} holds {wrong[0]} from a run with "
                              f"another --format; pass the same --format to finish it, or "
                              f"choose another folder.")
        return sorted(names)

    def done(self) -> set[str]:
        """The paths that already have a row (files are only ever complete)."""
        paths: set[str] = set()
        for name in self.parts():
            paths.update(self._paths(f"{self.root}/{name}"))
        return paths

    def _paths(self, path: str) -> list[str]:
        with self.fs.open(path, "rb") as fh:
            if self.fmt == "parquet":
                import pyarrow.parquet as pq

                table = pq.read_table(fh)
            else:
                import pyarrow as pa
                import pyarrow.csv as pcsv

                names = columns(self.k, self.task)
                table = pcsv.read_csv(fh, convert_options=pcsv.ConvertOptions(
                    column_types={n: pa.string() for n in names}))
        if table.column_names != columns(self.k, self.task):
            raise CnnkitError(f"{path} has other columns than this command writes (another "
                              f"--top-k, or not cnnkit's); pass the same options to finish "
                              f"it, or choose another --output.")
        return table.column("path").to_pylist()

    def failed(self, reason: str, todo: list[str]) -> str:
        """The line for a job that stopped: what is in the folder, what is missing."""
        try:
            have = self.done()
        except (CnnkitError, OSError):
            have = set()
        missing = [f for f in todo if f not in have]
        return (f"The Ray job failed ({reason}). {self.output} holds the rows of "
                f"{len(todo) - len(missing):,} of these {len(todo):,} images; "
                f"{_some(missing)} have none. Run the same command again to predict only "
                f"those.")

    def check(self, reported: list[dict[str, Any]], todo: list[str], written: int) -> None:
        """Every file the actors reported is here, and every input has a row."""
        here = set(self.parts())
        away = sorted({str(r["file"]) for r in reported} - here)
        if away:
            nodes = sorted({str(r["node"]) for r in reported if r["file"] in away})
            raise CnnkitError(f"{len(away)} output files were written on {', '.join(nodes)} "
                              f"but are not in {self.output} here (first: {away[0]}): "
                              f"--output must be a folder every node sees (a shared "
                              f"filesystem) or a URL such as s3://bucket/predictions/.")
        if written != len(todo):
            have = self.done()
            missing = [f for f in todo if f not in have]
            raise CnnkitError(f"The Ray job ended with rows for {written:,} of {len(todo):,} "
                              f"images; {_some(missing)} have none. Run the same command "
                              f"again to predict only those.")


def _some(paths: list[str], n: int = 3) -> str:
    if not paths:
        return "no images"
    shown = ", ".join(log.quoted(p) for p in paths[:n])
    more = f" and {len(paths) - n:,} more" if len(paths) > n else ""
    return f"{shown}{more}"
