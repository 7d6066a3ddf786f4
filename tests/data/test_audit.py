"""cnnkit check's audit: counts, unreadable files, copies, leakage, near-copies, links."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from cnnkit.data.audit import audit
from cnnkit.data.file_index import index_path
from cnnkit.data.sources import describe


def _noise(path: Path, seed: int, size: int = 64) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def _split_tree(root: Path, n: int = 4) -> Path:
    seed = 0
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            for i in range(n):
                seed += 1
                _noise(root / split / cls / f"{i}.png", seed)
    return root


def _what(result) -> str:
    return "\n".join(f"{f.level}: {f.what}" for f in result.findings)


def test_a_clean_tree_is_ready_to_train(tmp_path: Path) -> None:
    result = audit(describe(str(_split_tree(tmp_path))), img_size=64)
    assert result.trainable and not result.warnings, _what(result)
    assert result.counts == {"train": [4, 4], "test": [4, 4]}
    assert result.verdict.startswith("ready to train")


def test_leaks_labels_and_unreadable_files_are_found_with_their_names(tmp_path: Path) -> None:
    root = _split_tree(tmp_path)
    (root / "test" / "dog" / "leak.png").write_bytes((root / "train" / "dog" / "0.png")
                                                     .read_bytes())
    (root / "train" / "cat" / "twice.png").write_bytes((root / "train" / "dog" / "1.png")
                                                       .read_bytes())
    (root / "train" / "cat" / "empty.png").write_bytes(b"")
    (root / "train" / "cat" / "cut.png").write_bytes((root / "train" / "cat" / "0.png")
                                                     .read_bytes()[:300])
    (root / "train" / "dog" / "self").symlink_to(".")
    result = audit(describe(str(root)), img_size=64)
    assert result.trainable
    text = _what(result)
    assert "1 image(s) are in more than one of train/val/test" in text
    assert "1 image(s) appear under two or more labels" in text
    assert "2 file(s) cannot be used" in text and "1 folder link(s)" in text
    leak = result.stats["exact_duplicates"]["across_splits"][0]
    assert {(d["split"], Path(d["file"]).name) for d in leak} == {("train", "0.png"),
                                                                  ("test", "leak.png")}
    reasons = {Path(u["path"]).name: u["reason"] for u in result.stats["unreadable"]}
    assert reasons["empty.png"].startswith("empty file")
    assert "cut.png" in reasons
    assert result.counts["train"] == [5, 4]  # twice.png counts; the broken two do not


def test_a_class_without_usable_images_cannot_be_trained_on(tmp_path: Path) -> None:
    _noise(tmp_path / "cat" / "0.png", 1)
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "0.png").write_bytes(b"\x89PNG not really")
    result = audit(describe(str(tmp_path)), img_size=64)
    assert not result.trainable
    assert "'dog' have no usable images" in result.problems[0].what


def test_small_images_imbalance_and_copies_before_a_random_split(tmp_path: Path) -> None:
    for i in range(9):
        _noise(tmp_path / "cat" / f"{i}.png", i, size=16)
    for i in range(2):
        _noise(tmp_path / "dog" / f"{i}.png", 100 + i)
    (tmp_path / "dog" / "copy.png").write_bytes((tmp_path / "dog" / "0.png").read_bytes())
    text = _what(audit(describe(str(tmp_path)), img_size=224))
    assert "9 image(s) are far smaller than the model's 224 px input" in text
    assert "classes are imbalanced: 'cat' has 9 images, 'dog' 3 (3.0x)" in text
    assert "1 extra copies of 1 image(s) within their class: a random split" in text


def test_a_second_check_reads_only_changed_files(tmp_path: Path) -> None:
    root = _split_tree(tmp_path)
    audit(describe(str(root)), img_size=64)
    index = index_path(root)
    before = index.stat().st_mtime_ns
    time.sleep(0.01)
    audit(describe(str(root)), img_size=64)
    assert index.stat().st_mtime_ns == before  # nothing new to remember
    victim = root / "train" / "cat" / "0.png"
    victim.write_bytes(b"")
    os.utime(victim, ns=(time.time_ns(), time.time_ns()))
    result = audit(describe(str(root)), img_size=64)
    assert [Path(u["path"]).name for u in result.stats["unreadable"]] == ["0.png"]


def test_a_builtin_set(tmp_path: Path) -> None:
    result = audit(describe("shapes:count=60,size=16"), img_size=16)
    assert result.trainable and set(result.counts) == {"train", "test"}
    assert sum(result.counts["train"]) == 60


def test_class_names_that_differ_only_in_case_or_punctuation_are_a_warning(tmp_path: Path
                                                                            ) -> None:
    seed = 100
    for cls in ("Coat", "coat", "T-shirt", "t_shirt", "bag"):
        for i in range(3):
            seed += 1
            _noise(tmp_path / "csv" / f"{cls}-{i}.png", seed)
    rows = [f"{p.name},{p.name.rsplit('-', 1)[0]}" for p in sorted((tmp_path / "csv").iterdir())]
    (tmp_path / "labels.csv").write_text("path,label\n" + "\n".join(
        f"csv/{r}" for r in rows) + "\n")
    result = audit(describe(str(tmp_path / "labels.csv")), img_size=64)
    alike = [f for f in result.warnings if "differ only in case" in f.what]
    assert len(alike) == 1, _what(result)
    assert "2 group(s) of classes" in alike[0].what
    assert "'Coat' / 'coat'" in alike[0].what and "'T-shirt' / 't_shirt'" in alike[0].what
    assert "bag" not in alike[0].what and result.trainable
