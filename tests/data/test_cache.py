"""The decode cache: epochs and loads after the first open no image file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnkit.data import cache
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.sources import load_splits

PRE = Preprocess(16, 3, (0.5,) * 3, (0.5,) * 3)


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file name PIL.Image.open is asked for."""
    seen: list[str] = []
    real = Image.open

    def counting(fp, *args, **kwargs):
        seen.append(str(fp))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting)
    return seen


def test_a_second_load_opens_no_image_file(make_tree, tmp_path: Path,
                                           opens: list[str]) -> None:
    root = make_tree(tmp_path / "d", per_class=5, size=20)
    first = load_splits(str(root), PRE, val_fraction=0.2, test_fraction=0.2)
    assert len(opens) == 15
    opens.clear()
    second = load_splits(str(root), PRE, val_fraction=0.2, test_fraction=0.2)
    assert opens == []
    assert torch.equal(first.train.images, second.train.images)
    assert first.train.paths == second.train.paths
    cached = list(Path(os.environ["CNNKIT_CACHE"], "decoded").glob("*.npy"))
    assert cached, "the cache lives under $CNNKIT_CACHE"


def test_epochs_read_no_file(make_tree, tmp_path: Path, opens: list[str]) -> None:
    from cnnkit.data.loader import BatchLoader

    root = make_tree(tmp_path / "d", per_class=4, size=20)
    s = load_splits(str(root), PRE, val_fraction=0, test_fraction=0)
    opens.clear()
    loader = BatchLoader(s.train, PRE, 4, torch.device("cpu"), train=True,
                         augment=("flip", "crop"), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        batches = list(loader)
        assert sum(len(y) for _, y in batches) == 12
        assert batches[0][0].shape == (4, 3, 16, 16)
    assert opens == []


def test_a_changed_file_is_decoded_again(make_tree, tmp_path: Path, opens: list[str]) -> None:
    root = make_tree(tmp_path / "d", per_class=3, size=20)
    load_splits(str(root), PRE, val_fraction=0, test_fraction=0)
    target = root / "circle" / "001.png"
    Image.new("RGB", (20, 20), (255, 255, 255)).save(target)
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 10**9))
    opens.clear()
    s = load_splits(str(root), PRE, val_fraction=0, test_fraction=0)
    assert len(opens) == 9
    assert s.train.images[s.train.paths.index(str(target))].min() == 255


def test_other_decode_settings_get_their_own_cache(make_tree, tmp_path: Path,
                                                   opens: list[str]) -> None:
    root = make_tree(tmp_path / "d", per_class=2, size=20)
    load_splits(str(root), PRE, val_fraction=0, test_fraction=0)
    opens.clear()
    grey = load_splits(str(root), Preprocess(12, 1, (0.5,), (0.5,)), val_fraction=0,
                       test_fraction=0)
    assert len(opens) == 6 and tuple(grey.train.images.shape) == (6, 1, 12, 12)


def test_clear_empties_the_cache(make_tree, tmp_path: Path) -> None:
    load_splits(str(make_tree(tmp_path / "d", per_class=2, size=20)), PRE, val_fraction=0,
                test_fraction=0)
    assert cache.clear() >= 2
    assert not any(Path(os.environ["CNNKIT_CACHE"], "decoded").iterdir())


@pytest.mark.parametrize("damage", ["meta-not-json", "meta-wrong-count", "npy-cut",
                                    "npy-other-shape"])
def test_a_damaged_cache_entry_is_decoded_again(make_tree, tmp_path: Path, damage: str) -> None:
    import numpy as np

    root = make_tree(tmp_path / "d", per_class=3, size=20)
    paths = tuple(sorted(str(p) for p in root.rglob("*.png")))
    first, ok, _ = cache.decode_files(paths, 3, 16)
    folder = cache.cache_dir("decoded")
    npy = next(folder.glob("*.npy"))
    meta = npy.with_suffix(".json")
    if damage == "meta-not-json":
        meta.write_text("{")
    elif damage == "meta-wrong-count":
        meta.write_text('{"ok": [0, 1], "errors": [], "paths": 9}')
    elif damage == "npy-cut":
        npy.write_bytes(npy.read_bytes()[:100])
    else:
        np.save(npy, np.zeros((len(ok), 3, 8, 8), dtype=np.uint8))
    again, ok_again, errors = cache.decode_files(paths, 3, 16)
    assert torch.equal(again, first) and ok_again == ok and errors == []
