"""``cnnkit export``: parity with PyTorch on real images for scratch, spec-string and
pretrained models; clear errors; the README's plain-onnxruntime snippet."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnkit
from cnnkit.artifacts import derived
from cnnkit.artifacts.modelfile import ModelCard, save_model
from cnnkit.artifacts.onnxfile import float_options, read_meta
from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main
from cnnkit.data.pipeline import Preprocess
from cnnkit.export.onnx import export_model
from cnnkit.models import create_model
from cnnkit.models.build import resolve

README = Path(__file__).resolve().parents[2] / "README.md"


def test_export_of_a_run_is_checked_on_its_test_images(trained, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert main(["export", str(trained[0]), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text
    diff = float(re.search(r"largest difference in probabilities (\S+)", text).group(1))
    assert "of the run's test split" in text and diff <= 1e-4
    meta = read_meta(out)
    card = cnnkit.load(str(trained[0]), backend="torch").card
    assert meta.classes == card.classes and meta.preprocess == card.preprocess
    # bound to the weights it came from: its own sha256 and theirs, checked before use
    assert derived.check(out, card.sha256, float_options(17)) is None


def test_export_writes_a_model_card_measured_on_the_test_split(trained, tmp_path: Path,
                                                                capsys) -> None:
    """model.card.json and .md beside the file: the test split's size, hash and metrics
    as the file answers them (the same as training's torch figures), calibration, input
    recipe, parity, limits."""
    out = tmp_path / "m.onnx"
    assert main(["export", str(trained[0]), "--out", str(out)]) == 0
    assert f"model card: {tmp_path / 'm.card.md'} and m.card.json" in capsys.readouterr().out
    card = json.loads((tmp_path / "m.card.json").read_text())
    split = json.loads((trained[0] / "split.json").read_text())
    trained_on = json.loads((trained[0] / "test_metrics.json").read_text())
    m = card["metrics"]
    assert m["test_images"] == len(split["test"]) == trained_on["n"]
    assert m["accuracy"] == pytest.approx(trained_on["accuracy"], abs=1e-6)
    assert [(c["class"], c["support"]) for c in m["per_class"]] == [
        (c["class"], c["support"]) for c in trained_on["per_class"]]
    assert [c["recall"] for c in m["per_class"]] == pytest.approx(
        [c["recall"] for c in trained_on["per_class"]])
    lo, hi = m["accuracy_95ci"]
    assert 0 <= lo < m["accuracy"] < hi <= 1 or m["accuracy"] in (0.0, 1.0)
    assert 0 <= m["calibration"]["expected_calibration_error"] <= 1
    assert card["classes"] == ["circle", "square", "triangle"] and card["task"] == "single-label"
    assert card["data"]["source"] == str(trained[1]) and len(card["data"]["test_split"]
                                                              ["sha256"]) == 64
    assert card["files"][0]["sha256"] == derived.sha256_of(out)
    assert card["input"]["size"] == 16 and card["input"]["mean"] == list(
        read_meta(out).preprocess.mean)
    assert [p["runtime"] for p in card["parity"]] == ["onnx"]
    assert card["parity"][0]["top1_agreement"] == 1.0
    assert any("held-out images" in x for x in card["limits"])
    md = (tmp_path / "m.card.md").read_text()
    assert f"accuracy **{m['accuracy']:.2%}**" in md and "\nonnx | m.onnx | " in md
    assert "## Known limits" in md and card["data"]["test_split"]["sha256"] in md


def _model_file(tmp_path: Path, name: str, size: int, channels: int, pretrained: bool,
                pre: Preprocess) -> Path:
    arch, _ = resolve(name)
    model = create_model(arch, 3, channels, size, pretrained=pretrained)
    card = ModelCard(arch, ("circle", "square", "triangle"), pre, {})
    return save_model(model, card, tmp_path / name.replace("-", "_") / "model.safetensors")


@pytest.mark.parametrize("name,size,channels,pretrained", [
    ("lenet5", 28, 1, False),                              # a registered scratch model
    ("conv8k3same-bn-pool2-conv16k5-drop0.2-dense32", 24, 3, False),  # a layer spec
    ("efficientnet_lite0", 64, 3, True),                   # pretrained, at a small size
])
def test_export_parity_on_real_images(tmp_path: Path, trained, name, size, channels,
                                      pretrained) -> None:
    pre = (Preprocess(size, 3, (0.5,) * 3, (0.5,) * 3, "bicubic", 0.875) if pretrained
           else Preprocess(size, channels, (0.4,) * channels, (0.2,) * channels))
    path = _model_file(tmp_path, name, size, channels, pretrained, pre)
    photos = sorted(str(p) for p in trained[1].rglob("*.png"))[:8]
    result = export_model(str(path), check=photos)
    assert result.path == path.parent / "model.onnx" and result.max_prob_diff <= 1e-4
    assert result.checked_on == "8 of the given images"
    card = json.loads((path.parent / "model.card.json").read_text())
    assert card["metrics"] is None and any("Not measured" in x for x in card["limits"])
    onnx_clf = cnnkit.load(str(path), device="cpu", backend="onnx")
    torch_clf = cnnkit.load(str(path), device="cpu", backend="torch")
    np.testing.assert_allclose(onnx_clf.predict_proba(photos), torch_clf.predict_proba(photos),
                               atol=1e-4)


def test_export_mistakes_are_one_line(trained, tmp_path: Path, capsys) -> None:
    assert main(["export", str(trained[0]), "--format", "tflite"]) == 2
    assert "--format must be one of onnx" in capsys.readouterr().err
    assert main(["export", str(trained[0]), "--out", str(tmp_path / "m.pt")]) == 2
    assert "--out must end in .onnx" in capsys.readouterr().err
    with pytest.raises(CnnkitError, match="opset must be 17 or newer"):
        export_model(str(trained[0]), opset=13)


@pytest.mark.parametrize("which", ["trained", "calibrated", "grey_run"])
def test_readme_plain_onnxruntime_snippet_runs(which: str, trained, request, tmp_path: Path,
                                               monkeypatch, capsys) -> None:
    # A calibrated run's file answered the logits' own softmax (0.64 where cnnkit said
    # 0.97), and a model of grey data was shown the photo's colours
    run = trained[0] if which == "trained" else request.getfixturevalue(which)
    text = README.read_text()
    section = text[text.index("## Export and fast prediction"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "cnnkit" not in code
    photo = sorted(trained[1].rglob("*.png"))[0]
    tinted = np.asarray(Image.open(photo).convert("RGB"), np.float32) * [1.0, 0.6, 0.3]
    Image.fromarray(tinted.astype(np.uint8)).save(tmp_path / "photo.jpg", quality=95)
    export_model(str(run), out=tmp_path / "model.onnx")
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "snippet.py"
    script.write_text(code)
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    label, prob = out.splitlines()[-1].split()
    clf = cnnkit.load(str(run), backend="torch")
    assert (clf.task.temperature != 1) == (which != "trained")
    assert clf.card.preprocess.grey == (which == "grey_run")
    expected = clf.predict([str(tmp_path / "photo.jpg")], top_k=1)[0]
    assert label == expected.top[0][0]
    assert float(prob) == pytest.approx(expected.top[0][1], abs=2e-3)
    # the model card says so too
    doc = json.loads((tmp_path / "model.card.json").read_text())
    assert ("divided by the temperature" in doc["output"]) == (which != "trained")
    said = "3 channels, each the image's grey (luma)"
    assert (said in (tmp_path / "model.card.md").read_text()) == (which == "grey_run")



def _registry_cases() -> list:
    """cnnkit's own architectures. The pretrained backbones go through the same exporter
    as EfficientNet-Lite0 above at many seconds each (docs/design-notes.md, "Export,
    backends and batch prediction"); AlexNet's pooling is the case below."""
    from cnnkit.models import list_models

    return [pytest.param(info.name, id=info.name) for info in list_models()
            if not info.is_pretrained]


@pytest.mark.parametrize("name", _registry_cases())
def test_every_registered_architecture_exports_with_a_dynamic_batch(name: str,
                                                                    tmp_path: Path) -> None:
    import torch

    from cnnkit.artifacts.onnxfile import OnnxMeta, export_onnx
    from cnnkit.runtime.backends import OnnxBackend

    arch, _ = resolve(name)
    chans, size = 1, 28
    torch.manual_seed(0)
    model = create_model(arch, 5, chans, size, pretrained=name == "efficientnet_lite0").eval()
    pre = Preprocess(size, chans, (0.5,) * chans, (0.5,) * chans)
    path = export_onnx(model, OnnxMeta(tuple("abcde"), pre, {}), tmp_path / "m.onnx")
    backend = OnnxBackend(path, threads=1)
    assert backend.input == "input"
    for batch in (1, 3):
        x = torch.randn(batch, chans, size, size)
        with torch.no_grad():
            expected = model(x).softmax(1)
        assert (backend(x).softmax(1) - expected).abs().max() <= 1e-4


def test_a_graph_the_torchscript_exporter_refuses_goes_through_torch_export(
        tmp_path: Path) -> None:
    """Adaptive pooling to a size that does not divide its input (AlexNet's 6x6 pooling
    below 224 px) has no TorchScript export; the torch.export-based exporter takes it."""
    import torch
    from torch import nn

    from cnnkit.artifacts.onnxfile import OnnxMeta, export_onnx
    from cnnkit.runtime.backends import OnnxBackend

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(3),
                          nn.Flatten(), nn.Linear(36, 2)).eval()
    pre = Preprocess(9, 1, (0.5,), (0.5,))  # a 7x7 map pooled to 3x3
    path = export_onnx(model, OnnxMeta(("a", "b"), pre, {}), tmp_path / "m.onnx")
    backend = OnnxBackend(path, threads=1)
    assert backend.input == "input" and read_meta(path).classes == ("a", "b")
    for batch in (1, 4):
        x = torch.randn(batch, 1, 9, 9)
        with torch.no_grad():
            assert (backend(x) - model(x)).abs().max() <= 1e-5


def test_executorch_export_runs_in_its_own_runtime_and_joins_the_card(trained, tmp_path: Path,
                                                                       capsys) -> None:
    """--format executorch: a .pte that ExecuTorch's runtime (not cnnkit) answers as torch
    does, with a dynamic batch; its parity printed and in the card beside the ONNX file's."""
    import torch
    from executorch.runtime import Runtime

    from cnnkit.export.executorch import MAX_BATCH

    assert main(["export", str(trained[0]), "--out", str(tmp_path / "m.onnx")]) == 0
    out = tmp_path / "m.pte"
    assert main(["export", str(trained[0]), "--format", "executorch", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "executorch parity with torch on" in text
    clf = cnnkit.load(str(trained[0]), device="cpu", backend="torch")
    files = sorted(str(p) for p in trained[1].rglob("*.png"))[:5]
    method = Runtime.get().load_program(out).load_method("forward")
    for batch in (files[:1], files):
        logits = method.execute([clf.transform(batch).contiguous()])[0]
        np.testing.assert_allclose(logits.softmax(1).numpy(), clf.predict_proba(batch),
                                   atol=1e-4)
    full = clf.transform(files * 13)[:MAX_BATCH].contiguous()  # the largest batch it takes
    with torch.inference_mode():
        want = clf.model(full).softmax(1).numpy()
    np.testing.assert_allclose(method.execute([full])[0].softmax(1).numpy(), want, atol=1e-4)
    card = json.loads((tmp_path / "m.card.json").read_text())
    assert [(f["file"], f["runtime"]) for f in card["files"]] == [
        ("m.pte", "executorch"), ("m.onnx", "onnxruntime")]
    assert {p["runtime"] for p in card["parity"]} == {"executorch", "onnx"}
    assert card["metrics"]["measured_with"] == "m.pte"
    assert derived.check(out, clf.card.sha256) is None


def test_executorch_mistakes_are_one_line(trained, tmp_path: Path, capsys, monkeypatch) -> None:
    run = str(trained[0])
    for args, words in ((["--quantize", "int8"], "makes an ONNX file"),
                        (["--out", str(tmp_path / "m.onnx")], "must end in .pte")):
        assert main(["export", run, "--format", "executorch", *args]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    monkeypatch.setitem(__import__("sys").modules, "executorch", None)  # not installed
    assert main(["export", run, "--format", "executorch", "--out", str(tmp_path / "m.pte")]) == 2
    err = capsys.readouterr().err
    assert "pip install 'cnnkit[executorch]'" in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())
