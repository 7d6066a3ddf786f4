"""Image headers say grey or colour and how big, without decoding; class names say
whether a mirror image is another class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cnnkit.data.probe import mirror_reason, probe_images


def _save(path: Path, mode: str, size: tuple[int, int]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    arr = np.random.default_rng(0).integers(0, 255, (size[1], size[0], channels), np.uint8)
    Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode).save(path)
    return str(path)


def test_grey_files_are_grey_and_one_colour_file_makes_rgb(tmp_path: Path) -> None:
    grey = [_save(tmp_path / f"g{i}.png", "L", (28, 28)) for i in range(4)]
    grey.append(_save(tmp_path / "ga.png", "LA", (28, 28)))
    facts = probe_images(grey)
    assert (facts.channels, facts.side, facts.uniform) == (1, 28, True)
    assert facts.size_text() == "28x28"
    facts = probe_images([*grey, _save(tmp_path / "c.png", "RGB", (40, 30))])
    assert facts.channels == 3 and (facts.smallest, facts.largest) == (28, 30)
    assert facts.side == 28 and not facts.uniform


def test_the_shorter_side_and_a_sample_of_a_long_listing(tmp_path: Path) -> None:
    files = [_save(tmp_path / f"{i}.jpg", "RGB", (120 + i, 90)) for i in range(9)]
    facts = probe_images(files, sample=3)
    assert facts.side == 90 and facts.probed == 3 and facts.total == 9


def test_unreadable_files_are_left_to_the_decoder(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert probe_images([str(bad)]) is None
    assert probe_images([]) is None


def test_mirror_changes_characters_and_sides_not_objects() -> None:
    assert "characters" in mirror_reason([str(d) for d in range(10)])
    assert "characters" in mirror_reason(["a", "b", "d", "p"])
    assert mirror_reason(["one", "two", "three"]) == "the classes are numbers"
    assert "turn_left" in mirror_reason(["turn_left", "turn_right", "straight"])
    assert mirror_reason(["cat", "dog", "cup"]) is None
    assert mirror_reason(["circle", "square", "triangle"]) is None
    assert mirror_reason(["rightwhale", "orca"]) is None  # a word, not a side
