"""What to label next: margin with k-center diversity, the files, and the command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from cnnkit.cli import main
from cnnkit.curate.suggest import k_center_greedy, select


def test_select_takes_unsure_images_from_different_places() -> None:
    # 40 images: 0-19 in one spot of code space, 20-39 in another; only 0-4 and 20-24
    # are unsure (margin near 0), so two picks take one unsure image from each spot.
    codes = np.zeros((40, 2), dtype=np.float32)
    codes[20:] = 10.0
    codes += np.random.default_rng(0).normal(scale=0.1, size=codes.shape)
    probs = np.tile([0.95, 0.05], (40, 1))
    probs[[0, 1, 2, 3, 4, 20, 21, 22, 23, 24]] = [0.5, 0.5]
    picks = select(probs, codes, 2)
    assert len(set(picks)) == 2
    assert {p // 20 for p in picks} == {0, 1}
    assert all(p % 20 < 5 for p in picks)
    # away from what is labelled: with the first spot labelled, the pick is from the other
    probs[[1, 2, 3, 4, 22, 23, 24]] = [0.95, 0.05]  # unsure: 0, 20, 21; one pick weighs 3
    assert select(probs, codes, 1, labelled=codes[5:6])[0] in (20, 21)
    assert select(probs, codes, 1)[0] == 0  # nothing labelled: the least sure first


def test_k_center_greedy_covers_the_space() -> None:
    pts = np.array([[0, 0], [0.1, 0], [5, 5], [5.1, 5], [10, 0]], dtype=np.float32)
    assert sorted(k_center_greedy(pts, 3)) == [0, 2, 4]


def _unlabelled(root: Path, make_tree) -> Path:
    tree = make_tree(root / "tree", per_class=8, size=20, seed=7)
    flat = root / "unlabelled"
    flat.mkdir()
    for k, p in enumerate(sorted(tree.rglob("*.png"))):
        p.rename(flat / f"img{k:03d}.png")
    return flat


def test_suggest_writes_a_csv_to_fill_in(tmp_path: Path, trained, make_tree, capsys) -> None:
    run, _ = trained
    flat = _unlabelled(tmp_path, make_tree)
    out = tmp_path / "out"
    assert main(["suggest", str(run), str(flat), "--n", "5", "--out", str(out),
                 "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pool"] == 24 and doc["suggested"] == 5
    rows = list(csv.DictReader((out / "to_label.csv").read_text().splitlines()))
    assert len(rows) == 5 and all(r["label"] == "" for r in rows)
    files = [(out / r["path"]).resolve() for r in rows]
    assert len(set(files)) == 5 and all(f.parent == flat.resolve() for f in files)
    assert [str(f) for f in files] == [str(Path(i["file"]).resolve()) for i in doc["images"]]
    assert (out / "to_label.png").read_bytes()[:4] == b"\x89PNG"
    # more than there are: all of them, said so
    assert main(["suggest", str(run), str(flat), "--n", "50", "--out", str(out)]) == 0
    assert "has 24 image(s): all of them are suggested" in capsys.readouterr().out


def test_suggest_bad_input_is_one_line(tmp_path: Path, trained, capsys) -> None:
    run, _ = trained
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    assert main(["suggest", str(run), str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No images found in") and len(err.strip().splitlines()) == 1
    assert main(["suggest", str(run), str(tmp_path / "nope")]) == 2
    assert "Unlabelled folder not found" in capsys.readouterr().err
    assert main(["suggest", str(tmp_path), str(tmp_path / "empty")]) == 2
    assert "not a cnnkit run" in capsys.readouterr().err


def test_suggest_says_which_images_predict_calls_unknown(tmp_path: Path, calibrated, strange,
                                                         trained, capsys) -> None:
    """A digits run's suggest ranked three bags first as 'model's guess 4, 63%' to label,
    where predict answers each 'unknown' (unlike every class it knows)."""
    import shutil

    from PIL import Image

    import cnnkit

    pool = tmp_path / "pool"
    pool.mkdir()
    Image.fromarray(strange).save(pool / "strange.png")
    for f in sorted(trained[1].rglob("*.png"))[::5]:
        shutil.copy(f, pool / f"{f.parent.name}-{f.name}")
    out = tmp_path / "out"
    assert main(["suggest", str(calibrated), str(pool), "--n", "50", "--out", str(out),
                 "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    said = {Path(i["file"]).name: i["unlike"] for i in doc["images"]}
    preds = cnnkit.load(str(calibrated), backend="torch").predict(
        [str(pool / name) for name in said])
    assert said == {name: bool(p.unlike) for name, p in zip(said, preds)}
    assert said["strange.png"] is True
    rows = {Path(r["path"]).name: r["unlike"]
            for r in csv.DictReader((out / "to_label.csv").read_text().splitlines())}
    assert rows == {name: "yes" if u else "" for name, u in said.items()}
    assert main(["suggest", str(calibrated), str(pool), "--n", "50", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "strange.png  (unlike every class it knows: predict answers 'unknown')" in text
