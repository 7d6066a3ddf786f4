"""``cnnkit check``: audit a data set before training on it.

Counts per class and split, files that cannot be used and why, exact copies (within a
class, under two labels, across train/val/test), images far smaller than the model's
input, mixed modes and sizes, imbalance and symlinks that loop or lead outside the
folder; then a verdict in plain words. Near-copies need the images' codes
(:mod:`cnnkit.curate.near`). A *problem* means the data cannot be trained on as it
is; a *warning* means it can, but the result will be worse or its test score
misleading until it is fixed.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from cnnkit.base.errors import CnnkitError
from cnnkit.data.audit_result import Audit, Finding
from cnnkit.data.builtin import load_builtin
from cnnkit.data.file_index import FileFacts, file_facts
from cnnkit.data.scan import Scan
from cnnkit.data.source import DataSource

__all__ = ["Audit", "Finding", "audit", "audit_builtin", "audit_files"]

SMALL_FRACTION = 4  # an image whose shorter side is under 1/4 of the input is "far smaller"
IMBALANCE_RATIO = 3.0  # largest / smallest class from which training reweights the loss
EXAMPLES = 5


@dataclass(frozen=True)
class _Item:
    split: str
    label: tuple[int, ...]  # the image's class, or its labels (multi-label; maybe none)
    name: str  # a path, or split#index for a built-in set
    digest: str
    facts: FileFacts | None = None


def audit(source: DataSource, *, img_size: int, decode: bool = True,
          progress: bool = True) -> Audit:
    """Audit ``source``, as its kind does (a built-in set's images, or the listed files).
    ``decode=False`` reads hashes and headers only (the short check ``train`` runs;
    training's own decode reports unreadable files). Near-copies need the images' codes:
    :mod:`cnnkit.curate.near` (``cnnkit check --near``)."""
    return source.audit(img_size=img_size, decode=decode, progress=progress)


def audit_builtin(source: DataSource, *, img_size: int) -> Audit:
    """Audit a built-in set: its counts, copies and balance."""
    result = Audit(source.spec, source.kind, img_size)
    _verdicts(result, _builtin_items(source, result), presplit=source.presplit)
    return result


def audit_files(source: DataSource, *, img_size: int, decode: bool = True,
                progress: bool = True) -> Audit:
    """Audit a folder's or a CSV's files in one pass: their listing, their facts (the
    index keeps them), then what the copies, the balance and the labels say."""
    result = Audit(source.spec, source.kind, img_size)
    items = _file_items(source, result, decode=decode, progress=progress)
    if items is not None:
        _verdicts(result, items, presplit=source.presplit)
    return result


def _verdicts(result: Audit, items: list[_Item], *, presplit: bool) -> None:
    _duplicates(result, items, presplit=presplit)
    _balance(result)
    _unlabelled(result)
    _alike_names(result)


def _alike_names(result: Audit) -> None:
    """Class names that differ only in case, spaces, hyphens or underscores ('Coat' and
    'coat', 'T-shirt' and 't shirt'): most often one class typed two ways, which trains
    as two classes that each lose half the images."""
    groups: dict[str, list[str]] = {}
    for name in result.classes:
        key = "".join(c for c in name.casefold() if c.isalnum())
        groups.setdefault(key, []).append(name)
    alike = [names for names in groups.values() if len(names) > 1]
    if alike:
        shown = "; ".join(" / ".join(repr(n) for n in names) for names in alike[:EXAMPLES])
        what = "labels" if result.multilabel else "classes"
        result.add("warning", f"{len(alike)} group(s) of {what} differ only in case or "
                   f"punctuation: {shown}",
                   advice=f"If they are one class, name it one way; they train as separate "
                          f"{what}.")


def _label_set(label: Any, multilabel: bool) -> tuple[int, ...]:
    """A listing's label (a class index, or label indices) as a tuple of indices."""
    return tuple(label) if multilabel else (int(label),)


def _unlabelled(result: Audit) -> None:
    if not result.multilabel:
        return
    none = sum(result.unlabelled.values())
    if none:
        where = ", ".join(f"{n:,} {s}" for s, n in result.unlabelled.items()
                          if n and s != "all")
        result.add("note", f"{none:,} image(s) have no label{f' ({where})' if where else ''}: "
                   "multi-label training uses them as images where every label is absent")


def _file_items(source: DataSource, result: Audit, *, decode: bool,
                progress: bool) -> list[_Item] | None:
    report = Scan()
    try:
        listings = source.listings(report)
    except CnnkitError as exc:
        result.add("problem", str(exc))
        return None
    _links(result, report)
    first = next(iter(listings.values()))
    result.classes = list(first.classes)
    result.multilabel = first.multilabel
    paths = list(dict.fromkeys(p for lst in listings.values() for p in lst.paths))
    facts = file_facts(paths, source.root if source.root.is_dir() else source.root.parent,
                       decode=decode, near=False, progress=progress)
    items: list[_Item] = []
    bad: list[tuple[str, str]] = []
    for split, lst in listings.items():
        counts = [0] * len(lst.classes)
        none = used = 0
        for path, label in zip(lst.paths, lst.labels):
            f = facts[path]
            if f.error is not None:
                bad.append((path, f.error))
                continue
            labels = _label_set(label, lst.multilabel)
            for k in labels:
                counts[k] += 1
            none += not labels
            used += 1
            items.append(_Item(split, labels, path, f.digest, f))
        result.counts[split] = counts
        result.images[split] = used
        result.unlabelled[split] = none
    _unreadable(result, bad)
    _classes_usable(result, "train" if "train" in result.counts else "all")
    _pixels(result, items)
    return items


def _builtin_items(source: DataSource, result: Audit) -> list[_Item]:
    _, train, test = load_builtin(source.spec)
    result.classes = list(train.classes)
    result.multilabel = train.multilabel
    items = []
    for split, part in (("train", train), ("test", test)):
        if part is None:
            continue
        result.counts[split] = part.class_counts()
        result.images[split] = len(part)
        result.unlabelled[split] = part.unlabelled()
        arr = part.images.numpy()
        labels = ([tuple(i for i, v in enumerate(row) if v > 0.5) for row in part.labels.tolist()]
                  if part.multilabel else [(y,) for y in part.labels.tolist()])
        for i in range(len(arr)):
            digest = hashlib.blake2b(arr[i].tobytes(), digest_size=16).hexdigest()
            items.append(_Item(split, labels[i], f"{split}#{i}", digest, None))
    c, h, w = train.images.shape[1:]
    result.stats["modes"] = {"L" if c == 1 else "RGB": len(items)}
    result.stats["sizes"] = {f"{w}x{h}": len(items)}
    _classes_usable(result, "train")
    return items


def _links(result: Audit, report: Scan) -> None:
    if report.loops:
        result.add("warning", f"{len(report.loops)} folder link(s) lead to a folder read "
                   "elsewhere (a symlink loop, a link into another class folder, or a second "
                   "link to the same folder); each folder is read once, under the class it "
                   "lies in", report.loops,
                   "Remove the links (find DATA -type l) so the tree is what it looks like.")
    if report.outside:
        result.add("note", f"{len(report.outside)} link(s) lead outside the data folder; their "
                   "images are used, but a copy of the folder will not have them",
                   report.outside)
    if report.skipped:
        _unreadable(result, report.skipped)


def _unreadable(result: Audit, bad: list[tuple[str, str]]) -> None:
    if not bad:
        return
    reasons = Counter(reason.split(" (")[0] for _, reason in bad)
    summary = ", ".join(f"{n} {r}" for r, n in reasons.most_common(4))
    result.add("warning", f"{len(bad)} file(s) cannot be used and will be skipped ({summary})",
               [f"{p}: {r}" for p, r in bad],
               "Delete or re-export them; training skips them, so each is a lost example.")
    result.stats.setdefault("unreadable", []).extend(
        {"path": p, "reason": r} for p, r in bad)


def _classes_usable(result: Audit, split: str) -> None:
    counts = result.counts.get(split, [])
    if result.multilabel and not result.classes:
        result.add("problem", "no image has a label",
                   advice="Give images labels: 'path,labels' rows such as 'a.jpg,cat|dog'.")
    elif len(result.classes) < 2 and not result.multilabel:
        result.add("problem", f"only {len(result.classes)} class: a classifier needs at "
                   "least two", advice="Add a sub-folder (or CSV label) per class.")
    empty = [c for c, n in zip(result.classes, counts) if n == 0]
    if empty:
        result.add("problem", f"class(es) {', '.join(map(repr, empty))} have no usable "
                   f"{'training ' if split == 'train' else ''}images",
                   advice="Add readable images to them, or remove those classes.")


def _pixels(result: Audit, items: list[_Item]) -> None:
    facts = [i.facts for i in items if i.facts is not None]
    if not facts:
        return
    modes = Counter(f.mode for f in facts)
    sizes = Counter(f"{f.width}x{f.height}" for f in facts)
    result.stats["modes"] = dict(modes.most_common())
    result.stats["sizes"] = dict(sizes.most_common(10))
    result.stats["distinct_sizes"] = len(sizes)
    sides = [min(f.width, f.height) for f in facts]
    result.stats["smallest_side"], result.stats["largest_side"] = min(sides), max(sides)
    if len(modes) > 1:
        shown = ", ".join(f"{m} {n}" for m, n in modes.most_common())
        result.add("note", f"mixed image modes ({shown}); each is converted on loading "
                   "(grey, palette, CMYK, 16-bit and transparency handled)")
    if len(sizes) > 1:
        result.add("note", f"{len(sizes)} different image sizes, shorter sides "
                   f"{min(sides)} to {max(sides)} px; each is resized to "
                   f"{result.img_size}x{result.img_size}")
    limit = result.img_size / SMALL_FRACTION
    small = [i.name for i in items if i.facts and min(i.facts.width, i.facts.height) < limit]
    if small:
        result.add("warning", f"{len(small)} image(s) are far smaller than the model's "
                   f"{result.img_size} px input (shorter side under {limit:g} px) and will "
                   "be blown up and blurry", small,
                   "Use a smaller --img-size, or replace them with larger images.")


def _groups(items: list[_Item], key: str) -> list[list[_Item]]:
    by: dict[Any, list[_Item]] = defaultdict(list)
    for it in items:
        by[getattr(it, key)].append(it)
    return [g for g in by.values() if len(g) > 1]


def _duplicates(result: Audit, items: list[_Item], *, presplit: bool) -> None:
    groups = _groups(items, "digest")
    labels = [g for g in groups if len({i.label for i in g}) > 1]
    splits = [g for g in groups if len({i.split for i in g}) > 1]
    within = [g for g in groups if len({i.label for i in g}) == 1
              and len({i.split for i in g}) == 1]
    result.stats["exact_duplicates"] = {
        "groups": len(groups), "files": sum(len(g) for g in groups),
        "across_classes": [_describe(result, g) for g in labels],
        "across_splits": [_describe(result, g) for g in splits],
        "within_class": [_describe(result, g) for g in within]}
    if labels:
        result.add("warning", f"{len(labels)} image(s) appear under two or more labels "
                   "(identical files)", _examples(result, labels),
                   "Decide each image's class and delete the other copies.")
    if splits:
        result.add("warning", f"{len(splits)} image(s) are in more than one of train/val/test "
                   "(identical files): the test score is inflated (leakage)",
                   _examples(result, splits),
                   "Delete the copies from val/ and test/ (or from train/).")
    if within:
        extra = sum(len(g) - 1 for g in within)
        tail = (": a random split can put one copy in training and another in the test "
                "set, inflating the test score" if not presplit else "")
        result.add("warning" if not presplit else "note",
                   f"{extra} extra copies of {len(within)} image(s) within their class{tail}",
                   _examples(result, within), "Delete the extra copies.")


def _names(result: Audit, label: tuple[int, ...]) -> str:
    """A class name, or a label set written as in a CSV (``cat|dog``; empty: none)."""
    return "|".join(result.classes[k] for k in label)


def _describe(result: Audit, group: list[_Item]) -> list[dict[str, str]]:
    return [{"file": i.name, "label": _names(result, i.label), "split": i.split}
            for i in group]


def _examples(result: Audit, groups: list[list[_Item]]) -> list[str]:
    return [" = ".join(f"{i.name} ({_names(result, i.label) or 'no label'}, {i.split})"
                       for i in g) for g in groups]


def _balance(result: Audit) -> None:
    split = "train" if "train" in result.counts else "all"
    counts = result.counts.get(split)
    if not counts or min(counts) == 0:
        return
    ratio = max(counts) / min(counts)
    result.stats["imbalance"] = round(ratio, 2)
    if ratio >= IMBALANCE_RATIO:
        big = result.classes[counts.index(max(counts))]
        small = result.classes[counts.index(min(counts))]
        result.add("warning", f"classes are imbalanced: {big!r} has {max(counts):,} images, "
                   f"{small!r} {min(counts):,} ({ratio:.1f}x)",
                   advice="Training weights the loss by class automatically (--imbalance); "
                          "more images of the small classes help most.")
