"""Which image files a prediction's inputs name: files, folders (searched recursively)
and glob patterns, ``**`` included, with hidden files left out where a wildcard found them."""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterable
from pathlib import Path

from cnnkit.base.errors import CnnkitError
from cnnkit.data.decode import is_image_file
from cnnkit.data.scan import is_hidden, scan_images


def expand_inputs(items: Iterable[str]) -> list[str]:
    """Files, folders (searched recursively) and glob patterns -> image file paths."""
    out: list[str] = []
    for item in items:
        path = Path(os.path.expanduser(item))
        if path.is_dir():
            scan = scan_images(path)
            scan.warn()
            found = sorted(scan.files)
            if not found:
                raise CnnkitError(f"No images found in folder {item}.")
            out += found
        elif path.is_file():
            out.append(str(path))
        elif any(ch in item for ch in "*?["):
            pattern = os.path.expanduser(item)
            root = _static_root(pattern)
            matches = _globstar(pattern, root) if "**" in pattern else glob.glob(pattern)
            found = sorted(p for p in matches
                           if os.path.isfile(p) and is_image_file(p)
                           and not _hidden_below(Path(p), root))
            if not found:
                raise CnnkitError(f"No images match {item!r}.")
            out += found
        else:
            raise CnnkitError(f"Image not found: {item}. Pass image files, folders or globs "
                              "such as 'photos/*.jpg'.")
    return out


def _static_root(pattern: str) -> Path | None:
    """The part of a glob pattern before its first wildcard ('shots/2024' of 'shots/2024/*')."""
    static = []
    for part in Path(pattern).parts:
        if any(ch in part for ch in "*?["):
            break
        static.append(part)
    return Path(*static) if static else None


def _globstar(pattern: str, root: Path | None) -> list[str]:
    """The files a ``**`` pattern matches, found by the folder scan (any depth, each folder
    once, so a link that loops or a tree 1,000 folders deep is read as it is) rather than
    by ``glob``, which recurses and follows a loop until the path is too long."""
    scan = scan_images(root if root is not None else ".")
    scan.warn()
    want = Path(pattern).parts
    found = (os.path.normpath(p) if root is None else p for p in scan.files)
    return [p for p in found if _parts_match(Path(p).parts, want)]


def _parts_match(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether path parts match glob pattern parts, ``**`` standing for any number of
    folders (none included), as ``glob(recursive=True)`` reads it."""
    def past_stars(states: set[int]) -> set[int]:
        out, todo = set(states), list(states)
        while todo:
            j = todo.pop()
            if j < len(pattern) and pattern[j] == "**" and j + 1 not in out:
                out.add(j + 1)
                todo.append(j + 1)
        return out

    states = past_stars({0})
    for part in parts:
        states = past_stars({j if pattern[j] == "**" else j + 1 for j in states
                             if j < len(pattern) and (pattern[j] == "**"
                                                      or fnmatch.fnmatchcase(part, pattern[j]))})
        if not states:
            return False
    return len(pattern) in states


def _hidden_below(path: Path, root: Path | None) -> bool:
    """Whether a part of ``path`` that a wildcard matched is hidden (``.x``, ``__MACOSX``).

    Parts the user typed out (``.cache/*.png``) are what they asked for.
    """
    parts = path.parts if root is None else path.parts[len(root.parts):]
    return any(is_hidden(part) for part in parts)
