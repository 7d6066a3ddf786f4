"""Batched augmentation: what each transform does to a batch, and that it is seeded."""

from __future__ import annotations

import pytest
import torch

from cnnkit.data.pipeline import Preprocess, eval_batch, mix_batch, train_batch

PRE = Preprocess(16, 1, (0.0,), (1.0 / 255,))  # "normalised" values stay 0..255


def _batch(n: int = 64) -> torch.Tensor:
    x = torch.zeros(n, 1, 16, 16, dtype=torch.uint8)
    x[:, :, 6:10, 2:5] = 200  # a bar left of centre
    return x


def test_flip_only_is_the_evaluation_view_or_its_mirror() -> None:
    x = _batch()
    out = train_batch(x, PRE, ("flip",), torch.Generator().manual_seed(0))
    plain = eval_batch(x, PRE)
    mirrored = plain.flip(-1)
    same = [(o == p).all().item() for o, p in zip(out, plain)]
    flipped = [(o == m).all().item() for o, m in zip(out, mirrored)]
    assert all(a or b for a, b in zip(same, flipped))
    assert 10 < sum(flipped) < 54  # about half


def test_small_image_crop_shifts_by_whole_pixels_and_pads_with_zeros() -> None:
    x = _batch()
    out = train_batch(x, PRE, ("crop",), torch.Generator().manual_seed(0))
    assert out.shape == (64, 1, 16, 16)
    values = set(out.unique().tolist())
    assert values <= {0.0, 200.0}  # no interpolation: pixels move, they do not blur
    assert all(int((o == 200).sum()) > 0 for o in out)  # a shift of <= 2 px keeps the bar
    positions = {tuple(torch.nonzero(o[0] == 200)[0].tolist()) for o in out}
    assert len(positions) > 5  # and images are shifted differently
    assert max(abs(r - 6) for r, _ in positions) <= 2
    assert max(abs(c - 2) for _, c in positions) <= 2


def test_crop_and_flip_are_seeded() -> None:
    x = _batch()
    a = train_batch(x, PRE, ("flip", "crop"), torch.Generator().manual_seed(3))
    b = train_batch(x, PRE, ("flip", "crop"), torch.Generator().manual_seed(3))
    c = train_batch(x, PRE, ("flip", "crop"), torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    right = (a[:, 0, :, 8:] == 200).flatten(1).any(1)  # mirrored bars end up on the right
    assert 10 < int(right.sum()) < 54


def test_large_images_get_a_resized_crop_at_the_model_size() -> None:
    x = torch.randint(0, 255, (8, 3, 100, 120), dtype=torch.uint8)
    pre = Preprocess(32, 3, (0.5,) * 3, (0.5,) * 3, "bicubic")
    out = train_batch(x, pre, ("flip", "crop"), torch.Generator().manual_seed(0))
    assert out.shape == (8, 3, 32, 32) and torch.isfinite(out).all()
    assert out.min() >= -1.0 and out.max() <= 1.0  # bicubic overshoot clamped


def test_grey_images_become_normalised_rgb_and_inputs_are_left_alone() -> None:
    x = torch.randint(0, 256, (4, 1, 16, 16), dtype=torch.uint8)
    before = x.clone()
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pre = Preprocess(16, 3, mean, std)
    out = eval_batch(x, pre)
    expected = (x.float().expand(-1, 3, -1, -1) / 255
                - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert out.shape == (4, 3, 16, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected)
    train_batch(x, pre, ("flip", "crop"), torch.Generator().manual_seed(0))
    assert torch.equal(x, before)  # normalising in place never reaches the source images


def test_mixup_blends_images_and_targets_by_the_same_share() -> None:
    x = torch.stack([torch.full((1, 8, 8), float(i)) for i in range(6)])
    y = torch.arange(6)
    out, target = mix_batch(x, y, 6, ("mixup",), torch.Generator().manual_seed(0))
    lam = target[0, 0].item()
    assert 0.0 < lam < 1.0 and torch.allclose(target.sum(1), torch.ones(6))
    assert target[0, 5].item() == pytest.approx(1 - lam)  # image 0 is mixed with image 5
    assert out[0, 0, 0, 0].item() == pytest.approx(lam * 0 + (1 - lam) * 5)
    assert torch.equal(x[:, 0, 0, 0], torch.arange(6.0))  # the input is not overwritten


def test_cutmix_pastes_a_box_and_labels_it_by_its_area() -> None:
    x = torch.zeros(4, 1, 16, 16)
    x[2:] = 1.0  # images 2 and 3 are white; 0 and 1 get boxes from them
    y = torch.tensor([0, 0, 1, 1])
    for seed in range(5):
        out, target = mix_batch(x, y, 2, ("cutmix",), torch.Generator().manual_seed(seed))
        white = out[0].mean().item()  # share of image 0 taken from image 3
        assert target[0, 1].item() == pytest.approx(white)
        assert set(out.unique().tolist()) <= {0.0, 1.0}  # pasted, not blended


def test_mixup_and_cutmix_mix_label_sets() -> None:
    x = torch.zeros(4, 1, 16, 16)
    x[2:] = 1.0
    y = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 1, 1], [0, 0, 1]], dtype=torch.float32)
    for kind in ("mixup", "cutmix"):
        out, target = mix_batch(x, y, 3, (kind,), torch.Generator().manual_seed(1))
        share = out[0].mean().item()  # of image 0 taken from image 3
        assert target[0].tolist() == pytest.approx([1 - share, 1 - share, share], abs=1e-5)
        # a label both images have stays wholly present
        assert target[1, 1].item() == pytest.approx(1.0) and target[1, 0].item() < 1.0


def test_no_mix_token_leaves_the_batch_and_hard_labels() -> None:
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    out, target = mix_batch(x, y, 4, ("flip",), torch.Generator())
    assert out is x and target is y
