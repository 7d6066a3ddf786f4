"""A calibrated run's answers: the temperature and the unknown rule from its card reach
predict, the Python API, an exported ONNX file and the server alike; a card without them
still loads (temperature 1, no rule, said once); a damaged one is one clear line."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnkit
from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main


def _pngs(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*.png"))


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_every_backend_answers_with_the_card_s_temperature_and_rule(calibrated, trained,
                                                                    strange, backend):
    files = _pngs(trained[1])[:6]
    plain = cnnkit.load(str(trained[0]), backend="torch").predict_proba(files)
    clf = cnnkit.load(str(calibrated), backend=backend)
    task = clf.task
    assert task.temperature != 1.0 and task.unknown is not None
    probs = clf.predict_proba(files)
    assert (probs.argmax(1) == plain.argmax(1)).all()
    np.testing.assert_allclose(  # the same logits, divided by the temperature
        probs, np.exp(np.log(plain) / task.temperature) /
        np.exp(np.log(plain) / task.temperature).sum(1, keepdims=True), atol=1e-4)
    preds = clf.predict([*files, strange], top_k=2)
    assert all(p.unknown_score is not None and 0 <= p.unknown_score <= 1 for p in preds)
    # every backend gives the feature distance the rule reads beside the energy
    assert task.unknown.uses_distance and all(p.distance is not None for p in preds)
    energies, distances = (np.array([getattr(p, k) for p in preds]) for k in ("energy",
                                                                            "distance"))
    assert [p.unlike for p in preds] == list(task.unknown.unknown(energies, distances))
    np.testing.assert_allclose([p.unknown_score for p in preds],
                               task.unknown.score(energies, distances))
    odd = preds[-1]
    assert odd.unlike and odd.label == "unknown" and odd.reason == "unlike every class"
    assert odd.top[0][0] in clf.classes  # the model's classes are still there
    d = odd.to_dict()
    assert d["unknown"] is True and d["unlike"] is True and d["unknown_score"] > task.unknown.kept


def test_a_threshold_still_applies_beside_the_rule(calibrated, trained):
    clf = cnnkit.load(str(calibrated), backend="torch")
    p = clf.predict(_pngs(trained[1])[:1], threshold=1.0)[0]
    assert p.label == "unknown" and p.reason in ("below the threshold", "unlike every class")


def test_an_old_card_loads_as_temperature_1_with_no_rule_said_once(trained, tmp_path, capsys):
    run = shutil.copytree(trained[0], tmp_path / "run", ignore=shutil.ignore_patterns("*.onnx*"))
    doc = json.loads((run / "model.json").read_text())
    doc.pop("task", None)  # as a cnnkit before tasks wrote it
    (run / "model.json").write_text(json.dumps(doc))
    capsys.readouterr()
    clf = cnnkit.load(str(run), backend="torch")
    assert capsys.readouterr().err == ""  # loading alone (export, evaluate) says nothing
    p = clf.predict(_pngs(trained[1])[:1])[0]
    cnnkit.load(str(run), backend="torch").predict(_pngs(trained[1])[:1])
    err = capsys.readouterr().err
    assert err.count("not calibrated") == 1 and err.count("\n") == 1
    assert p.unknown_score is None and "unknown_score" not in p.to_dict()
    assert clf.task.temperature == 1.0 and clf.task.unknown is None


@pytest.mark.parametrize("field,value", [("temperature", -1), ("temperature", "hot"),
                                         ("unknown", {"quantiles": [3, 2, 1]})])
def test_a_damaged_task_in_the_card_is_one_clear_line(calibrated, tmp_path, field, value):
    run = shutil.copytree(calibrated, tmp_path / "run")
    doc = json.loads((run / "model.json").read_text())
    doc["task"][field] = value
    (run / "model.json").write_text(json.dumps(doc))
    with pytest.raises(CnnkitError, match=r"model\.json is incomplete or damaged"):
        cnnkit.load(str(run), backend="torch")


def test_an_exported_file_alone_carries_the_rule(calibrated, trained, strange, tmp_path,
                                                  capsys):
    run = shutil.copytree(calibrated, tmp_path / "run")
    assert main(["export", str(run)]) == 0
    away = tmp_path / "away"
    away.mkdir()
    for name in ("model.onnx", "model.onnx.source.json"):
        shutil.move(run / name, away / name)
    alone = cnnkit.load(str(away / "model.onnx"))
    with_run = cnnkit.load(str(calibrated), backend="torch")
    assert alone.task == with_run.task
    files = _pngs(trained[1])[:3]
    np.testing.assert_allclose(alone.predict_proba(files), with_run.predict_proba(files),
                               atol=1e-4)
    capsys.readouterr()
    Image.fromarray(strange).save(tmp_path / "board.png")
    assert main(["predict", str(away / "model.onnx"), str(tmp_path / "board.png"),
                 "--format", "json"]) == 0
    answer = json.loads(capsys.readouterr().out)[0]
    assert answer["label"] == "unknown" and answer["unlike"] is True
    # the file gives the rule's feature distance itself (no statistics file beside it)
    assert alone.backend.has_distance
    want = with_run.predict([strange])[0]
    got = alone.predict([strange])[0]
    assert got.distance == pytest.approx(want.distance, rel=1e-3)
    assert got.unknown_score == pytest.approx(want.unknown_score, abs=1e-4)


def test_an_export_whose_distance_is_wrong_is_refused(calibrated):
    from dataclasses import replace

    from cnnkit.artifacts.modelfile import load_model
    from cnnkit.runtime.backends import OnnxBackend
    from cnnkit.runtime.exports import cached_onnx, check_parity, stats_beside

    model, card = load_model(calibrated)
    stats = stats_beside(card, calibrated)
    backend = OnnxBackend(cached_onnx(model, card, calibrated, stats))
    assert check_parity(model, backend, card, stats=stats) <= 1e-4
    moved = replace(stats, means=stats.means + 0.5 * np.abs(stats.means).mean())
    with pytest.raises(CnnkitError, match="disagrees with torch on the feature distance"):
        check_parity(model, backend, card, stats=moved)


def test_int8_keeps_the_feature_distance_in_float(calibrated, trained, tmp_path,
                                                  brief_int8_timing):
    run = shutil.copytree(calibrated, tmp_path / "run")
    assert main(["export", str(run), "--quantize", "int8", "--max-accuracy-drop", "100"]) == 0
    int8 = cnnkit.load(str(run), backend="onnx-int8")
    plain = cnnkit.load(str(run), backend="torch")
    files = _pngs(trained[1])[:6]
    got, want = int8.predict(files), plain.predict(files)
    assert all(p.distance is not None for p in got)
    # the whitening and sums stay float: only the backbone's int8 error moves the distance
    np.testing.assert_allclose([p.distance for p in got], [p.distance for p in want],
                               rtol=0.25)


@pytest.mark.parametrize("damage", ["missing", "another save"])
def test_statistics_missing_or_from_another_save_fall_back_to_the_energy_in_one_line(
        calibrated, trained, strange, tmp_path, capsys, damage):
    run = shutil.copytree(calibrated, tmp_path / "run", ignore=shutil.ignore_patterns("*.onnx*"))
    stats = run / "model.unknown.safetensors"
    if damage == "missing":
        stats.unlink()
    else:
        stats.write_bytes(stats.read_bytes()[:-4] + b"\0\0\0\0")
    capsys.readouterr()
    clf = cnnkit.load(str(run), backend="torch")
    preds = clf.predict([strange, *_pngs(trained[1])[:2]])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "by the energy alone" in err
    assert ("are missing" in err) if damage == "missing" else ("sha256 differs" in err)
    rule = clf.task.unknown
    assert all(p.distance is None and p.unknown_score is not None for p in preds)
    assert [p.unlike for p in preds] == [p.energy > rule.threshold for p in preds]
    # the default backend says so too, also once its energy-only export is cached
    for _ in range(2):
        assert cnnkit.load(str(run)).predict([strange])[0].distance is None
        assert "by the energy alone" in capsys.readouterr().err


def test_the_server_answers_unknown_with_the_score(calibrated, strange):
    from fastapi.testclient import TestClient
    from tests.serve.conftest import encode, wait_ready

    from cnnkit.serve import ServeConfig, create_app, load_models

    models = load_models([f"m={calibrated}"], "torch", "cpu", threads=1)
    with TestClient(create_app(models, ServeConfig()), base_url="http://127.0.0.1") as client:
        wait_ready(client)
        r = client.post("/predict", content=encode(Image.fromarray(strange)))
    assert r.status_code == 200, r.json()
    answer = r.json()["predictions"][0]
    assert answer["label"] == "unknown"
    assert answer["unlike"] is True and answer["unknown_score"] > 0.5


def test_the_output_file_has_the_unknown_score_beside_the_label(calibrated, trained, strange,
                                                                tmp_path):
    import csv

    Image.fromarray(strange).save(tmp_path / "odd.png")
    good = _pngs(trained[1])[0]
    shutil.copy(good, tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    out = tmp_path / "answers.csv"
    assert main(["predict", str(calibrated), str(tmp_path), "--output", str(out),
                 "--top-k", "2"]) == 0
    rows = {Path(r["path"]).name: r for r in csv.DictReader(out.open())}
    assert list(next(iter(rows.values())))[:5] == ["path", "label", "probability",
                                                   "unknown_score", "label1"]
    odd = cnnkit.load(str(calibrated), backend="torch").predict([strange])[0]
    assert rows["odd.png"]["label"] == "unknown"
    assert float(rows["odd.png"]["unknown_score"]) == pytest.approx(odd.unknown_score, abs=1e-5)
    assert rows["odd.png"]["label1"] in cnnkit.load(str(calibrated)).classes
    assert 0 <= float(rows["good.png"]["unknown_score"]) <= 1
    assert rows["bad.png"]["unknown_score"] == "" and rows["bad.png"]["error"]


def test_the_int8_file_answers_by_its_own_rule_and_the_export_says_how_often(
        calibrated, tmp_path, capsys, brief_int8_timing):
    from cnnkit.tasks.ood import fit_rule

    run = shutil.copytree(calibrated, tmp_path / "run")
    # Every image of the data as the validation split: the tiny run's own six are too few
    # to fit a rule on (the calibrated fixture fitted its rule on these 30 too).
    split = json.loads((run / "split.json").read_text())
    split["val"] = split["train"] + split["val"] + split["test"]
    (run / "split.json").write_text(json.dumps(split))
    capsys.readouterr()
    assert main(["export", str(run), "--quantize", "int8", "--max-accuracy-drop", "100"]) == 0
    # the share of the test images each file answers 'unknown', printed and in the card
    line = re.search(r"answered 'unknown' \(each file's rule\): float ([\d.]+)%, int8 ([\d.]+)%",
                     capsys.readouterr().out)
    card = json.loads((run / "model.card.json").read_text())["int8"]
    assert line is not None
    assert card["float_unknown"] == pytest.approx(float(line.group(1)) / 100, abs=5e-4)
    assert card["int8_unknown"] == pytest.approx(float(line.group(2)) / 100, abs=5e-4)
    assert 0 <= card["float_unknown"] <= 1 and 0 <= card["int8_unknown"] <= 1
    card_rule = cnnkit.load(str(run), backend="onnx").task.unknown
    int8 = cnnkit.load(str(run), backend="onnx-int8")
    own = int8.task.unknown
    assert own.uses_distance and own.kept == card_rule.kept and own.features == card_rule.features
    assert own.fitted_on == len(split["val"]) and own.quantiles != card_rule.quantiles
    assert int8.task.temperature == cnnkit.load(str(run), backend="onnx").task.temperature
    # the rule is the int8 file's outputs for those images, as training fits the float one
    files = [row[0] for row in split["val"]]
    preds = int8.predict(files)  # each answer's energy (raw logits) and feature distance
    energies, distances = (np.array([getattr(p, k) for p in preds]) for k in ("energy",
                                                                            "distance"))
    refit = fit_rule(energies, own.kept, distances, own.features)
    np.testing.assert_allclose(own.quantiles, refit.quantiles, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(own.combined, refit.combined, rtol=1e-5, atol=1e-5)
    # and every way of running the file answers by it: predict, the file given itself
    np.testing.assert_allclose([p.unknown_score for p in preds], own.score(energies, distances))
    assert cnnkit.load(str(run / "model.int8.onnx")).task.unknown == own
    assert cnnkit.load(str(run), backend="torch").task.unknown == card_rule
    tested = int8.predict([row[0] for row in split["test"]])
    assert card["int8_unknown"] == pytest.approx(np.mean([p.unlike for p in tested]), abs=1e-9)
