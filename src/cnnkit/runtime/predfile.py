"""A predictions file (``cnnkit predict --output``): its rows, and what made them.

Rows are CSV or JSON Lines by the file's suffix, appended and flushed chunk by chunk.
Beside the file, ``<name>.cnnkit.json`` records what made its rows: the model (its
weights' sha256, and its classes and input) and every option that changes an answer
(top-k, threshold, TTA, the runtime, the shard). Running again adds the missing rows
only when all of that is the same; otherwise it stops with one line naming each
difference, so that a file never holds two models' (or two thresholds') answers.

Reading a file back for a resume keeps its whole rows and cuts what a crash left
half-written, also inside a quoted CSV field that holds a line break (a file name with
a newline); a row that is not one of ours stops the resume with its line number.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from cnnkit._version import __version__
from cnnkit.artifacts.modelcard import ModelCard
from cnnkit.base.atomic import write_json
from cnnkit.base.errors import CnnkitError
from cnnkit.tasks.base import Task
from cnnkit.tasks.single_label import SingleLabel

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
RECORD_FORMAT = "cnnkit-predictions"
RECORD_SUFFIX = ".cnnkit.json"
MAX_RECORD_BYTES = 64 * 1024  # a record is a few hundred bytes
AFRESH = "--overwrite to start it afresh, or choose another --output"


def record_path(output: str | os.PathLike) -> Path:
    """Where the record of ``output`` lives: ``preds.csv`` -> ``preds.csv.cnnkit.json``."""
    output = Path(output)
    return output.with_name(output.name + RECORD_SUFFIX)


def card_sha256(card: ModelCard) -> str:
    """A sha256 of what, besides the weights, decides a model's answers: its
    architecture, class names, input and task (an edited model.json changes them; an int8
    file has an unknown rule of its own)."""
    what = {"architecture": card.architecture.to_dict(), "classes": list(card.classes),
            "input": card.preprocess.to_dict()}
    if card.task != SingleLabel():  # files made before tasks existed keep their hash
        what["task"] = card.task.card_fields()
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class MadeBy:
    """What made a predictions file's rows: the model and the options that change answers."""

    model: str  # as the user named it (for messages only)
    weights_sha256: str
    card_sha256: str
    top_k: int  # as applied: at most the number of classes
    threshold: float | None
    tta: bool
    runtime: str  # the backend that computed the probabilities (torch, onnx)
    shard: str | None  # "I/N"

    def differences(self, now: MadeBy) -> list[str]:
        """Each way ``now`` would answer otherwise than the rows made by ``self``."""
        out = []
        if self.weights_sha256 != now.weights_sha256:
            out.append(f"by another model ({_model(self)}; this run: {_model(now)})")
        elif self.card_sha256 != now.card_sha256:
            out.append(f"by a model with other classes, input, calibration or unknown rule "
                       f"(the same weights, another model card: {self.model or 'unnamed'})")
        for flag, then, this in (("--top-k", self.top_k, now.top_k),
                                 ("--threshold", self.threshold, now.threshold),
                                 ("--tta", self.tta, now.tta),
                                 ("--backend", self.runtime, now.runtime),
                                 ("--shard", self.shard, now.shard)):
            if then != this:
                out.append(f"with {_option(flag, then)} (this run: {_option(flag, this)})")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": RECORD_FORMAT, "format_version": 1, "cnnkit_version": __version__,
                **asdict(self)}

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> MadeBy:
        """Parse a record, checking each field's type (a damaged record is refused)."""
        if not isinstance(doc, dict) or doc.get("format") != RECORD_FORMAT:
            raise CnnkitError(f"{where} is not a record of cnnkit predict; pass {AFRESH}.")
        kinds = {"model": str, "weights_sha256": str, "card_sha256": str, "top_k": int,
                 "threshold": (float, int, type(None)), "tta": bool, "runtime": str,
                 "shard": (str, type(None))}
        values = {}
        for f in fields(cls):
            value = doc.get(f.name)
            if not isinstance(value, kinds[f.name]) or (
                    f.name in ("top_k", "threshold") and isinstance(value, bool)):
                raise CnnkitError(f"{where} is damaged ({f.name}: {value!r:.60}); pass "
                                  f"{AFRESH}.")
            values[f.name] = float(value) if f.name == "threshold" and value is not None \
                else value
        return cls(**values)


def parse_record(raw: bytes, where: str) -> MadeBy:
    """A record's bytes, checked (a damaged or foreign record is refused)."""
    try:
        if len(raw) > MAX_RECORD_BYTES:
            raise ValueError("too large")
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise CnnkitError(f"{where} is damaged (not a small JSON file); pass "
                          f"{AFRESH}.") from None
    return MadeBy.from_dict(doc, where)


