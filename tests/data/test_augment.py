"""Rotation, zoom, translation, shear and the presets: where pixels go, and one resample."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnkit.base.config import augment_tokens
from cnnkit.base.errors import CnnkitError
from cnnkit.data import augment as aug
from cnnkit.data.pipeline import Preprocess, train_batch

SIZE = 41
PRE = Preprocess(SIZE, 1, (0.0,), (1.0 / 255,))  # "normalised" values stay 0..255


def _marked(row: int, col: int, n: int = 1) -> torch.Tensor:
    x = torch.zeros(n, 1, SIZE, SIZE, dtype=torch.uint8)
    x[:, :, row - 1:row + 2, col - 1:col + 2] = 255  # a 3x3 mark centred on (row, col)
    return x


def _centroid(img: torch.Tensor, near: tuple[float, float] | None = None
              ) -> tuple[float, float]:
    """The mark's centre of mass; ``near``: only within 4 px of that point (the mirrored
    fill can hold a copy of the mark elsewhere), which must hold most of the mark."""
    w = img[0].clamp(min=0)
    if near is not None:
        r, c = round(near[0]), round(near[1])
        window = torch.zeros_like(w)
        window[max(0, r - 4):r + 5, max(0, c - 4):c + 5] = 1
        w = w * window
        assert w.sum() > 0.5 * 9 * 255
    rows = torch.arange(SIZE, dtype=torch.float32).view(-1, 1)
    cols = torch.arange(SIZE, dtype=torch.float32).view(1, -1)
    return float((w * rows).sum() / w.sum()), float((w * cols).sum() / w.sum())


def _expected(matrix: torch.Tensor, row: int, col: int) -> tuple[float, float]:
    """Where the matrix (output -> input, in [-1, 1]) sends the input pixel (row, col)."""
    def to_unit(i: float) -> float:  # pixel centre -> align_corners=False coordinates
        return (2 * i + 1) / SIZE - 1

    u = torch.tensor([to_unit(col), to_unit(row), 1.0])
    out = torch.linalg.solve(matrix, u)
    return float(((out[1] + 1) * SIZE - 1) / 2), float(((out[0] + 1) * SIZE - 1) / 2)


def test_a_quarter_turn_counter_clockwise_moves_right_of_centre_to_above() -> None:
    x = _marked(20, 32)  # 12 px right of the centre (20, 20)
    out = aug.warp(x, aug.rotation(torch.tensor([90.0])), SIZE, padding="zeros")
    r, c = _centroid(out[0])
    assert abs(r - 8) < 0.3 and abs(c - 20) < 0.3


@pytest.mark.parametrize("token", ["rotate30", "zoom0.3", "shift0.2", "shear20",
                                   "rotate45+zoom0.2+shift0.1+shear10"])
def test_the_mark_lands_where_the_matrix_says(token: str) -> None:
    n, row, col = 16, 14, 25
    tokens = tuple(token.split("+"))
    out = train_batch(_marked(row, col, n), PRE, tokens, torch.Generator().manual_seed(5))
    # the same draws, from the same seed, as matrices
    matrices = aug.random_geometry(n, aug.geometry(tokens), torch.Generator().manual_seed(5))
    moved = 0
    for img, m in zip(out, matrices):
        want = _expected(m, row, col)
        got = _centroid(img, near=want)
        assert abs(got[0] - want[0]) < 0.35 and abs(got[1] - want[1]) < 0.35, (token, got, want)
        moved += abs(want[0] - row) + abs(want[1] - col) > 1
    assert moved > n // 2  # the draws differ, and most move the mark


def test_rotation_matrices_are_rotations_within_the_limit() -> None:
    m = aug.random_geometry(200, aug.Geometry(rotate=15), torch.Generator().manual_seed(0))
    a = m[:, :2, :2]
    assert torch.allclose(a @ a.transpose(1, 2), torch.eye(2).expand(200, 2, 2), atol=1e-6)
    angles = torch.rad2deg(torch.atan2(a[:, 1, 0], a[:, 0, 0]))
    assert angles.abs().max() <= 15 + 1e-4 and angles.abs().max() > 12


def test_every_geometric_token_and_a_preset_share_one_resample(monkeypatch) -> None:
    calls = []
    real = F.grid_sample
    monkeypatch.setattr(F, "grid_sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.randint(0, 256, (8, 3, 96, 96), dtype=torch.uint8)
    pre = Preprocess(64, 3, (0.5,) * 3, (0.5,) * 3)
    tokens = augment_tokens("flip+vflip+crop+rotate15+zoom0.2+shift0.1+shear10+randaugment")
    out = train_batch(x, pre, tokens, torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 64, 64) and torch.isfinite(out).all()
    assert len(calls) == 1


@pytest.mark.parametrize("preset", ["randaugment", "trivialaugment"])
def test_presets_vary_per_image_and_are_seeded(preset: str) -> None:
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    pre = Preprocess(32, 3, (0.0,) * 3, (1 / 255,) * 3)
    a = train_batch(x, pre, (preset,), torch.Generator().manual_seed(1))
    b = train_batch(x, pre, (preset,), torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 255
    changed = (a - x.float()).abs().flatten(1).mean(1) > 1
    assert 10 < int(changed.sum()) <= 64  # some images drew 'identity' or a mild change


def test_colour_operations_do_what_pil_does() -> None:
    ramp = torch.linspace(50, 150, 16 * 16).view(1, 1, 16, 16)
    eq = aug._colour_op("equalize", ramp.clone(), torch.zeros(1, 1, 1, 1))
    assert eq.min() == 0 and eq.max() == 255
    auto = aug._colour_op("autocontrast", ramp.clone(), torch.zeros(1, 1, 1, 1))
    assert auto.min() == 0 and auto.max() == 255
    post = aug._colour_op("posterize", ramp.round(), torch.ones(1, 1, 1, 1))
    assert set((post % 16).unique().tolist()) == {0.0}  # 4 bits left
    sol = aug._colour_op("solarize", torch.tensor([[[[10.0, 200.0]]]]),
                         torch.full((1, 1, 1, 1), 0.5))
    assert sol.flatten().tolist() == [10.0, 55.0]


@pytest.mark.parametrize("spec, message", [
    ("rotate", "rotate takes a number"), ("zoom1.5", "at most 0.9"),
    ("rotate10+rotate20", "rotate once"), ("randaugment+trivialaugment", "one preset"),
    ("twist", "Unknown augmentation 'twist'"),
])
def test_bad_specs_say_what_to_write(spec: str, message: str) -> None:
    with pytest.raises(CnnkitError, match=message):
        augment_tokens(spec)


def test_preview_grid_from_a_real_photo(tmp_path) -> None:
    import numpy as np
    import skimage.data
    from PIL import Image

    from cnnkit.cli import main

    photo = tmp_path / "cat.png"
    Image.fromarray(skimage.data.chelsea()).save(photo)
    before = photo.read_bytes()
    out = tmp_path / "grid.png"
    assert main(["data", "preview", str(photo), "--augment", "flip+rotate30+zoom0.2",
                 "--each", "--samples", "3", "--img-size", "64", "--out", str(out)]) == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] > 300 and grid.std() > 20  # four rows of pictures, not a blank
    assert photo.read_bytes() == before
