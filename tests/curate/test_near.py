"""Near-duplicates: planted copies among look-alike Fashion-MNIST items, and the command."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance

from cnnkit.cli import main
from cnnkit.curate.near import detail_match
from cnnkit.data.fashion_mnist import load

LOOK_ALIKE = {0: "T-shirt", 2: "Pullover", 6: "Shirt"}


def _tree(root: Path) -> dict[str, str]:
    """8 train and 3 test items of 3 look-alike classes, and three planted copies:
    resized into test/, brightened under another class, cropped within its class."""
    x, y, tx, ty = load()
    rng = np.random.default_rng(0)
    for split, xs, ys, n in (("train", x, y, 8), ("test", tx, ty, 3)):
        for c, name in LOOK_ALIKE.items():
            (root / split / name).mkdir(parents=True)
            for i in rng.choice(np.flatnonzero(ys == c), n, replace=False):
                Image.fromarray(xs[i]).save(root / split / name / f"{i}.png")
    src = sorted((root / "train" / "Pullover").iterdir())
    a, b, c = (Image.open(p) for p in src[:3])
    a.resize((56, 56), Image.Resampling.BICUBIC).save(root / "test" / "Pullover" / "big.png")
    buf = io.BytesIO()
    ImageEnhance.Brightness(b).enhance(1.3).save(buf, format="JPEG", quality=70)
    Image.open(buf).save(root / "train" / "Shirt" / "bright.png")
    c.crop((2, 2, 26, 26)).save(root / "train" / "Pullover" / "crop.png")
    return {"big.png": src[0].name, "bright.png": src[1].name, "crop.png": src[2].name}


def test_planted_copies_are_found_and_look_alikes_are_not(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data"
    planted = _tree(root)
    other = sorted((root / "train" / "T-shirt").iterdir())
    (root / "train" / "T-shirt" / "same.png").write_bytes(other[0].read_bytes())  # exact
    code = main(["check", str(root), "--near", "--format", "json", "--out", str(tmp_path / "o")])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    found = {frozenset((Path(p["a"]).name, Path(p["b"]).name))
             for p in doc["near_duplicates"]["pairs"]}
    assert found == {frozenset(p) for p in planted.items()}
    near = doc["near_duplicates"]
    assert (near["across_splits"], near["across_classes"], near["within_class"]) == (1, 1, 1)
    text = "\n".join(f["what"] for f in doc["findings"])
    assert "1 extra copies of 1 image(s) within their class" in text  # the exact copy
    assert "straddle train/val/test" in text and "carry different labels" in text
    assert (tmp_path / "o" / "near.csv").is_file() and (tmp_path / "o" / "near.png").is_file()


def test_a_smooth_picture_matches_its_resized_copy_and_not_its_mirror() -> None:
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    small = np.asarray(Image.fromarray(ramp).resize((48, 48)).resize((64, 64)))
    a = torch.from_numpy(np.stack([ramp, ramp]))[:, None]
    b = torch.from_numpy(np.stack([small, ramp[:, ::-1].copy()]))[:, None]
    same, mirrored = detail_match(a, b)
    assert same > 0.95 and mirrored < 0
