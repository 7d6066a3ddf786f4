"""Predicting from Python: files, PIL images, arrays; top-k; flip TTA; exporting a set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnkit
from cnnkit.data.export import export_builtin
from cnnkit.errors import CnnkitError
from cnnkit.predict import expand_inputs


@pytest.fixture(scope="module")
def clf(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("runs")
    run = cnnkit.train("shapes:count=60,size=16", model="conv8k3-pool2-dense16", epochs=1,
                       out=str(out), plots=False, device="cpu").run_dir
    return cnnkit.load(str(run), device="cpu")


def test_files_pil_images_and_arrays_agree(clf, tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    a, b, c = clf.predict([str(tmp_path / "x.png"), Image.fromarray(arr), arr], top_k=3)
    assert a.top == b.top == c.top
    assert a.source.endswith("x.png") and b.source == "<image 1>"
    assert [label for label, _ in a.top] == sorted(clf.classes, key=lambda k: -dict(a.top)[k])
    assert sum(p for _, p in a.top) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("tta", [False, True])
def test_probabilities_sum_to_one(clf, tta: bool) -> None:
    arrs = [np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8)
            for i in range(4)]
    probs = clf.predict_proba(arrs, tta=tta)
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_unreadable_images_are_skipped_with_a_warning(clf, tmp_path: Path, capsys) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    Image.new("RGB", (16, 16)).save(tmp_path / "good.png")
    preds = clf.predict([str(tmp_path / "bad.jpg"), str(tmp_path / "good.png")])
    assert [Path(p.source).name for p in preds] == ["good.png"]
    assert "bad.jpg" in capsys.readouterr().err
    with pytest.raises(CnnkitError, match=r"bad\.jpg"):
        clf.predict_proba([str(tmp_path / "bad.jpg")])


def test_expand_inputs_files_folders_globs(tmp_path: Path) -> None:
    for rel in ("a/1.png", "a/b/2.jpg", "a/.hidden/3.png", "a/__MACOSX/4.png", "a/notes.txt"):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("txt"):
            path.write_text("x")
        else:
            Image.new("RGB", (4, 4)).save(path)
    names = [Path(p).name for p in expand_inputs([str(tmp_path / "a")])]
    assert names == ["1.png", "2.jpg"]
    globbed = [Path(p).name for p in expand_inputs([str(tmp_path / "a" / "**" / "*.*")])]
    assert sorted(globbed) == ["1.png", "2.jpg"]
    with pytest.raises(CnnkitError, match="Image not found"):
        expand_inputs([str(tmp_path / "missing.png")])
    with pytest.raises(CnnkitError, match="No images match"):
        expand_inputs([str(tmp_path / "*.gif")])


def test_export_writes_a_class_per_folder_tree(tmp_path: Path) -> None:
    written = export_builtin("fashion-mnist", tmp_path / "fm", split="test", per_class=2)
    assert written == {"test": 20}
    folders = sorted(p.name for p in (tmp_path / "fm" / "test").iterdir())
    assert "T-shirt_top" in folders and len(folders) == 10  # '/' made safe for a folder
    img = Image.open(tmp_path / "fm" / "test" / "Sneaker" / "00001.png")
    assert img.size == (28, 28) and img.mode == "L"
    with pytest.raises(CnnkitError, match="not empty"):
        export_builtin("fashion-mnist", tmp_path / "fm", split="test", per_class=1)
