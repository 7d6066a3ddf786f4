"""What runs inside Ray's predictor actors: the model, shipped once through the object
store; a block of image paths in, the rows of ``cnnkit predict --output`` out.

The actors run the same code as ``cnnkit predict`` in one process
(:func:`cnnkit.runtime.stream.chunk_rows` on a :class:`~cnnkit.runtime.predict.Classifier`),
so the answers are the same; only where the rows go differs. Nothing here imports torch
on the CPU path.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.artifacts.modelcard import ModelCard
from cnnkit.base.errors import CnnkitError
from cnnkit.data.chunks import Chunk, decode_chunk
from cnnkit.data.decode import CorruptImageError, decode
from cnnkit.runtime.backends import OnnxBackend
from cnnkit.runtime.predict import Classifier, load_predictor
from cnnkit.runtime.stream import Row, chunk_rows, write_csv
from cnnkit.runtime.stream import columns as _columns
from cnnkit.tasks.base import Task

FORMATS = ("csv", "parquet")


@dataclass(frozen=True)
class Options:
    """What changes the answers or the rows, as ``cnnkit predict`` takes it."""

    top_k: int = 5
    batch_size: int = 64
    tta: bool = False
    threshold: float | None = None
    chunk: int = 64


@dataclass(frozen=True)
class ShippedModel:
    """A model as its bytes, so that no worker needs to see the run folder: the ONNX
    export for CPU actors, or the sidecar and weights (or a pretrained name) for GPU ones."""

    card: ModelCard
    files: Any  # file name -> bytes, or a Ray reference to that dict in the object store
    main: str  # the file to open: an .onnx, a sidecar .json, or a pretrained name

    def open(self, folder: Path, device: str, threads: int) -> Classifier:
        files = self.files
        if not isinstance(files, dict):
            import ray

            files = ray.get(files)
        for name, data in files.items():
            (folder / name).write_bytes(data)
        if device == "cpu":

            return Classifier(None, self.card, None, OnnxBackend(folder / self.main, threads),
                              loader=_no_torch)

        target = str(folder / self.main) if files else self.main
        return load_predictor(target, device, "torch")


def _no_torch() -> Any:
    raise CnnkitError("a Ray predictor actor holds only the exported model; load the run "
                      "with cnnkit.load() for Grad-CAM or export.")


def columns(k: int, task: Task | None = None) -> list[str]:
    """The columns of ``cnnkit predict --output``'s CSV, in its order (``task``: the
    model's, whose unknown rule adds ``unknown_score``)."""
    return _columns(k, task)


def schema(k: int, task: Task | None = None) -> Any:
    import pyarrow as pa

    fields = [pa.field(name, pa.float64() if name.startswith("prob") or name == "unknown_score"
                       else pa.string())
              for name in columns(k, task)]
    return pa.schema(fields)


def to_table(rows: list[Row], k: int, task: Task | None = None) -> Any:
    """Rows as an Arrow table with :func:`columns` (probabilities as float64: the exact
    values that the CSV prints to six places; empty cells are nulls)."""
    import pyarrow as pa

    data: dict[str, list[Any]] = {name: [] for name in columns(k, task)}
    for row in rows:
        p = row.prediction
        data["path"].append(row.path)
        data["label"].append(p.label if p else None)
        data["probability"].append(p.probability if p else None)
        if "unknown_score" in data:
            data["unknown_score"].append(p.unknown_score if p else None)
        top = p.top if p else []
        for i in range(k):
            data[f"label{i + 1}"].append(top[i][0] if i < len(top) else None)
            data[f"prob{i + 1}"].append(top[i][1] if i < len(top) else None)
        data["error"].append(row.error)
    return pa.table(data, schema=schema(k, task))


def is_url(path: str) -> bool:
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path) is not None


