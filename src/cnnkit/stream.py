"""Batch prediction over large collections: rows streamed to a CSV or JSON Lines file.

``cnnkit predict MODEL photos/ --output preds.csv``: files are decoded in chunks by
worker processes while the previous chunk is inferred, each chunk's rows are written and
flushed as soon as they are known (a reader can tail the file), and memory holds only a
few chunks whatever the number of files. A file that cannot be read gets a row with its
error. Running the same command again resumes: files already in the output are skipped
(a row cut short by a crash is dropped and done again). ``--shard I/N`` keeps every
N-th file of the sorted list, so N machines split one collection without talking.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.chunks import decode_ahead
from cnnkit.errors import CnnkitError
from cnnkit.predict import Classifier, Prediction
from cnnkit.progress import RateBar

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class Row:
    """One input's outcome: its prediction, or why it has none."""

    path: str
    prediction: Prediction | None
    error: str | None = None


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; None stays None."""
    if text is None:
        return None
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not (n >= 1 and 0 <= i < n):
        raise CnnkitError(f"--shard is I/N with 0 <= I < N, e.g. 0/4 for the first of four "
                          f"shards. Received: {text!r}")
    return i, n


def select(files: Sequence[str], shard: tuple[int, int] | None) -> list[str]:
    """The inputs as given, or with a shard, every N-th file of the sorted, de-duplicated
    list from the I-th (the same split on every machine, whatever order the shell gave)."""
    if shard is None:
        return list(files)
    return sorted(dict.fromkeys(files))[shard[0]::shard[1]]


def predict_rows(clf: Classifier, files: Sequence[str], *, top_k: int = 5,
                 batch_size: int = 64, tta: bool = False, threshold: float | None = None,
                 chunk: int = 64, workers: int | None = None) -> Iterator[list[Row]]:
    """Rows of predictions, one list per chunk of ``chunk`` files, in input order."""
    pre = clf.card.preprocess
    k = max(1, min(top_k, len(clf.classes)))
    for part in decode_ahead(files, pre.channels, pre.decode_size, pre.interpolation,
                             chunk=chunk, workers=workers):
        ok = part.ok
        probs = clf.proba_decoded(part.images[ok] if not ok.all() else part.images,
                                  batch_size=batch_size, tta=tta) if ok.any() else None
        rows, j = [], 0
        for path, error in zip(part.paths, part.errors):
            if error is not None:
                rows.append(Row(path, None, error))
                continue
            p = probs[j]
            j += 1
            order = np.argsort(-p)[:k]
            top = [(clf.classes[c], float(p[c])) for c in order]
            rows.append(Row(path, Prediction(path, top, threshold)))
        yield rows


class RowWriter:
    """An output file of rows: CSV or JSON Lines by its suffix; resumable."""

    def __init__(self, path: str | os.PathLike, top_k: int, threshold: float | None) -> None:
        self.path = Path(path)
        fmt = FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise CnnkitError(f"--output must end in .csv or .jsonl. Received: {self.path}")
        self.fmt, self.k, self.threshold = fmt, top_k, threshold
        self.header = ["path", "label", "probability"] + [
            f"{w}{i}" for i in range(1, top_k + 1) for w in ("label", "prob")] + ["error"]
        self._fh: io.TextIOWrapper | None = None

    def done(self) -> set[str]:
        """Paths already in the file; a last line cut short by a crash is removed."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return set()
        with open(self.path, "rb+") as fh:
            data = fh.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):  # a row the last run was writing when it stopped
                fh.truncate(end)
                data = data[:end]
        text = data.decode("utf-8", errors="surrogateescape")
        if self.fmt == "csv":
            return self._done_csv(text)
        paths = set()
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                paths.add(json.loads(line)["path"])
            except (ValueError, KeyError, TypeError):
                raise CnnkitError(f"{self.path} line {n} is not a prediction row; it is not "
                                  "an output of cnnkit predict. Choose another --output.") \
                    from None
        return paths

    def _done_csv(self, text: str) -> set[str]:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None:
            return set()
        if header != self.header:
            raise CnnkitError(f"{self.path} has other columns than this command writes "
                              f"(another --top-k, or not a cnnkit predict output); pass "
                              f"the same options to resume it, or choose another --output.")
        return {row[0] for row in reader if row}

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        self._fh = open(self.path, "a", encoding="utf-8",  # noqa: SIM115 (close() closes)
                        errors="surrogateescape", newline="")
        if new and self.fmt == "csv":
            self._write([self.header])

    def write(self, rows: list[Row]) -> None:
        """Append ``rows`` and flush them to the file in one write."""
        self._write([self._csv(r) for r in rows] if self.fmt == "csv"
                    else [self._json(r) for r in rows])

    def _write(self, rows: list[Any]) -> None:
        assert self._fh is not None
        buf = io.StringIO(newline="")
        if self.fmt == "csv":
            csv.writer(buf, lineterminator="\n").writerows(rows)
        else:
            buf.writelines(line + "\n" for line in rows)
        self._fh.write(buf.getvalue())
        self._fh.flush()

    def _csv(self, row: Row) -> list[str]:
        p = row.prediction
        if p is None:
            return [row.path, "", ""] + [""] * (2 * self.k) + [row.error or ""]
        tops = [v for c, pr in p.top for v in (c, f"{pr:.6f}")]
        tops += [""] * (2 * self.k - len(tops))
        return [row.path, p.label, f"{p.probability:.6f}", *tops, ""]

    def _json(self, row: Row) -> str:
        if row.prediction is None:
            return json.dumps({"path": row.path, "error": row.error}, ensure_ascii=False)
        return json.dumps(row.prediction.to_dict(), ensure_ascii=False)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass(frozen=True)
class StreamSummary:
    written: int
    errors: int
    skipped: int  # already in the output
    seconds: float

    @property
    def rate(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def predict_to_file(clf: Classifier, files: Sequence[str], output: str | os.PathLike, *,
                    top_k: int = 5, batch_size: int = 64, tta: bool = False,
                    threshold: float | None = None, chunk: int = 64,
                    workers: int | None = None, progress: bool = True) -> StreamSummary:
    """Predict ``files`` into ``output`` (.csv or .jsonl), resuming what it already holds."""
    writer = RowWriter(output, max(1, min(top_k, len(clf.classes))), threshold)
    done = writer.done()
    todo = [f for f in dict.fromkeys(files) if f not in done]
    started = time.monotonic()
    written = errors = 0
    bar = RateBar(len(todo), "predicting", enabled=progress)
    writer.open()
    try:
        for rows in predict_rows(clf, todo, top_k=top_k, batch_size=batch_size, tta=tta,
                                 threshold=threshold, chunk=chunk, workers=workers):
            writer.write(rows)
            written += len(rows)
            errors += sum(r.error is not None for r in rows)
            bar.advance(len(rows))
    finally:
        bar.close()
        writer.close()
    return StreamSummary(written, errors, len(files) - len(todo),
                         time.monotonic() - started)
