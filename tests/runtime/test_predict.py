"""Predicting: files, folders, globs, in-memory images; top-k; TTA; unreadable images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnkit
from cnnkit.base.errors import CnnkitError
from cnnkit.data.pipeline import eval_batch


@pytest.fixture(scope="module")
def clf(trained) -> cnnkit.Classifier:
    return cnnkit.load(str(trained[0]), device="cpu")


def _pngs(data: Path) -> list[str]:
    return sorted(str(p) for p in data.rglob("*.png"))


def test_top_k_predictions_per_file(clf, trained) -> None:
    files = _pngs(trained[1])[:4]
    preds = clf.predict(files, top_k=2)
    assert [p.source for p in preds] == files
    probs = clf.predict_proba(files)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    for p, row in zip(preds, probs):
        assert len(p.top) == 2
        assert p.top[0][1] >= p.top[1][1]
        assert p.label == clf.classes[int(row.argmax())]
        assert p.probability == pytest.approx(float(row.max()))
    assert len(clf.predict(files[0], top_k=10)[0].top) == 3  # capped at the class count
    assert len(clf.predict(files[0], top_k=np.int64(2))[0].top) == 2
    for k in (0, -2, 2.5, True, "3"):  # 0 and -2 answered one class, as --top-k refuses
        with pytest.raises(CnnkitError, match=r"top_k must be a whole number of at least 1"):
            clf.predict(files[0], top_k=k)
    d = preds[0].to_dict()
    assert d["path"] == files[0] and d["label"] == preds[0].label
    assert [t["label"] for t in d["top"]] == [c for c, _ in preds[0].top]


def test_predict_proba_is_the_model_on_the_documented_pipeline(clf, trained) -> None:
    """Decode, resize, normalise with the sidecar's mean/std, softmax: nothing else."""
    file = _pngs(trained[1])[0]
    pre = clf.card.preprocess
    arr = np.array(Image.open(file).convert("RGB").resize((pre.img_size,) * 2,
                                                           Image.Resampling.BILINEAR))
    x = torch.from_numpy(arr).permute(2, 0, 1).float()[None] / 255
    x = (x - torch.tensor(pre.mean).view(1, 3, 1, 1)) / torch.tensor(pre.std).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = clf.model(x).softmax(1).numpy()
    np.testing.assert_allclose(clf.predict_proba([file]), expected, atol=2e-3)
    assert torch.allclose(clf.transform([file]),
                          eval_batch(torch.from_numpy(arr).permute(2, 0, 1)[None], pre),
                          atol=1e-5)


def test_in_memory_inputs_predict_like_files(clf, trained) -> None:
    file = _pngs(trained[1])[0]
    img = Image.open(file)
    img.load()
    expected = clf.predict_proba([file])
    as_bytes = Path(file).read_bytes()
    as_array = np.asarray(img.convert("RGB"))
    for item in (img, as_bytes, as_array, Path(file)):
        np.testing.assert_allclose(clf.predict_proba([item]), expected, atol=1e-6)
    grey = np.asarray(img.convert("L"))
    assert clf.predict_proba([grey]).shape == (1, 3)
    with pytest.raises(CnnkitError, match="uint8"):
        clf.predict_proba([as_array.astype(np.float32)])


def test_flip_tta_probabilities_sum_to_one(clf, trained) -> None:
    files = _pngs(trained[1])[:6]
    probs = clf.predict_proba(files, tta=True)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    plain = clf.predict_proba(files)
    assert not np.allclose(plain, probs)  # the mirror view counts
    # a symmetric image looks the same mirrored: TTA changes nothing
    sym = np.zeros((20, 20, 3), dtype=np.uint8)
    sym[5:15, 5:15] = 200
    np.testing.assert_allclose(clf.predict_proba([sym], tta=True), clf.predict_proba([sym]),
                               atol=1e-5)
    assert sum(p for _, p in clf.predict(files[:1], tta=True, top_k=3)[0].top) == \
        pytest.approx(1.0, abs=1e-5)


def test_unreadable_images_are_answered_in_place_with_their_error(
        clf, trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, other = _pngs(trained[1])[:2]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really")
    inputs = [good, str(bad), str(tmp_path / "gone.png"), other]
    preds = clf.predict(inputs)
    # one answer per input, in order: zip(inputs, preds) pairs each file with its own answer
    assert [p.source for p in preds] == inputs
    assert [p.label is None for p in preds] == [False, True, True, False]
    assert preds[3].top == clf.predict([other])[0].top
    assert "broken.jpg" in preds[1].error and "file not found" in preds[2].error
    assert preds[2].to_dict() == {"source": inputs[2], "error": preds[2].error}
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "gone.png" in err
    assert bad.read_bytes() == b"\xff\xd8\xff not really"
    with pytest.raises(CnnkitError, match=r"broken\.jpg"):
        clf.predict_proba([str(bad)])


def test_evaluate_a_folder(clf, trained) -> None:
    result = clf.evaluate(str(trained[1]))
    assert result.n == 30 and result.classes == clf.classes
    assert 0 <= result.accuracy <= 1 and set(result.top_k) == {1}  # top-3 of 3: no figure
    assert sum(map(sum, result.confusion)) == 30
    assert [row["support"] for row in result.per_class] == [10, 10, 10]


def test_predict_on_bytes_from_a_jpeg(clf) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (250, 10, 10)).save(buf, "JPEG")
    preds = clf.predict(buf.getvalue(), top_k=1)
    assert len(preds) == 1 and preds[0].source == "<image 0>"


