"""``cnnkit data export``: a built-in set as a class-per-folder tree of PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.cli import main
from cnnkit.data import fashion_mnist
from cnnkit.data.builtin import load_builtin
from cnnkit.data.folders import list_class_folders


def test_export_shapes_as_png(tmp_path: Path) -> None:
    out = tmp_path / "shapes"
    assert main(["data", "export", "shapes:size=16,count=30", str(out), "--split", "train"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["train"]
    assert sorted(p.name for p in (out / "train").iterdir()) == ["circle", "square", "triangle"]
    files = sorted((out / "train").rglob("*"))
    pngs = [f for f in files if f.is_file()]
    assert len(pngs) == 30 and all(f.suffix == ".png" for f in pngs)
    with Image.open(pngs[0]) as img:
        assert img.format == "PNG" and img.size == (16, 16) and img.mode == "RGB"
    # the pixels are the data set's, exactly (PNG is lossless)
    _, train, _ = load_builtin("shapes:size=16,count=30")
    first = train.images[(train.labels == 0).nonzero()[0, 0]].permute(1, 2, 0).numpy()
    assert np.array_equal(np.asarray(Image.open(out / "train" / "circle" / "00001.png")), first)
    listing = list_class_folders(out / "train")
    assert listing.classes == ("circle", "square", "triangle") and len(listing.paths) == 30


def test_export_fashion_mnist_makes_class_names_safe(tmp_path: Path) -> None:
    out = tmp_path / "fm"
    assert main(["data", "export", "fashion-mnist", str(out), "--split", "test",
                 "--per-class", "2"]) == 0
    names = sorted(p.name for p in (out / "test").iterdir())
    assert "T-shirt_top" in names and len(names) == 10
    assert all(len(list((out / "test" / n).iterdir())) == 2 for n in names)
    with Image.open(out / "test" / "T-shirt_top" / "00001.png") as img:
        assert img.mode == "L" and img.size == (28, 28)
    # read back against the real class names, 'T-shirt/top' included
    listing = list_class_folders(out / "test", fashion_mnist.CLASSES)
    assert sorted(set(listing.labels)) == list(range(10))


def test_export_refuses_a_folder_that_is_not_empty(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["data", "export", "shapes:count=6", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and err.count("\n") == 1
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_export_a_multi_label_set_as_a_folder_with_labels_csv(tmp_path: Path) -> None:
    """cnnkit data export fashion-mnist-mosaic ended in a traceback ('only one element
    tensors can be converted to Python scalars') and left empty class folders behind."""
    from cnnkit.data.sources import describe

    out = tmp_path / "mos"
    assert main(["data", "export", "fashion-mnist-mosaic:count=40,seed=1", str(out),
                 "--split", "test"]) == 0
    _, _, test = load_builtin("fashion-mnist-mosaic:count=40,seed=1")
    folder = out / "test"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == []
    rows = (folder / "labels.csv").read_text().splitlines()
    assert rows[0] == "path,labels" and len(rows) == 1 + len(test)
    first = rows[1].split(",")
    assert first[0] == "00001.png"
    want = [test.classes[k] for k in torch.nonzero(test.labels[0] > 0.5).flatten()]
    assert first[1].split("|") == want if want else first[1] == ""
    assert np.array_equal(np.asarray(Image.open(folder / "00001.png")),
                          test.images[0].permute(1, 2, 0).numpy().squeeze(-1))
    source = describe(str(folder))
    assert source.listings()["all"].multilabel
    few = tmp_path / "few"
    assert main(["data", "export", "fashion-mnist-mosaic:count=40,seed=1", str(few),
                 "--split", "train", "--per-class", "1"]) == 0
    listing = describe(str(few / "train")).listings()["all"]
    assert len(listing.paths) <= len(listing.classes) + 1  # each adds a label not yet seen
