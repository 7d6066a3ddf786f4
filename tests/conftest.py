"""Shared fixtures: an isolated cache, quiet logs, and small real image trees on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.base import log
from cnnkit.data import shapes


def pytest_configure(config: pytest.Config) -> None:
    # Test models are tiny: one thread is as fast, and with other work on the machine
    # two OpenMP threads wait on each other (a resnet-small forward: 0.38 s vs 0.005 s).
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; the CPU path is tested separately")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Each test session gets its own decode cache; nothing leaks into ~/.cache."""
    cache = tmp_path_factory.getbasetemp() / "cnnkit-cache"
    monkeypatch.setenv("CNNKIT_CACHE", str(cache))
    log.set_quiet(False)
    yield


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts on the one thread pytest_configure set: a library that shares
    torch's OpenMP runtime can change it for the whole process (numba's omp layer, run
    by UMAP in the data map, sets it to the core count for every later test)."""
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)
    yield


@pytest.fixture
def brief_int8_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """An int8 export times both files for 3 s each, resting 0.2 s before each call,
    before it says and records their speeds; a test that exports reads those figures for
    agreement (printed, in the card, the slower-file warning), never for their precision:
    the five timed rounds the measurement always takes stand, without the rests
    (export.quantize.median_rates)."""
    from functools import partial

    from cnnkit.export import quantize

    monkeypatch.setattr(quantize, "speed", partial(quantize.speed, seconds=0.0))
    monkeypatch.setattr(quantize, "median_rates", partial(quantize.median_rates, pause=0.0))


def write_shapes_tree(root: Path, per_class: int = 12, size: int = 32, seed: int = 0,
                      fmt: str = "png") -> Path:
    """A class-per-folder tree of real image files made by the shapes generator."""
    images, labels = shapes.generate(per_class * len(shapes.CLASSES), size, seed)
    counts = dict.fromkeys(range(len(shapes.CLASSES)), 0)
    for img, label in zip(images, labels):
        folder = root / shapes.CLASSES[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        counts[int(label)] += 1
        Image.fromarray(img).save(folder / f"{counts[int(label)]:03d}.{fmt}")
    return root


@pytest.fixture
def make_tree():
    """:func:`write_shapes_tree`, for tests that need several trees or other sizes."""
    return write_shapes_tree


@pytest.fixture
def shapes_tree(tmp_path: Path) -> Path:
    return write_shapes_tree(tmp_path / "shapes")


@pytest.fixture
def nested_folders():
    """``make(top, depth)``: ``top/d/d/.../d``, ``depth`` folders deep, made and removed
    one by one (os.makedirs and shutil.rmtree, pytest's clean-up included, recurse and
    fail past about 1,000 levels)."""
    made: list[tuple[Path, int]] = []

    def make(top: Path, depth: int) -> Path:
        top.mkdir(parents=True, exist_ok=True)
        folder = top
        for _ in range(depth):
            folder = folder / "d"
            folder.mkdir()
        made.append((top, depth))
        return folder

    yield make
    for top, depth in made:
        folder = top.joinpath(*["d"] * depth)
        for _ in range(depth):
            for entry in os.scandir(folder):
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.path)
            os.rmdir(folder)
            folder = folder.parent


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny run on a folder of shapes, shared read-only: ``(run folder, data folder)``.

    Tests that change a run copy it first.
    """
    import cnnkit

    base = tmp_path_factory.mktemp("trained")
    data = write_shapes_tree(base / "photos", per_class=10, size=20, seed=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cnnkit-cache"))
        result = cnnkit.train(str(data), model="conv6k3same-pool2-conv8k3-gap", img_size=16,
                              epochs=3, batch_size=8, val_fraction=0.2, test_fraction=0.2,
                              plots=False, device="cpu", out=str(base / "runs"),
                              name="shapes-run")
    return result.run_dir, data


@pytest.fixture(scope="session")
def lite0_features_run(tmp_path_factory: pytest.TempPathFactory):
    """EfficientNet-Lite0's features mode, one round on 60 shapes at 32 px: the trained
    start that --init-from runs begin from, shared read-only (a ``TrainResult``)."""
    import cnnkit

    out = tmp_path_factory.mktemp("lite0-features")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cnnkit-cache"))
        return cnnkit.train("shapes:count=60,size=32", model="efficientnet_lite0",
                            mode="features", epochs=1, img_size=32, plots=False,
                            device="cpu", seed=0, out=str(out), name="features")


def write_mosaics(root: Path, count: int = 120, seed: int = 0) -> Path:
    """``count`` real Fashion-MNIST mosaics (the built-in multi-label set's) as PNGs in
    ``root`` with ``root/labels.csv`` of ``path,labels`` rows; returns the CSV."""
    from cnnkit.data import fashion_mnist, mosaic

    _, _, items, classes = fashion_mnist.load()
    images, targets = mosaic.generate(items[:400], classes[:400], count, seed, 0.25,
                                      len(fashion_mnist.CLASSES))
    root.mkdir(parents=True, exist_ok=True)
    rows = ["path,labels"]
    for i, (img, hot) in enumerate(zip(images, targets)):
        Image.fromarray(img).save(root / f"m{i:03d}.png")
        names = [fashion_mnist.CLASSES[k] for k in np.flatnonzero(hot)]
        rows.append(f"m{i:03d}.png,{'|'.join(names)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


@pytest.fixture(scope="session")
def grey_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EfficientNet-Lite0's features on the grey built-in digits at 32 px (a 3-channel
    backbone on grey data), shared read-only."""
    import cnnkit

    base = tmp_path_factory.mktemp("grey")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cnnkit-cache"))
        result = cnnkit.train("digits", model="efficientnet_lite0", mode="features",
                              img_size=32, plots=False, seed=0, out=str(base / "runs"))
    return result.run_dir


@pytest.fixture(scope="session")
def trained_multilabel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny multi-label run on a CSV of mosaics, shared read-only: ``(run folder,
    labels.csv)``. Tests that change a run copy it first."""
    import cnnkit

    base = tmp_path_factory.mktemp("trained-multilabel")
    csv = write_mosaics(base / "mosaics")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNKIT_CACHE", str(tmp_path_factory.getbasetemp() / "cnnkit-cache"))
        result = cnnkit.train(str(csv), model="conv8k3same-pool2-conv16k3-gap", img_size=28,
                              epochs=2, batch_size=16, val_fraction=0.25, test_fraction=0.25,
                              plots=False, device="cpu", out=str(base / "runs"),
                              name="mosaic-run")
    return result.run_dir, csv


@pytest.fixture(scope="session")
def calibrated(trained, tmp_path_factory) -> Path:
    """The shared run, copied, with its task fitted on its own 30 images (the tiny run's
    validation split is too small) as training fits it: a real temperature, feature
    statistics beside the weights and an unknown rule on the energy and the distance in
    its card. (How well the rule tells unknown images is benchmarks/unknown.py's; here,
    that it reaches every way of asking.)"""
    import shutil
    from dataclasses import replace

    import torch

    import cnnkit
    from cnnkit.artifacts.featurestats import save_stats
    from cnnkit.artifacts.modelfile import load_model, update_card
    from cnnkit.data.imageset import ImageSet
    from cnnkit.models.feature_distance import WithDistance
    from cnnkit.runtime.inference import view_outputs
    from cnnkit.training.calibrate import feature_stats

    run = shutil.copytree(trained[0], tmp_path_factory.mktemp("cal") / "run",
                          ignore=shutil.ignore_patterns("*.onnx*"))
    model, card = load_model(run)
    clf = cnnkit.load(str(run), backend="torch")
    files = sorted(str(p) for p in trained[1].rglob("*.png"))
    images = torch.from_numpy(np.stack([clf.decode_image(f) for f in files]))
    labels = torch.tensor([card.classes.index(Path(f).parent.name) for f in files])
    data = ImageSet(images, labels, card.classes)
    cpu = torch.device("cpu")
    stats = feature_stats(model, data, card.preprocess, cpu)
    features = save_stats(stats, run / "model.safetensors")
    views, distances = view_outputs(WithDistance(model, stats.means, stats.whiten, stats.iso), data,
                                    card.preprocess, cpu)
    task = card.task.fit_held_out([v.astype(np.float64) for v in views], labels.numpy(),
                                  distances=distances, features=features)
    assert task.unknown.uses_distance
    # The tiny model (635 numbers, 18 images) barely tells anything apart: its rule keeps
    # half of the known images rather than 95%, so that a strange image is over the line.
    task = replace(task, unknown=replace(task.unknown, kept=0.5))
    update_card(run, replace(card, task=task))
    return run


def _candidates() -> list[np.ndarray]:
    board = (np.indices((20, 20)).sum(0) % 2 * 255).astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8)
    return [np.repeat(a[:, :, None], 3, axis=2) for a in (
        board, noise, np.full((20, 20), 255, np.uint8), np.zeros((20, 20), np.uint8))]


@pytest.fixture(scope="session")
def strange(calibrated) -> np.ndarray:
    """Of a few images of none of the classes (a checkerboard, noise, white, black), the
    one the tiny model finds strangest: the rule must answer it 'unknown' everywhere."""
    import cnnkit

    clf = cnnkit.load(str(calibrated), backend="torch")
    preds = clf.predict(_candidates())
    return _candidates()[int(np.argmax([p.unknown_score for p in preds]))]
