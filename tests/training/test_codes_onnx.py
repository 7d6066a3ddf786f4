"""The features mode's frozen backbone on onnxruntime: the same codes as torch, exported
once, and torch's when a graph cannot be trusted."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnkit.data.imageset import ImageSet
from cnnkit.data.pipeline import Preprocess
from cnnkit.models.build import Architecture, create_model
from cnnkit.training import codes_onnx
from cnnkit.training.features import extract

SIDE = 32


def _tapped() -> tuple[torch.nn.Module, Preprocess, dict]:
    arch = Architecture("efficientnet_lite0", None,
                        (("taps", "blocks.3,blocks.4,blocks.5"),))
    model = create_model(arch, 3, 3, SIDE, pretrained=True).eval()
    pre = Preprocess(img_size=SIDE, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    return model, pre, arch.to_dict()


def _images(n: int = 10) -> ImageSet:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, SIDE, SIDE), dtype=torch.uint8, generator=gen)
    return ImageSet(images, torch.arange(n) % 3, ("a", "b", "c"))


def test_the_graph_codes_the_images_as_torch_does_and_is_made_once(monkeypatch) -> None:
    model, pre, arch = _tapped()
    cpu = torch.device("cpu")
    graph = codes_onnx.runner(model, pre, cpu, arch)
    assert graph is not None and codes_onnx.graph_path(model, pre, arch).is_file()
    data = _images()
    got = extract(model, data, pre, cpu, graph=graph)
    ref = extract(model, data, pre, cpu)
    assert got.shape == ref.shape == (10, 2 * (80 + 112 + 192 + 1280))
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-4)

    def export_again(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(codes_onnx, "_export", export_again)
    assert codes_onnx.runner(model, pre, cpu, arch) is not None  # from the cache
    assert codes_onnx.runner(model, pre, torch.device("meta"), arch) is None  # CPU only
    # other weights are another graph
    with torch.no_grad():
        model.net.conv_stem.weight.add_(0.01)
    assert codes_onnx.graph_path(model, pre, arch) != graph.path


def test_a_graph_that_disagrees_with_torch_is_not_used(monkeypatch, capsys) -> None:
    model, pre, arch = _tapped()
    with torch.no_grad():  # weights of its own: no graph of them in the cache
        model.net.conv_stem.weight.mul_(1.5)
    monkeypatch.setattr(codes_onnx, "TOLERANCE", -1.0)  # nothing agrees that well
    assert codes_onnx.runner(model, pre, torch.device("cpu"), arch) is None
    assert not codes_onnx.graph_path(model, pre, arch).exists()
    assert list(Path(codes_onnx.graph_path(model, pre, arch).parent).glob(".codes-*")) == []
    assert "coding with torch" in capsys.readouterr().out


@pytest.mark.parametrize("threads", [1, 2])
def test_a_small_head_fits_the_same_on_any_thread_count(threads: int) -> None:
    from cnnkit.tasks.registry import get_task
    from cnnkit.training.features import fit_head

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 40, generator=gen), torch.arange(30) % 3
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        head = fit_head(x, y, 3, get_task("single-label"), rounds=2)
        assert torch.get_num_threads() == threads  # put back
    finally:
        torch.set_num_threads(before)
    assert (head(x).argmax(1) == y).float().mean() > 0.9


def test_runs_that_differ_only_in_normalisation_share_a_graph() -> None:
    from dataclasses import replace

    model, pre, arch = _tapped()
    other = replace(pre, mean=(0.4,) * 3, crop_pct=0.875, interpolation="bicubic")
    assert codes_onnx.graph_path(model, other, arch) == codes_onnx.graph_path(model, pre, arch)
    assert codes_onnx.graph_path(model, replace(pre, img_size=SIDE + 32), arch) != \
        codes_onnx.graph_path(model, pre, arch)
