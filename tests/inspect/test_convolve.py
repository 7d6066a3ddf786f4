"""Convolution by hand on a real photo: the numbers equal PyTorch's, the sizes the formula's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main
from cnnkit.inspect.convolve import (
    FILTERS,
    conv2d,
    convolve,
    load_grey,
    out_size,
    parse_kernel,
    parse_padding,
    pool2d,
)


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory):
    """skimage's coffee photo, shrunk, saved as a PNG file and read back as grey."""
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "coffee.png"
    Image.fromarray(data.coffee()).resize((60, 40)).save(path)
    return path, load_grey(path)


def _torch(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image)[None, None]


@pytest.mark.parametrize("name", sorted(FILTERS))
@pytest.mark.parametrize(("stride", "padding"), [(1, "valid"), (1, "same"), (2, "valid"),
                                                 (2, "same"), (3, "2")])
def test_conv_equals_torch(photo, name: str, stride: int, padding: str) -> None:
    _, image = photo
    _, kernel = parse_kernel(name)
    pads = parse_padding(padding, kernel.shape)
    ours = conv2d(image, kernel, stride, pads)
    theirs = F.conv2d(_torch(image), torch.from_numpy(kernel)[None, None], stride=stride,
                      padding=pads)[0, 0].numpy()
    assert ours.shape == theirs.shape
    assert ours.shape == (out_size(40, 3, stride, pads[0]), out_size(60, 3, stride, pads[1]))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("size", "stride"), [(2, 2), (3, 2), (3, 1), (4, 3)])
def test_pooling_equals_torch(photo, size: int, stride: int) -> None:
    _, image = photo
    np.testing.assert_allclose(pool2d(image, size, stride, "max"),
                               F.max_pool2d(_torch(image), size, stride)[0, 0].numpy(), atol=0)
    np.testing.assert_allclose(pool2d(image, size, stride, "avg"),
                               F.avg_pool2d(_torch(image), size, stride)[0, 0].numpy(),
                               atol=1e-12)


def test_layer_equals_torch_layer(photo) -> None:
    """conv -> ReLU -> pooling with a custom, non-square kernel, as one torch layer stack."""
    _, image = photo
    name, kernel = parse_kernel("1,0,-1;2,0,-2")
    assert name == "custom" and kernel.shape == (2, 3)
    result = convolve(image, kernel, stride=2, padding=(1, 1), activation="relu",
                      pool="avg", pool_size=3, pool_stride=2)
    x = F.conv2d(_torch(image), torch.from_numpy(kernel)[None, None], stride=2, padding=1)
    expected = F.avg_pool2d(F.relu(x), 3, 2)[0, 0].numpy()
    np.testing.assert_allclose(result.output, expected, atol=1e-12)
    assert [s.name for s in result.steps] == ["conv", "relu", "avgpool"]
    conv_h = (40 - 2 + 2 * 1) // 2 + 1
    assert result.steps[0].output.shape[0] == conv_h
    assert f"floor((40 - 2 + 2*1) / 2) + 1 = {conv_h}" in result.report()
    pooled = (conv_h - 3) // 2 + 1
    assert f"floor(({conv_h} - 3 + 2*0) / 2) + 1 = {pooled}" in result.report()


def test_kernels_and_padding_are_read_carefully() -> None:
    assert parse_kernel("blur")[1].sum() == pytest.approx(1.0)
    _, third = parse_kernel("1/3,1/3,1/3")
    np.testing.assert_allclose(third, [[1 / 3] * 3])
    assert parse_padding("same", (5, 5)) == (2, 2)
    assert parse_padding("valid", (3, 3)) == (0, 0)
    assert parse_padding(4, (3, 3)) == (4, 4)
    for bad, message in (("edges", "Unknown filter"), ("1,0;1", "different lengths"),
                         ("1,x,0", "Cannot read 'x'"), ("__import__('os')", "Unknown filter")):
        with pytest.raises(CnnkitError, match=message):
            parse_kernel(bad)
    with pytest.raises(CnnkitError, match="odd kernel"):
        parse_padding("same", (2, 2))
    with pytest.raises(CnnkitError, match="valid, same or a number"):
        parse_padding("full", (3, 3))
    with pytest.raises(CnnkitError, match="does not fit"):
        convolve(np.zeros((2, 2)), np.ones((3, 3)))
    with pytest.raises(CnnkitError, match="--pool takes max or avg"):
        convolve(np.zeros((8, 8)), np.ones((3, 3)), pool="min")


