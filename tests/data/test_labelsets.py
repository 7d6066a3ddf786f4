"""Multi-label data: label fields, multi-label CSVs and folders, stratified splits, the
mosaic set, and what `cnnkit data info` and `cnnkit check` say about them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main
from cnnkit.data import fashion_mnist
from cnnkit.data.builtin import load_builtin
from cnnkit.data.folders import read_csv
from cnnkit.data.imageset import stratified_split, take_per_class
from cnnkit.data.labelsets import label_sets, lists_several, multi_hot, parse_labels
from cnnkit.data.mosaic import generate
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.sources import describe, load_eval_set, load_splits


def _pre() -> Preprocess:
    return Preprocess(16, 1, (0.5,), (0.5,))


def _images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        Image.new("L", (8, 8), i * 3 % 256).save(folder / f"{i:03d}.png")
        names.append(f"{i:03d}.png")
    return names


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("field", "labels"), [
    ("cat|dog", ("cat", "dog")), ("cat; dog", ("cat", "dog")), (" cat | cat ", ("cat",)),
    ("", ()), ("||;", ()), ("cat,dog", ("cat", "dog")), ("T-shirt/top|Ankle boot",
                                                         ("T-shirt/top", "Ankle boot")),
])
def test_a_labels_field_splits_on_bars_semicolons_and_quoted_commas(field, labels) -> None:
    assert parse_labels(field) == labels


def test_multi_hot_and_back() -> None:
    y = multi_hot([(0, 2), (), (1,)], 3)
    assert y.dtype == torch.float32 and y.tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    assert label_sets(y) == [(0, 2), (), (1,)]
    assert lists_several("a|b") and not lists_several("a b")


def test_a_csv_with_label_sets_is_multi_label(tmp_path: Path) -> None:
    _images(tmp_path, 4)
    path = _csv(tmp_path / "tags.csv", '000.png,cat|dog\n001.png,dog\n002.png,\n'
                                       '003.png,"bird,cat"\n')
    listing = read_csv(path)
    assert listing.multilabel and listing.classes == ("bird", "cat", "dog")
    assert listing.labels == ((1, 2), (2,), (), (0, 1))


def test_a_labels_header_makes_a_csv_multi_label_and_repeated_rows_add_labels(
        tmp_path: Path) -> None:
    _images(tmp_path, 3)
    path = _csv(tmp_path / "t.csv", "path,labels,notes\n000.png,cat,x\n000.png,dog,\n"
                                    "001.png,dog\n002.png,\n")
    listing = read_csv(path)
    assert listing.multilabel and listing.labels == ((0, 1), (1,), ())


def test_a_plain_csv_stays_single_label_and_an_empty_label_says_how_to_go_multi(
        tmp_path: Path) -> None:
    _images(tmp_path, 2)
    assert not read_csv(_csv(tmp_path / "a.csv", "000.png,cat\n001.png,dog\n")).multilabel
    with pytest.raises(CnnkitError, match="name the column 'labels'"):
        read_csv(_csv(tmp_path / "b.csv", "000.png,cat\n001.png,\n"))


def test_multi_label_csv_mistakes_get_one_clear_line(tmp_path: Path) -> None:
    _images(tmp_path, 2)
    with pytest.raises(CnnkitError, match="gives no image a label"):
        read_csv(_csv(tmp_path / "a.csv", "path,labels\n000.png,\n001.png,\n"))
    with pytest.raises(CnnkitError, match=r"more than two fields.*cat\|dog"):
        read_csv(_csv(tmp_path / "b.csv", "000.png,cat|dog,bird\n"))
    with pytest.raises(CnnkitError, match="'fish' are not among the model's classes"):
        read_csv(_csv(tmp_path / "c.csv", "000.png,cat|fish\n"), ("cat", "dog"))


def test_iterative_split_keeps_each_labels_share_in_every_part() -> None:
    gen = torch.Generator().manual_seed(0)
    y = (torch.rand(3000, 6, generator=gen) < torch.tensor([.5, .3, .1, .05, .02, .01])).float()
    parts = stratified_split(y, [0.1, 0.2], seed=4)
    assert sorted(torch.cat(parts).tolist()) == list(range(3000))
    assert [len(p) for p in parts] == [2100, 300, 600]
    share = y.mean(0)
    for p in parts:
        assert torch.allclose(y[p].mean(0), share, atol=0.006)
    again = stratified_split(y, [0.1, 0.2], seed=4)
    other = stratified_split(y, [0.1, 0.2], seed=5)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))
    assert not torch.equal(parts[1], other[1])


def test_iterative_split_beats_a_random_split_on_rare_labels() -> None:
    gen = torch.Generator().manual_seed(1)
    y = (torch.rand(400, 8, generator=gen) < 0.04).float()
    parts = stratified_split(y, [0.25], seed=0)
    want = y.sum(0) * 0.25
    stratified = (y[parts[1]].sum(0) - want).abs().sum()
    order = torch.randperm(400, generator=gen)
    random = (y[order[:100]].sum(0) - want).abs().sum()
    assert stratified < random and stratified <= 3


def test_per_class_on_label_sets_takes_about_that_many_of_each() -> None:
    y = multi_hot([(0,)] * 50 + [(1, 2)] * 50 + [()] * 30, 3)
    keep = take_per_class(y, 10, seed=0)
    counts = y[keep].sum(0).tolist()
    assert all(c >= 10 for c in counts) and len(keep) <= 30
    assert int((y[keep].sum(1) == 0).sum()) == 10


def test_a_folder_with_labels_csv_loads_and_splits(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    names = _images(root / "img", 30)
    rows = ["path,labels"] + [f"img/{n},{'a|b' if i % 3 == 0 else 'a' if i % 3 == 1 else ''}"
                              for i, n in enumerate(names)]
    _csv(root / "labels.csv", "\n".join(rows) + "\n")
    source = describe(str(root))
    assert source.kind == "folder+labels"
    s = load_splits(source, _pre(), val_fraction=0.2, test_fraction=0.2, seed=0)
    assert s.train.multilabel and s.classes == ("a", "b")
    assert len(s.train) + len(s.val) + len(s.test) == 30
    assert s.train.unlabelled() + s.val.unlabelled() + s.test.unlabelled() == 10
    assert s.val.class_counts()[1] >= 1 and s.test.class_counts()[1] >= 1
    ev = load_eval_set(source, _pre(), ("b", "a", "c"))
    assert ev.labels.shape == (30, 3) and ev.labels[0].tolist() == [1, 1, 0]



def test_images_a_folders_labels_csv_does_not_list_are_named_not_dropped_unseen(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 4 of 12 images beside labels.csv were left out without a word, while 'data info'
    # and the run's first line counted 8 images: in multi-label data an unlisted image
    # reads as one with no label, which it is not
    root = tmp_path / "photos"
    names = _images(root / "img", 12)
    _csv(root / "labels.csv", "path,labels\n" + "".join(
        f"img/{n},{'a|b' if i % 2 else 'a'}\n" for i, n in enumerate(names[:8])))
    s = load_splits(describe(str(root)), _pre(), val_fraction=0.25, test_fraction=0.25,
                    seed=0)
    assert len(s.train) + len(s.val) + len(s.test) == 8
    err = capsys.readouterr().err
    assert "4 images under" in err and "not in labels.csv" in err and "008.png" in err
    _csv(root / "labels.csv", "path,labels\n" + "".join(f"img/{n},a|b\n" for n in names))
    load_splits(describe(str(root)), _pre(), val_fraction=0.25, test_fraction=0.25, seed=0)
    assert "labels.csv" not in capsys.readouterr().err

def test_mosaics_are_labelled_by_the_items_they_show() -> None:
    items = np.stack([np.full((4, 4), 10 + c, np.uint8) for c in range(5)])
    images, targets = generate(items, np.arange(5), 200, seed=1, blank=0.5, num_classes=5)
    assert images.shape == (200, 8, 8) and targets.shape == (200, 5)
    for img, t in zip(images, targets):
        cells = {int(img[r, c]) for r in (0, 4) for c in (0, 4)} - {0}
        assert {v - 10 for v in cells} == set(np.flatnonzero(t).tolist())
    again = generate(items, np.arange(5), 200, seed=1, blank=0.5, num_classes=5)
    assert np.array_equal(again[0], images)
    assert 0 < int((targets.sum(1) == 0).sum()) < 30


@pytest.mark.skipif(fashion_mnist.find_dir() is None, reason="Fashion-MNIST is not on disk")
def test_the_mosaic_set_is_built_in_with_options() -> None:
    builtin, train, test = load_builtin("fashion-mnist-mosaic:count=40,seed=2,blank=0")
    assert builtin.multilabel and train.multilabel and train.images.shape == (40, 1, 56, 56)
    assert len(test) == 10 and train.classes == fashion_mnist.CLASSES
    assert train.unlabelled() == 0 and (train.labels.sum(1) >= 1).all()
    with pytest.raises(CnnkitError, match="below 100"):
        load_builtin("fashion-mnist-mosaic:blank=100")


def test_data_info_and_check_count_images_with_no_label(tmp_path: Path, capsys,
                                                       monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    root = tmp_path / "photos"
    names = _images(root, 12)
    _csv(root / "labels.csv", "path,labels\n" + "\n".join(
        f"{n},{'' if i < 3 else 'x|y' if i % 2 else 'x'}" for i, n in enumerate(names)) + "\n")
    assert main(["data", "info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "multi-label" in out
    row = next(line for line in out.splitlines() if "(no label)" in line)
    assert row.split()[-2:] == ["3", "│"]
    assert main(["check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "3 image(s) have no label" in out and "2 labels (multi-label)" in out


@pytest.mark.parametrize("text", [
    "000.png,cat,dog\n001.png,dog\n",               # the README's 'not a.jpg,cat,dog'
    "path,labels\n000.png,cat,dog\n001.png,dog\n",   # a header that names two columns
    "path,label\n000.png,cat,dog\n001.png,dog\n",
])
def test_a_label_in_a_column_no_header_names_is_refused_not_dropped(tmp_path: Path,
                                                                    text: str) -> None:
    # 'dog' on the first row was dropped without a word: a single-label model of 'cat'
    # (or a label set missing 'dog') trained from a row that meant both
    _images(tmp_path, 2)
    with pytest.raises(CnnkitError, match=r"c\.csv:\d: more than two fields.*cat\|dog"):
        read_csv(_csv(tmp_path / "c.csv", text))


def test_columns_a_header_names_and_trailing_empty_fields_are_kept_quiet(
        tmp_path: Path) -> None:
    _images(tmp_path, 2)
    listing = read_csv(_csv(tmp_path / "a.csv", "000.png,cat,\n001.png,dog,,\n"))
    assert not listing.multilabel and listing.labels == (0, 1)
    listing = read_csv(_csv(tmp_path / "b.csv", "path,labels,notes\n000.png,cat|dog,x\n"
                                                "001.png,dog,\n"))
    assert listing.labels == ((0, 1), (1,))
    with pytest.raises(CnnkitError, match=r"b\.csv:2: more than three fields"):
        read_csv(_csv(tmp_path / "b.csv", "path,labels,notes\n000.png,cat,x,dog\n"))
