"""Which files a prediction's inputs name: files, folders, globs; hidden files left out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from cnnkit.base.errors import CnnkitError
from cnnkit.runtime.inputs import expand_inputs


def _inputs_tree(root: Path) -> Path:
    for rel in ("a.png", "sub/b.jpg", "sub/deeper/c.webp", ".hidden.png", "sub/.d.png",
                ".ipynb_checkpoints/e.png", "__MACOSX/sub/._f.png", "__MACOSX/g.png",
                "sub/.cache/h.png", "notes.txt"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".txt"):
            path.write_text("x")
        else:
            Image.new("RGB", (8, 8)).save(path)
    return root


def test_folders_are_searched_recursively_without_hidden_files(tmp_path: Path) -> None:
    root = _inputs_tree(tmp_path / "in")
    found = [os.path.relpath(p, root) for p in expand_inputs([str(root)])]
    assert found == ["a.png", "sub/b.jpg", "sub/deeper/c.webp"]


@pytest.mark.parametrize("pattern, expected", [
    ("*.png", ["a.png"]),
    ("*/*.png", []),
    ("**/*.png", ["a.png"]),
    ("**/*", ["a.png", "sub/b.jpg", "sub/deeper/c.webp"]),
    ("*/*", ["sub/b.jpg"]),
    ("sub/*.jpg", ["sub/b.jpg"]),
])
def test_globs_skip_hidden_files_and_folders(tmp_path: Path, pattern: str,
                                             expected: list[str]) -> None:
    root = _inputs_tree(tmp_path / "in")
    if not expected:
        with pytest.raises(CnnkitError, match="No images match"):
            expand_inputs([str(root / pattern)])
        return
    found = [os.path.relpath(p, root) for p in expand_inputs([str(root / pattern)])]
    assert sorted(found) == expected


def test_a_globstar_reads_a_looping_link_once_and_any_depth(tmp_path: Path,
                                                            nested_folders) -> None:
    root = _inputs_tree(tmp_path / "in")
    (root / "sub" / "up").symlink_to("..")  # a loop: glob followed it 40 times
    Image.new("RGB", (8, 8)).save(nested_folders(root / "deep", 1100) / "z.png")
    found = [os.path.relpath(p, root) for p in expand_inputs([str(root / "**" / "*.png")])]
    assert found[:1] == ["a.png"] and found[1].endswith("/d/z.png") and len(found) == 2
    below = [os.path.relpath(p, root) for p in expand_inputs([str(root / "sub" / "**")])]
    assert below[:2] == ["sub/b.jpg", "sub/deeper/c.webp"]  # then sub/up/..., once each
    assert len({os.path.realpath(root / p) for p in below}) == len(below) == 4


def test_an_explicit_hidden_file_is_still_predicted(tmp_path: Path) -> None:
    root = _inputs_tree(tmp_path / "in")
    assert expand_inputs([str(root / ".hidden.png")]) == [str(root / ".hidden.png")]


def test_input_mistakes(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="Image not found"):
        expand_inputs([str(tmp_path / "nope.png")])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(CnnkitError, match="No images found in folder"):
        expand_inputs([str(tmp_path / "empty")])
    with pytest.raises(CnnkitError, match="No images match"):
        expand_inputs([str(tmp_path / "*.jpg")])