def _decode_urls(urls: list[str], channels: int, size: int, interpolation: str) -> Chunk:
    """:func:`decode_chunk` for fsspec/pyarrow URLs: each file's bytes read, then decoded."""
    import fsspec

    images = np.zeros((len(urls), channels, size, size), dtype=np.uint8)
    errors: list[str | None] = [None] * len(urls)
    for i, url in enumerate(urls):
        try:
            with fsspec.open(url, "rb") as fh:
                data = fh.read()
            images[i] = decode(data, channels, size, interpolation).transpose(2, 0, 1)
        except CorruptImageError as exc:
            text = str(exc).removeprefix("<bytes>: ")
            errors[i] = re.sub(r" <_io\.BytesIO object at 0x[0-9a-f]+>", "", text)
        except FileNotFoundError:
            errors[i] = "file not found"
        except OSError as exc:
            errors[i] = exc.strerror or type(exc).__name__
    return Chunk(list(urls), images, errors)


class Predictor:
    """A Ray Data actor: ``batch["path"]`` in, the rows' columns out (a pyarrow table)."""

    def __init__(self, model: ShippedModel, options: Options, device: str = "cpu",
                 threads: int = 1) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="cnnkit-ray-model-"))
        self.clf = model.open(self._folder, device, threads)
        self.options = options
        self.k = max(1, min(options.top_k, len(self.clf.classes)))

    def rows(self, batch: dict[str, np.ndarray]) -> list[Row]:
        """The rows ``cnnkit predict --output`` writes for ``batch["path"]`` (read from
        ``batch["file"]``, the absolute path or URL, where there is one), in order."""
        names = [str(p) for p in batch["path"]]
        files = [str(p) for p in batch["file"]] if "file" in batch else names
        opts, clf = self.options, self.clf
        pre = clf.card.preprocess
        out: list[Row] = []
        for start in range(0, len(files), opts.chunk):
            part = files[start:start + opts.chunk]
            reader = _decode_urls if any(is_url(p) for p in part) else decode_chunk
            chunk = reader(part, pre.decode_channels, pre.decode_size, pre.interpolation)
            chunk.paths = names[start:start + opts.chunk]
            out += _chunk_rows(clf, chunk, self.k, opts)
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        return to_table(self.rows(batch), self.k, self.clf.task)

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "_folder", ""), ignore_errors=True)


def _chunk_rows(clf: Classifier, part: Chunk, k: int, opts: Options) -> list[Row]:
    """As :func:`cnnkit.runtime.stream.predict_rows` does for one decoded chunk."""
    return chunk_rows(clf, part, top_k=k, batch_size=opts.batch_size, tta=opts.tta,
                      threshold=opts.threshold)


class FileWriter(Predictor):
    """A predictor actor that writes each block's rows to one file of the output folder
    (complete or not at all: written aside, then renamed or uploaded) and returns a
    summary row: the file, its rows and errors, and the node that wrote it. A retried
    block writes the same name again, so no row is ever written twice."""

    def __init__(self, model: ShippedModel, options: Options, output: str, fmt: str,
                 run_id: str, device: str = "cpu", threads: int = 1) -> None:
        super().__init__(model, options, device, threads)
        self.output, self.fmt, self.run_id = output, fmt, run_id

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        first = int(np.min(batch["index"]))  # a batch's rows are its own: a unique name
        rows = self.rows(batch)
        name = f"part-{self.run_id}-{first:08d}.{self.fmt}"
        self._write(rows, name)
        return pa.table({"file": [name], "rows": [len(rows)],
                         "errors": [sum(r.error is not None for r in rows)],
                         "node": [socket.gethostname()]})

    def _write(self, rows: list[Row], name: str) -> None:
        with tempfile.TemporaryDirectory(prefix="cnnkit-ray-out-") as tmp:
            local = Path(tmp) / name
            if self.fmt == "csv":
                write_csv(local, rows, self.k, self.clf.task)
            else:
                import pyarrow.parquet as pq

                pq.write_table(to_table(rows, self.k, self.clf.task), local)
            if is_url(self.output):
                import fsspec

                fs, root = fsspec.core.url_to_fs(self.output)
                fs.put_file(str(local), f"{root.rstrip('/')}/{name}")
                return
            target = Path(self.output) / name
            aside = target.with_name(f".{name}.{os.getpid()}.tmp")
            shutil.copyfile(local, aside)
            os.replace(aside, target)