def check_made_by(where: str, before: MadeBy | None, now: MadeBy, rows: int,
                  record: str, afresh: str = AFRESH) -> None:
    """Stop, naming each difference, unless the ``rows`` already in ``where`` were made
    as ``now`` would make them (``before``: their record, None when it is missing)."""
    if before is None:
        raise CnnkitError(f"{where} holds {rows:,} rows but no record of the model and "
                          f"options that made them ({record} is missing), so new rows could "
                          f"differ from them. Pass {afresh}.")
    diffs = before.differences(now)
    if diffs:
        raise CnnkitError(f"{where} was written {'; '.join(diffs)}: this run's rows would "
                          f"not match its {rows:,} rows. Pass the same model and options to "
                          f"resume it, {afresh}.")


def _model(made: MadeBy) -> str:
    name = f"{made.model}, " if made.model else ""
    return f"{name}weights sha256 {made.weights_sha256[:12]}"


def _option(flag: str, value: Any) -> str:
    if flag == "--tta":
        return "--tta" if value else "no --tta"
    return f"no {flag}" if value is None else f"{flag} {value:g}" if isinstance(
        value, float) else f"{flag} {value}"


def columns(top_k: int, task: Task | None = None) -> list[str]:
    """The CSV columns of rows with ``top_k`` classes each, as ``task`` (default:
    single-label) answers."""
    return (task or SingleLabel()).answer_columns(top_k)