def test_nothing_readable_is_an_error(clf, tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"junk")
    with pytest.raises(CnnkitError, match=r"No image could be read: .*a\.png.*\(and 1 more\)"):
        clf.predict([str(tmp_path / "a.png"), str(tmp_path / "b.png")])
    assert clf.predict([]) == []


def test_a_threshold_answers_unknown_below_it(clf, trained) -> None:
    files = _pngs(trained[1])[:6]
    plain = clf.predict(files)
    cut = sorted(p.probability for p in plain)[2] + 1e-6  # the three least sure fall below
    preds = clf.predict(files, threshold=cut)
    unknown = [p for p in preds if p.unknown]
    assert len(unknown) == 3
    for p, q in zip(preds, plain):
        assert p.top == q.top  # the model's classes are still there
        assert p.label == ("unknown" if p.probability < cut else q.label)
        d = p.to_dict()
        assert d["label"] == p.label and d["unknown"] == p.unknown and d["threshold"] == cut
    assert "unknown" not in plain[0].to_dict()  # without a threshold, the old record
    assert all(not p.unknown for p in clf.predict(files, threshold=0.0))
    with pytest.raises(CnnkitError, match="between 0 and 1"):
        clf.predict(files, threshold=1.5)


def test_a_multilabel_model_answers_label_sets(trained_multilabel, capsys) -> None:
    import csv as csvlib
    import json

    from cnnkit.cli import main
    from cnnkit.data.folders import read_csv

    run, labels = trained_multilabel
    clf = cnnkit.load(run, device="cpu")
    files = [str(labels.parent / f"m{i:03d}.png") for i in range(4)]
    answers = clf.predict(files, top_k=3)
    thresholds = dict(zip(clf.classes, clf.task.thresholds))
    # the same probabilities as evaluation gives for the same files
    from cnnkit.data.sources import load_eval_set

    rows = labels.parent / "four.csv"
    rows.write_text("path,labels\n" + "".join(
        line + "\n" for line in labels.read_text().splitlines()[1:5]))
    assert read_csv(rows).multilabel
    evaluated = clf.log_probs(load_eval_set(str(rows), clf.card.preprocess, clf.classes))
    for answer, probs in zip(answers, evaluated.exp().numpy()):
        assert answer.thresholds == thresholds
        assert [c for c, _ in answer.labels] == [
            c for c, p in sorted(zip(clf.classes, probs), key=lambda t: -t[1])
            if p >= thresholds[c]]
        assert [p for _, p in answer.top] == pytest.approx(sorted(probs)[::-1][:3], abs=1e-5)
    everything = clf.predict(files[:1], threshold=0.0)[0]
    assert len(everything.labels) == 10  # --threshold 0: every label
    assert main(["predict", str(run), *files[:2], "-f", "csv", "-k", "2"]) == 0
    table = list(csvlib.reader(capsys.readouterr().out.splitlines()))
    assert table[0] == ["path", "labels", "probabilities", "label1", "prob1", "label2", "prob2",
                        "error"]
    assert table[1][1] == answers[0].label
    assert main(["predict", str(run), files[0], "-f", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)[0]
    assert {"labels", "top", "thresholds"} <= set(doc)


def test_a_run_folder_named_like_an_onnx_file_is_a_run(clf, trained, tmp_path,
                                                       capsys) -> None:
    """'exp.onnx/' is a run folder a user named so, not an ONNX export: predict and
    explain read it as the run it is and answer as the run does."""
    import shutil

    from cnnkit.cli import main

    folder = tmp_path / "exp.onnx"
    shutil.copytree(trained[0], folder)
    image = _pngs(trained[1])[0]
    assert cnnkit.load(str(folder), device="cpu").predict(image)[0].label == \
        clf.predict(image)[0].label
    assert main(["predict", str(folder), image]) == 0
    assert "ONNX" not in capsys.readouterr().err
    assert main(["explain", str(folder), image, "--out", str(tmp_path / "seen")]) == 0
    assert (tmp_path / "seen" / "gradcam.png").is_file()