@pytest.mark.parametrize("entry", ["1e400", "-1e400", "1/0", "1e300/1e-300"])
def test_a_kernel_entry_that_is_no_finite_number_is_named(entry: str) -> None:
    with pytest.raises(CnnkitError, match=f"Cannot read {entry!r} in kernel"):
        parse_kernel(f"1,{entry};0,1")


@pytest.mark.parametrize(("flags", "message"), [
    (["--size", "0"], "--size must be 1 or more. Received: 0"),
    (["--size", "-5"], "--size must be 1 or more. Received: -5"),
    (["--padding", "100000"], "--padding 100000 is wider than the 40x60 image"),
    (["--pool", "max", "--pool-stride", "0"], "must be 1 or more. Received: 2, 0"),
])
def test_numbers_out_of_range_get_one_line(photo, tmp_path, capsys, flags: list[str],
                                           message: str) -> None:
    """No traceback, no 299 GiB allocation, no stride 0 silently read as the default."""
    path, _ = photo
    assert main(["convolve", str(path), *flags, "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "c.png").exists()


def test_convolve_command_draws_and_prints(photo, tmp_path, capsys) -> None:
    path, _ = photo
    out = tmp_path / "edges.png"
    code = main(["convolve", str(path), "--filter", "sobel-x", "--padding", "same",
                 "--activation", "relu", "--pool", "max", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "height: floor((40 - 3 + 2*1) / 1) + 1 = 40" in text
    assert "floor((60 - 2 + 2*0) / 2) + 1 = 30" in text
    with Image.open(out) as png:
        assert png.format == "PNG" and png.width > 800
    assert main(["convolve", str(tmp_path / "missing.png"), "--out", str(out)]) == 2
    assert main(["convolve", str(path), "--filter", "1,2;3", "--out", str(out)]) == 2


def test_relu_panel_is_scaled_to_a_percentile_and_says_so() -> None:
    from cnnkit.inspect.figures import display_range

    rng = np.random.default_rng(0)
    out = np.maximum(rng.normal(0, 0.1, (50, 50)), 0)
    out[0, :5] = 5.0  # a few strong edges would make min..max nearly black
    lo, hi, caption = display_range(out, after_relu=True)
    assert lo == 0 and hi == pytest.approx(np.percentile(out[out > 0], 99))
    assert hi < 1 and "99th percentile" in caption and "clipped" in caption
    assert (np.clip(out / hi, 0, 1) > 0.25).mean() > 10 * (out / out.max() > 0.25).mean()
    assert display_range(out - 0.5, after_relu=False)[2] == ""  # plain maps: min..max


def test_animation_slides_the_window_one_output_value_per_frame(photo, tmp_path, capsys,
                                                                 monkeypatch) -> None:
    from cnnkit.inspect.convolve import conv2d, load_grey
    from cnnkit.inspect.convolve_anim import busiest_crop

    path, _ = photo
    monkeypatch.chdir(tmp_path)
    gif = tmp_path / "slide.gif"
    assert main(["convolve", str(path), "--filter", "sobel-x", "--animate", str(gif),
                 "--crop", "5", "--at", "3,4", "--stride", "2"]) == 0
    assert not (tmp_path / "convolution.png").exists()
    with Image.open(gif) as anim:
        assert anim.format == "GIF" and anim.n_frames == 4  # 5x5 crop, 3x3, stride 2: 2x2
        first = np.asarray(anim.convert("RGB"), dtype=np.int16)
        anim.seek(3)
        last = np.asarray(anim.convert("RGB"), dtype=np.int16)
    assert np.abs(first - last).mean() > 1  # the window and the output map changed
    grey = load_grey(path)
    kernel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=float)
    r, c = busiest_crop(grey, kernel, 6)
    response = np.abs(conv2d(grey, kernel, 1, (1, 1)))
    best = response[r:r + 6, c:c + 6].sum()
    assert best >= response[:6, :6].sum() and best >= response[-6:, -6:].sum()
    assert main(["convolve", str(path), "--animate", str(gif), "--at", "1000,0"]) == 2
    assert "outside" in capsys.readouterr().err
