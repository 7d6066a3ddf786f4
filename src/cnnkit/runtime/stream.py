"""Batch prediction over large collections: rows streamed to a CSV or JSON Lines file.

``cnnkit predict MODEL photos/ --output preds.csv``: files are decoded in chunks by
worker processes while the previous chunk is inferred, each chunk's rows are written and
flushed as soon as they are known (a reader can tail the file), and memory holds only a
few chunks whatever the number of files. A file that cannot be read gets a row with its
error. Running the same command again resumes: files already in the output are skipped
(a row cut short by a crash is dropped and done again), when the file's record says the
same model and options made it (:mod:`cnnkit.runtime.predfile`). ``--shard I/N`` keeps every
N-th file of the sorted list, so N machines split one collection without talking.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cnnkit.artifacts.runlock import RunLock
from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.base.progress import RateBar
from cnnkit.data.chunks import Chunk, decode_ahead
from cnnkit.runtime.exports import weights_key
from cnnkit.runtime.predfile import FORMATS, MadeBy, RowFile, card_sha256, columns, csv_line
from cnnkit.runtime.predict import Classifier
from cnnkit.tasks.base import Answer, Task
from cnnkit.tasks.single_label import SingleLabel

__all__ = ["FORMATS", "Row", "StreamSummary", "chunk_rows", "columns", "made_by",
           "parse_shard", "predict_rows", "predict_to_file", "select", "write_csv"]


@dataclass(frozen=True)
class Row:
    """One input's outcome: its prediction, or why it has none."""

    path: str
    prediction: Answer | None
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
    for part in decode_ahead(files, pre.decode_channels, pre.decode_size, pre.interpolation,
                             chunk=chunk, workers=workers):
        yield chunk_rows(clf, part, top_k=top_k, batch_size=batch_size, tta=tta,
                         threshold=threshold)


def chunk_rows(clf: Classifier, part: Chunk, *, top_k: int, batch_size: int, tta: bool,
               threshold: float | None) -> list[Row]:
    """The rows of one decoded chunk, in order: the task's answer for each readable
    image, the error of each other one."""
    ok = part.ok
    if ok.any():  # a note on the answers, where there are answers
        clf.say_note()
    readable = [p for p, e in zip(part.paths, part.errors) if e is None]
    probs = clf.answer_inputs(part.images[ok] if not ok.all() else part.images,
                              batch_size=batch_size, tta=tta) if ok.any() else None
    answers = iter(clf.task.answers(probs, readable, clf.classes, top_k=top_k,
                                    threshold=threshold) if probs is not None else [])
    return [Row(path, None, error) if error is not None else Row(path, next(answers))
            for path, error in zip(part.paths, part.errors)]


def _csv_fields(row: Row, k: int, task: Task) -> list[str]:
    return [row.path, *task.answer_fields(row.prediction, k), row.error or ""]


def _json_line(row: Row) -> str:
    if row.prediction is None:
        return json.dumps({"path": row.path, "error": row.error}, ensure_ascii=False)
    return json.dumps(row.prediction.to_dict(), ensure_ascii=False)


def write_csv(path: str | os.PathLike, rows: list[Row], top_k: int,
              task: Task | None = None) -> None:
    """A whole CSV file of ``rows`` with ``top_k`` classes each, as ``--output`` writes
    them (a block of a ``--ray`` run; ``task``: whose answers, default single-label)."""
    task = task or SingleLabel()
    lines = [csv_line(columns(top_k, task))] + [csv_line(_csv_fields(r, top_k, task))
                                                for r in rows]
    with open(path, "w", encoding="utf-8", errors="surrogateescape", newline="") as fh:
        fh.write("".join(lines))


def made_by(clf: Classifier, *, top_k: int, threshold: float | None, tta: bool,
            shard: tuple[int, int] | None = None, model: str = "") -> MadeBy:
    """What answers ``clf`` gives with these options, as a predictions file records it."""
    card = clf.card
    weights = card.sha256 or weights_key(clf.model, card)
    return MadeBy(model=model, weights_sha256=weights, card_sha256=card_sha256(card),
                  top_k=max(1, min(top_k, len(clf.classes))), threshold=threshold, tta=tta,
                  runtime=clf.backend.name,
                  shard=None if shard is None else f"{shard[0]}/{shard[1]}")


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
                    workers: int | None = None, progress: bool = True,
                    shard: tuple[int, int] | None = None, overwrite: bool = False,
                    model: str = "") -> StreamSummary:
    """Predict ``files`` (with ``shard``, its share of them: :func:`select`) into
    ``output`` (.csv or .jsonl), resuming what it already holds when the same model and
    options made it, else stopping with one line (``overwrite``: start afresh).
    ``model``: how the user named the model, for that line."""
    files = select(files, shard)
    now = made_by(clf, top_k=top_k, threshold=threshold, tta=tta, shard=shard, model=model)
    rows_file = RowFile(output, now.top_k, clf.task)
    rows_file.path.parent.mkdir(parents=True, exist_ok=True)
    # one writer at a time: two runs at once would check the file, then both add rows
    with RunLock.acquire(rows_file.path.parent, f".{rows_file.path.name}.lock",
                         what=str(output)):
        return _predict_locked(clf, files, rows_file, now, overwrite, output,
                               top_k=top_k, batch_size=batch_size, tta=tta,
                               threshold=threshold, chunk=chunk, workers=workers,
                               progress=progress)


def _predict_locked(clf: Classifier, files: list[str], rows_file: RowFile, now: MadeBy,
                    overwrite: bool, output: str | os.PathLike, *, top_k: int,
                    batch_size: int, tta: bool, threshold: float | None, chunk: int,
                    workers: int | None, progress: bool) -> StreamSummary:
    if overwrite:
        rows_file.clear()
    seen = rows_file.done(now)
    done = set(seen)
    todo = [f for f in dict.fromkeys(files) if f not in done]
    started = time.monotonic()
    written = errors = 0
    bar = RateBar(len(todo), "predicting", enabled=progress)
    try:
        rows_file.open(now)
        for rows in predict_rows(clf, todo, top_k=top_k, batch_size=batch_size, tta=tta,
                                 threshold=threshold, chunk=chunk, workers=workers):
            rows_file.write([_csv_fields(r, now.top_k, clf.task) for r in rows]
                            if rows_file.fmt == "csv" else [_json_line(r) for r in rows])
            written += len(rows)
            errors += sum(r.error is not None for r in rows)
            bar.advance(len(rows))
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        left = len(todo) - written
        raise CnnkitError(
            f"The disk is full while writing {log.quoted(exc.filename or output)} "
            f"({exc.strerror}): {len(seen) + written:,} rows are in it, {left:,} to go. Free "
            "some space and run the same predict command again: it keeps those rows and "
            "adds the rest.") from None
    finally:
        bar.close()
        rows_file.close()
    return StreamSummary(written, errors, len(files) - len(todo),
                         time.monotonic() - started)
