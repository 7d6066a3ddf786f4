"""Wrong labels: out-of-fold heads and cleanlab, the files, and the command."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main
from cnnkit.curate.codes import Coded
from cnnkit.curate.labels import find_wrong_labels, write_fixed_csv, write_label_files


def _clusters(per: int = 30, flips: tuple[int, ...] = (3, 40, 77)) -> tuple[Coded, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 4
    truth = np.repeat(np.arange(3), per)
    codes = (centres[truth] + rng.normal(size=(len(truth), 16))).astype(np.float32)
    given = truth.copy()
    for i in flips:
        given[i] = (truth[i] + 1) % 3
    names = tuple(f"/data/{i}.png" for i in range(len(truth)))
    coded = Coded(codes, given, ("a", "b", "c"), names, ("all",) * len(truth),
                  torch.zeros(len(truth), 1, 8, 8, dtype=torch.uint8), "test codes")
    return coded, truth


def test_flipped_labels_are_found_and_named_with_their_true_class() -> None:
    coded, truth = _clusters()
    check = find_wrong_labels(coded, folds=5)
    assert {i.index for i in check.wrong} == {3, 40, 77}
    assert check.wrong == check.issues[:3]  # the probably wrong come first
    for issue in check.wrong:
        assert issue.likely == "abc"[truth[issue.index]] and issue.given != issue.likely
        assert issue.quality < 0.5 and issue.p_likely > 0.5
    assert [i.quality for i in check.issues] == sorted(i.quality for i in check.issues)


def test_codes_that_cannot_tell_the_classes_apart_call_no_label_wrong() -> None:
    coded, _ = _clusters()
    noise = np.random.default_rng(1).normal(size=coded.codes.shape).astype(np.float32)
    blind = Coded(noise, coded.labels, coded.classes, coded.names, coded.splits,
                  coded.images, "an untrained model")
    check = find_wrong_labels(blind)
    assert check.wrong == [] and "do not tell the classes apart" in check.unreliable


def test_fewer_images_than_folds_is_one_clear_line() -> None:
    coded, _ = _clusters(per=3, flips=())
    with pytest.raises(CnnkitError, match=r"fewer images than the 5 folds.*--folds 3"):
        find_wrong_labels(coded, folds=5)
    small = Coded(coded.codes[:4], coded.labels[:4], coded.classes, coded.names[:4],
                  coded.splits[:4], coded.images[:4], "x")
    with pytest.raises(CnnkitError, match=r"4 image.*fewer than the 5 folds"):
        find_wrong_labels(small, folds=5)


def test_files_and_the_relabelled_csv(tmp_path: Path) -> None:
    coded, _ = _clusters()
    check = find_wrong_labels(coded)
    files = write_label_files(check, coded, tmp_path / "out")
    rows = list(csv.DictReader(files["csv"].read_text().splitlines()))
    assert [r["file"] for r in rows] == [i.name for i in check.issues]
    assert json.loads(files["json"].read_text())["probably_wrong"] == 3
    assert files["sheet"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path, changed = write_fixed_csv(check, coded, tmp_path / "fixed.csv", "/data")
    fixed = list(csv.DictReader(path.read_text().splitlines()))
    assert changed == 3 and len(fixed) == len(coded)
    assert sum(r["changed"] == "yes" for r in fixed) == 3
    moved = {r["path"] for r in fixed if r["label"] != r["given_label"]}
    assert {Path(m).name for m in moved} == {"3.png", "40.png", "77.png"}


def _digest(root: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_check_labels_finds_images_filed_under_the_wrong_class(tmp_path: Path, make_tree,
                                                                capsys) -> None:
    root = make_tree(tmp_path / "data", per_class=20, size=32)
    classes = sorted(p.name for p in root.iterdir())
    shutil.move(root / classes[0] / "001.png", root / classes[1] / "moved.png")
    shutil.move(root / classes[2] / "001.png", root / classes[0] / "moved2.png")
    before = _digest(root)
    fixed = tmp_path / "fixed.csv"
    code = main(["check", str(root), "--labels", "--format", "json", "--out",
                 str(tmp_path / "out"), "--write-csv", str(fixed)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0  # a warning, not a problem
    issues = doc["label_issues"]["issues"]
    assert {Path(i["file"]).name for i in issues[:2]} == {"moved.png", "moved2.png"}
    wrong = [i for i in issues if i["verdict"] == "probably wrong"]
    assert wrong and {Path(i["file"]).name for i in wrong} <= {"moved.png", "moved2.png"}
    truth = {"moved.png": (classes[1], classes[0]), "moved2.png": (classes[0], classes[2])}
    for i in issues[:2]:
        assert (i["given"], i["likely"]) == truth[Path(i["file"]).name]
    assert any("wrong label" in f["what"] for f in doc["findings"])
    assert _digest(root) == before  # the source is never changed
    lines = fixed.read_text().splitlines()
    rows = {str((tmp_path / r["path"]).resolve()): r for r in csv.DictReader(lines)}
    assert len(rows) == 60
    for i in issues:
        row = rows[str(Path(i["file"]).resolve())]
        assert row["label"] == (i["likely"] if i in wrong else i["given"])
    assert main(["check", str(fixed), "--format", "json"]) == 0  # the CSV reads as data


def test_check_labels_bad_input(tmp_path: Path, make_tree, capsys) -> None:
    root = make_tree(tmp_path / "data", per_class=3, size=32)
    assert main(["check", str(root), "--labels"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "fewer images than the 5 folds" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["check", str(root), "--write-csv", "x.csv"]) == 2
    assert "add --labels" in capsys.readouterr().err
    assert main(["check", "digits", "--labels", "--write-csv", "x.csv"]) == 2  # before coding
    assert "built-in set: its images are not files" in capsys.readouterr().err


def test_check_labels_options_are_checked_before_any_image_is_read(tmp_path: Path, make_tree,
                                                                   capsys, monkeypatch) -> None:
    """--write-csv fixed.txt and --folds 1 were refused only after the audit and the codes
    of every image (34 s on 797 digits), with no other output."""
    import cnnkit.data.audit

    root = make_tree(tmp_path / "data", per_class=6, size=32)

    def no_audit(*args: object, **kwargs: object) -> None:
        raise AssertionError("the data was read")

    monkeypatch.setattr(cnnkit.data.audit, "audit", no_audit)
    for extra, said in ((["--write-csv", "fixed.txt"], "--write-csv takes a .csv file name"),
                        (["--folds", "1"], "--folds must be at least 2")):
        assert main(["check", str(root), "--labels", *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {said}") and err.count("\n") == 1
    listing = tmp_path / "data.csv"
    listing.write_text("path,label\n")
    assert main(["check", str(listing), "--labels", "--write-csv", str(listing)]) == 2
    assert "is the data's own CSV" in capsys.readouterr().err


def test_finding_wrong_labels_forks_no_worker_pool(monkeypatch) -> None:
    """cnnkit data map hung for good: cleanlab forked a worker pool from a process whose
    UMAP (numba) and torch threads held a lock, and a worker waited on it for ever."""
    import multiprocessing

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("a process pool was forked")

    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    coded, _ = _clusters()
    check = find_wrong_labels(coded)
    assert {i.index for i in check.wrong} == {3, 40, 77}
