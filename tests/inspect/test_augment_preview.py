"""What `cnnkit data preview` shows: real images of the data, one per class or label."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from cnnkit.cli import main
from cnnkit.inspect.augment_preview import preview_images


def test_a_multilabel_csv_is_previewed_one_image_per_label(tmp_path: Path) -> None:
    # a multi-hot matrix compared with a label number picked images by their zeros, and
    # naming them ended in a traceback ("only one element tensors can be converted")
    rows = ["path,labels"]
    for i, labels in enumerate(["cat|dog", "dog", "", "bird|cat", "bird"]):
        Image.new("RGB", (24, 24), (40 * i, 90, 200 - 30 * i)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{labels}")
    (tmp_path / "tags.csv").write_text("\n".join(rows) + "\n")
    x, names, _, _ = preview_images(str(tmp_path / "tags.csv"), images=3)
    # an image per label, in label order (bird, cat, dog), a new one where there is one,
    # each named by its label set
    assert names == ["bird|cat", "cat|dog", "dog"] and len(x) == 3
    out = tmp_path / "grid.png"
    assert main(["data", "preview", str(tmp_path / "tags.csv"), "--augment", "flip",
                 "--samples", "2", "--out", str(out)]) == 0
    assert out.is_file()


def test_the_default_preview_is_what_train_uses_on_the_data(tmp_path: Path) -> None:
    """Digits are not flipped in training (a mirrored 2 is no 2), so the preview of their
    default must not show flips; a folder of cats and dogs is flipped and cropped."""
    from cnnkit.base.config import TrainConfig
    from cnnkit.training.recipe import resolve_config

    _, _, _, digits = preview_images("digits", images=2)
    assert digits == "crop"
    assert resolve_config(TrainConfig(data="digits", model="lenet5", device="cpu")
                          ).config.augment == digits
    for i, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        Image.new("RGB", (24, 24), (90 * i, 90, 120)).save(tmp_path / name / "0.png")
    _, _, _, pets = preview_images(str(tmp_path), images=2)
    assert pets == "flip+crop"
    out = tmp_path / "grid.png"
    assert main(["data", "preview", "digits", "--samples", "2", "--images", "2",
                 "--out", str(out)]) == 0 and out.is_file()
