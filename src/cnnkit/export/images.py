"""Real images to check and calibrate an export with: a run's own splits, the user's files,
or (for a pretrained model without a run) the photos that ship with scikit-image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cnnkit.artifacts.rundir import RunDir
from cnnkit.base.errors import CnnkitError
from cnnkit.data.decode import CorruptImageError
from cnnkit.data.imageset import ImageSet
from cnnkit.data.sources import load_files, load_run_splits
from cnnkit.runtime.predict import Classifier

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "hubble_deep_field")


def run_folder(model: str | os.PathLike) -> RunDir | None:
    """The run folder of a run folder, its model.json or model.safetensors (None if the
    model file lives outside one)."""
    path = Path(model)
    folder = path if path.is_dir() else path.parent
    return RunDir(folder) if (folder / "config.json").is_file() else None


def run_images(run: RunDir, clf: Classifier, splits: tuple[str, ...], n: int,
               seed: int = 0) -> tuple[ImageSet, str] | None:
    """Up to ``n`` images of the first of ``splits`` (train, val, test) that the run has,
    drawn at random (seeded) so every class shows up; None if it has none of them."""
    pre = clf.card.preprocess
    gen = np.random.default_rng(seed)
    doc = run.read_split()
    if doc is not None:
        for split in splits:
            rows = doc.get(split) or []
            if rows:
                pick = sorted(gen.permutation(len(rows))[:n].tolist())
                paths, labels, multilabel = run.split_files(doc, [rows[i] for i in pick],
                                                            clf.classes)
                return load_files(paths, labels, clf.classes, pre,
                                  multilabel=multilabel), split
        return None
    data = load_run_splits(run.train_config(), pre)
    for split in splits:
        part = getattr(data, split)
        if part is not None and len(part):
            pick = sorted(gen.permutation(len(part))[:n].tolist())
            return part.subset(pick), split
    return None


def files_images(paths: list[str], clf: Classifier) -> ImageSet:
    """The user's image files, decoded as the model expects (labels unused)."""
    pre = clf.card.preprocess
    arrays = [_decode(clf, p) for p in paths]
    return ImageSet(torch.from_numpy(np.stack(arrays)), torch.zeros(len(arrays),
                    dtype=torch.long), clf.classes, tuple(paths),
                    crop_fraction=pre.img_size / pre.decode_size)


def _decode(clf: Classifier, path: str) -> np.ndarray:
    try:
        return clf.decode_image(path)
    except CorruptImageError as exc:
        raise CnnkitError(str(exc)) from None


def sample_photos(clf: Classifier) -> ImageSet:
    """scikit-image's bundled photos: real images for a model that has no run."""
    import skimage.data

    arrays = [clf.decode_image(getattr(skimage.data, name)()) for name in SKIMAGE_PHOTOS]
    pre = clf.card.preprocess
    return ImageSet(torch.from_numpy(np.stack(arrays)), torch.zeros(len(arrays),
                    dtype=torch.long), clf.classes, None,
                    crop_fraction=pre.img_size / pre.decode_size)


def check_images(model: str, clf: Classifier, given: list[str] | None, n: int = 32
                 ) -> tuple[ImageSet, str]:
    """Images to compare torch and ONNX on, and where they came from (for the message)."""
    if given:
        from cnnkit.runtime.inputs import expand_inputs

        files = expand_inputs(given)[:n]
        return files_images(files, clf), f"{len(files)} of the given images"
    run = run_folder(model)
    if run is not None:
        found = run_images(run, clf, ("test", "val", "train"), n)
        if found is not None:
            return found[0], f"{len(found[0])} images of the run's {found[1]} split"
    if os.path.exists(model):
        raise CnnkitError(f"{model} has no run data to check the export on; pass "
                          "--check-images with a few image files.")
    photos = sample_photos(clf)
    return photos, f"{len(photos)} photos from scikit-image"