class RowFile:
    """An output file of prediction rows: CSV or JSON Lines by its suffix; resumable."""

    def __init__(self, path: str | os.PathLike, top_k: int, task: Task | None = None) -> None:
        self.path = Path(path)
        fmt = FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise CnnkitError(f"--output must end in .csv or .jsonl. Received: {self.path}")
        self.fmt, self.k = fmt, top_k
        self.header = columns(top_k, task)
        self.record = record_path(self.path)
        self._end = 0  # where the whole rows end
        self._fh: io.TextIOWrapper | None = None

    # --- what is there -------------------------------------------------------------

    def done(self, now: MadeBy) -> list[str]:
        """The paths of the whole rows already in the file, in order, when ``now`` would
        make them as they are (else a :class:`CnnkitError` naming each difference).
        Nothing is changed here: a row cut short by a crash is left for :meth:`open`."""
        self._end = 0
        if self.path.is_dir():
            raise CnnkitError(f"--output {self.path} is a folder; pass a file name ending in "
                              ".csv or .jsonl.")
        if not self.path.is_file():
            return []
        with open(self.path, "rb") as fh:
            data = fh.read()
        end = (_csv_end if self.fmt == "csv" else _jsonl_end)(data)
        text = data[:end].decode("utf-8", errors="surrogateescape")
        records = self._csv_records(text) if self.fmt == "csv" else self._jsonl_records(text)
        if (self.fmt == "csv" and len(records) <= 1) or not records:
            if data and not self._looks_ours(data):
                raise CnnkitError(f"{self.path} is not an output of cnnkit predict (it does "
                                  f"not start as one); choose another --output, or pass "
                                  f"--overwrite to replace it.")
            return []  # no rows yet: the file is written anew
        self._check_made_by(now, len(records) - (self.fmt == "csv"))
        self._end = end
        return self._csv_paths(records) if self.fmt == "csv" else self._jsonl_paths(records)

    def _looks_ours(self, data: bytes) -> bool:
        """Whether a file without whole rows begins as this module writes one (a header,
        or a JSON row cut short), so that writing it anew loses nothing of anyone's."""
        if self.fmt == "jsonl":
            return data.startswith(b'{"path": ') or b'{"path": '.startswith(data)
        first, *rest = data.split(b"\n", 1)
        ours = first.startswith(b"path,label,probability,") and first.endswith(b",error")
        return ours if rest else ours or first.startswith(b"path,label,probability,") or \
            ",".join(self.header).encode().startswith(first)

    def _csv_records(self, text: str) -> list[list[str]]:
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            return list(reader)
        except csv.Error as exc:
            raise CnnkitError(f"{self.path} line {reader.line_num} is not CSV as cnnkit "
                              f"writes it ({exc}); pass {AFRESH}.") from None

    def _csv_paths(self, records: list[list[str]]) -> list[str]:
        if records[0] != self.header:
            raise CnnkitError(f"{self.path} has other columns than this command writes "
                              f"(it is not a cnnkit predict output, or was edited); pass "
                              f"{AFRESH}.")
        for n, row in enumerate(records[1:], 2):
            if len(row) != len(self.header):
                raise CnnkitError(f"{self.path} record {n} is not a whole prediction row "
                                  f"({len(row)} fields, not {len(self.header)}); it was "
                                  f"changed by hand or by another program. Pass {AFRESH}.")
        return [row[0] for row in records[1:]]

    @staticmethod
    def _jsonl_records(text: str) -> list[tuple[int, str]]:
        return [(n, line) for n, line in enumerate(text.split("\n"), 1) if line.strip()]

    def _jsonl_paths(self, records: list[tuple[int, str]]) -> list[str]:
        paths = []
        for n, line in records:
            try:
                row = json.loads(line)
                path = row["path"]
                if not isinstance(path, str):
                    raise TypeError
            except (ValueError, KeyError, TypeError):
                raise CnnkitError(f"{self.path} line {n} is not a prediction row; it is not "
                                  f"an output of cnnkit predict. Pass {AFRESH}.") from None
            paths.append(path)
        return paths

    def made_by(self) -> MadeBy | None:
        """The record of what made the rows; None when there is none."""
        if not self.record.is_file():
            return None
        try:
            with open(self.record, "rb") as fh:
                raw = fh.read(MAX_RECORD_BYTES + 1)
        except OSError:
            raw = b""
        return parse_record(raw, str(self.record))

    def _check_made_by(self, now: MadeBy, rows: int) -> None:
        check_made_by(str(self.path), self.made_by(), now, rows, self.record.name)

    # --- writing -------------------------------------------------------------------

    def clear(self) -> None:
        """Start afresh (``--overwrite``): the rows and their record removed."""
        self.path.unlink(missing_ok=True)
        self.record.unlink(missing_ok=True)
        self._end = 0

    def open(self, made_by: MadeBy) -> None:
        """Record ``made_by``, cut what follows the whole rows that :meth:`done` kept (a
        half-written row; everything when it kept none) and open the file for appending."""
        try:
            same = self.made_by() == made_by
        except CnnkitError:
            same = False
        if not same:
            write_json(self.record, made_by.to_dict())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = self._end == 0
        if self.path.is_file() and self.path.stat().st_size > self._end:
            with open(self.path, "r+b") as fh:
                fh.truncate(self._end)
        self._fh = open(self.path, "a", encoding="utf-8",  # noqa: SIM115 (close() closes)
                        errors="surrogateescape", newline="")
        if fresh and self.fmt == "csv":
            self._write([self.header])

    def write(self, rows: list[list[str]] | list[str]) -> None:
        """Append ``rows`` (CSV fields, or JSON lines) and flush them in one write."""
        self._write(rows)

    def _write(self, rows: list[Any]) -> None:
        assert self._fh is not None
        lines = [csv_line(row) for row in rows] if self.fmt == "csv" else [
            line + "\n" for line in rows]
        self._fh.write("".join(lines))
        self._fh.flush()

    def close(self) -> None:
        """Close the file; what could not be written (a full disk) is dropped, not raised
        twice: the rows that reached the file stay, a half row is cut next time."""
        fh, self._fh = self._fh, None
        if fh is None:
            return
        with contextlib.suppress(OSError):
            fh.close()


def csv_line(fields: list[str]) -> str:
    """One CSV record ending in ``\\n``, with every field that holds a quote, a comma,
    ``\\n`` or ``\\r`` quoted (the csv module quotes only the line terminator's own
    characters: with ``\\n`` alone, a ``\\r`` in a file name would end the record)."""
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\r\n").writerow(fields)
    return buf.getvalue()[:-2] + "\n"


def _jsonl_end(data: bytes) -> int:
    """Where the whole lines end: after the last newline (JSON escapes its own)."""
    return data.rfind(b"\n") + 1


def _csv_end(data: bytes) -> int:
    """Where the whole CSV records end: after the last line break outside quotes.

    cnnkit's writer quotes every field that holds a quote, comma or line break and
    doubles quotes inside, so a line break is outside quotes exactly when an even
    number of quote characters precede it. Only the tail after the last candidate is
    counted, so a long file costs one pass.
    """
    quotes_after = 0
    end = len(data)
    total = data.count(b'"')
    while True:
        nl = data.rfind(b"\n", 0, end)
        if nl < 0:
            return 0
        quotes_after += data.count(b'"', nl + 1, end)
        if (total - quotes_after) % 2 == 0:
            return nl + 1
        end = nl
