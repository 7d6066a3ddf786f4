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
    x, names, _ = preview_images(str(tmp_path / "tags.csv"), images=3)
    # an image per label, in label order (bird, cat, dog), a new one where there is one,
    # each named by its label set
    assert names == ["bird|cat", "cat|dog", "dog"] and len(x) == 3
    out = tmp_path / "grid.png"
    assert main(["data", "preview", str(tmp_path / "tags.csv"), "--augment", "flip",
                 "--samples", "2", "--out", str(out)]) == 0
    assert out.is_file()
