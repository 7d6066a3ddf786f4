"""``cnnkit explain``: Grad-CAM, feature maps and filters of a saved model, as PNGs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnkit.artifacts.modelfile import ModelCard, save_model
from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.shapes import CLASSES
from cnnkit.inspect.explain import class_index, explain
from cnnkit.models import create_model
from cnnkit.models.build import resolve
from cnnkit.runtime.predict import Classifier


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    arch, _ = resolve("seed-cnn")
    model = create_model(arch, len(CLASSES), 3, 32)
    card = ModelCard(arch, CLASSES, Preprocess(32, 3, (0.5,) * 3, (0.25,) * 3), {})
    return save_model(model, card, tmp_path / "model.safetensors")


def test_explain_writes_the_three_kinds_of_picture(model_file: Path, shapes_tree: Path,
                                                   tmp_path: Path) -> None:
    image = next((shapes_tree / "square").iterdir())
    clf = Classifier.load(str(model_file), "cpu")
    result = explain(clf, image, tmp_path / "out", class_name="Square")
    assert result.class_name == "square" and result.cam.shape == (32, 32)
    assert result.layer == "features.4"  # the last map of 7x7 or more (11x11 here)
    names = [f.name for f in result.files]
    assert names == ["gradcam.png", "feature_maps_1_features.1.png",
                     "feature_maps_2_features.4.png", "filters.png"]
    for f in result.files:
        with Image.open(f) as img:
            assert img.format == "PNG" and img.width >= 800
    probs = clf.predict_proba([image])[0]
    assert sorted(p for _, p in result.top) == pytest.approx(sorted(probs.tolist()))


def test_explain_command(model_file: Path, shapes_tree: Path, tmp_path: Path, capsys) -> None:
    image = next((shapes_tree / "circle").iterdir())
    out = tmp_path / "why"
    code = main(["explain", str(model_file.with_suffix(".json")), str(image), "--layer",
                 "features.0", "--out", str(out), "--device", "cpu"])
    assert code == 0
    text = capsys.readouterr().out
    assert "Grad-CAM for" in text and "top classes" in text
    assert sorted(p.name for p in out.iterdir()) == [
        "feature_maps_1_features.0.png", "filters.png", "gradcam.png"]
    assert main(["explain", str(model_file.with_suffix(".json")), str(image), "--class",
                 "hexagon", "--out", str(out)]) == 2
    assert "No class 'hexagon'" in capsys.readouterr().err
    assert main(["explain", str(model_file.with_suffix(".json")), str(tmp_path / "x.png"),
                 "--out", str(out)]) == 2


def test_an_onnx_export_is_refused_for_the_run_folder(model_file: Path, shapes_tree: Path,
                                                     tmp_path: Path, capsys) -> None:
    """explain has no --backend: the refusal names the model it needs, not an option."""
    image = next((shapes_tree / "circle").iterdir())
    onnx = model_file.parent / "model.onnx"
    onnx.write_bytes(b"not read")
    assert main(["explain", str(onnx), str(image), "--out", str(tmp_path / "o")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--backend" not in err and "PyTorch model" in err
    assert f"pass the run folder or model.json ({model_file.parent})" in err


def test_a_blank_heat_map_is_said_to_be_blank(tmp_path: Path, shapes_tree: Path,
                                              capsys) -> None:
    """Every path from the maps to the class's score lowers it: Grad-CAM is 0 everywhere.
    The command says so instead of a 'where the model looks' picture of nothing."""
    torch.manual_seed(0)
    arch, _ = resolve("seed-cnn")
    model = create_model(arch, len(CLASSES), 3, 32)
    with torch.no_grad():  # features >= 0 (ReLU) -> positive dense -> negative score
        model.head[1].weight.abs_()
        model.classifier.weight[0] = -model.classifier.weight[0].abs()
    card = ModelCard(arch, CLASSES, Preprocess(32, 3, (0.5,) * 3, (0.25,) * 3), {})
    path = save_model(model, card, tmp_path / "model.safetensors")
    image = next((shapes_tree / "circle").iterdir())
    assert main(["explain", str(path.with_suffix(".json")), str(image), "--class",
                 CLASSES[0], "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    said = " ".join((captured.out + captured.err).split())
    assert f"Grad-CAM is 0 everywhere for '{CLASSES[0]}'" in said


def test_explain_shows_a_probability_as_predict_does(tmp_path: Path, shapes_tree: Path,
                                                    capsys) -> None:
    """A top probability of 0.99992: predict shows 99.9% (cut, so that it never reads as
    a threshold it is under); explain showed 100.0% for the same image."""
    arch, _ = resolve("seed-cnn")
    model = create_model(arch, len(CLASSES), 3, 32)
    with torch.no_grad():  # the same logits for every image
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([10.13, 0.0, 0.0]))
    card = ModelCard(arch, CLASSES, Preprocess(32, 3, (0.5,) * 3, (0.25,) * 3), {})
    sidecar = save_model(model, card, tmp_path / "model.safetensors").with_suffix(".json")
    image = next((shapes_tree / "circle").iterdir())
    assert main(["predict", str(sidecar), str(image), "--device", "cpu"]) == 0
    assert f"{CLASSES[0]} 99.9%" in capsys.readouterr().out
    assert main(["explain", str(sidecar), str(image), "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 0
    said = capsys.readouterr().out
    assert f"top classes: {CLASSES[0]} 99.9%" in said and "100.0%" not in said
    assert f"Grad-CAM for '{CLASSES[0]}' (99.9%)" in said


def test_class_names_by_name_number_or_synonym() -> None:
    classes = ("tabby, tabby cat", "tiger cat", "espresso")
    assert class_index(classes, "Tiger Cat") == 1
    assert class_index(classes, "tabby cat") == 0  # one of the comma-separated names
    assert class_index(classes, "2") == 2
    with pytest.raises(CnnkitError, match="Did you mean 'espresso'"):
        class_index(classes, "expresso")


def test_a_name_given_exactly_wins_over_one_that_differs_in_case() -> None:
    # 'coat' and 'Coat' are two labels of a hand-typed multi-label CSV; --label coat
    # drew the Grad-CAM of 'Coat', the first name that matched in any case
    classes = ("Coat", "coat", "Bag")
    assert class_index(classes, "coat") == 1 and class_index(classes, "Coat") == 0
    assert class_index(classes, "COAT") == 0 and class_index(classes, " bag ") == 2


def test_a_multilabel_model_s_labels_are_not_called_top_classes(trained_multilabel,
                                                                 tmp_path: Path,
                                                                 capsys) -> None:
    """A multi-label model's probabilities are each label's own (they need not sum to 1):
    'top classes: cat 54%, coffee 53%, rocket 49%' read as one answer out of three."""
    run, csv = trained_multilabel
    image = csv.read_text().splitlines()[1].split(",")[0]
    if not Path(image).is_absolute():
        image = str(csv.parent / image)
    assert main(["explain", str(run), image, "--out", str(tmp_path / "o"),
                 "--device", "cpu"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "top classes" not in said
    assert "labels (each its own probability):" in said
