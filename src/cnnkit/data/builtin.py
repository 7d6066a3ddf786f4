"""Built-in data sets by name: ``fashion-mnist``, ``digits``, ``shapes`` and the
multi-label ``fashion-mnist-mosaic``.

Options follow the name after a colon, e.g. ``shapes:size=64,count=900,seed=1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cnnkit.base.errors import CnnkitError
from cnnkit.data import fashion_mnist, mosaic, shapes
from cnnkit.data.imageset import ImageSet


@dataclass(frozen=True)
class BuiltinSet:
    name: str
    description: str
    classes: tuple[str, ...]
    channels: int
    default_model: str
    augment: str
    default_img_size: int
    loader: Callable[[dict[str, int]], tuple[ImageSet, ImageSet | None]]
    options: tuple[tuple[str, int], ...] = ()
    multilabel: bool = False  # label sets per image (a multi-hot matrix)
    may_be_zero: tuple[str, ...] = ()  # options that take 0 (a seed takes any number)


def _nhwc_to_set(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> ImageSet:
    if images.ndim == 3:
        images = images[:, :, :, None]
    tensor = torch.from_numpy(np.array(images.transpose(0, 3, 1, 2), order="C", copy=True))
    target = torch.from_numpy(labels.astype(np.float32 if labels.ndim == 2 else np.int64))
    return ImageSet(tensor, target, classes)


def _fashion_mnist(_: dict[str, int]) -> tuple[ImageSet, ImageSet]:
    xtr, ytr, xte, yte = fashion_mnist.load()
    return (_nhwc_to_set(xtr, ytr, fashion_mnist.CLASSES),
            _nhwc_to_set(xte, yte, fashion_mnist.CLASSES))


def _digits(_: dict[str, int]) -> tuple[ImageSet, None]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.clip(bunch.images * (255.0 / 16.0) + 0.5, 0, 255).astype(np.uint8)
    return _nhwc_to_set(images, bunch.target, tuple(str(d) for d in range(10))), None


def _shapes(opts: dict[str, int]) -> tuple[ImageSet, ImageSet]:
    count, size, seed = opts["count"], opts["size"], opts["seed"]
    xtr, ytr = shapes.generate(count, size, seed)
    xte, yte = shapes.generate(max(count // 4, len(shapes.CLASSES)), size, seed + 1_000_003)
    return _nhwc_to_set(xtr, ytr, shapes.CLASSES), _nhwc_to_set(xte, yte, shapes.CLASSES)


def _mosaic(opts: dict[str, int]) -> tuple[ImageSet, ImageSet]:
    if opts["blank"] >= 100:
        raise CnnkitError("Option blank of 'fashion-mnist-mosaic' is the percentage of empty "
                          f"cells, below 100. Received: {opts['blank']}")
    xtr, ytr, xte, yte = fashion_mnist.load()
    count, seed, blank = opts["count"], opts["seed"], opts["blank"] / 100
    k = len(fashion_mnist.CLASSES)
    train = mosaic.generate(xtr, ytr, count, seed, blank, k)
    test = mosaic.generate(xte, yte, max(count // 4, 10), seed + 1_000_003, blank, k)
    return (_nhwc_to_set(*train, fashion_mnist.CLASSES),
            _nhwc_to_set(*test, fashion_mnist.CLASSES))


BUILTINS: dict[str, BuiltinSet] = {
    s.name: s
    for s in (
        BuiltinSet("fashion-mnist", "Zalando's Fashion-MNIST: 60,000 train + 10,000 test, "
                   "28x28 grey, 10 classes", fashion_mnist.CLASSES, 1, "fast-cnn",
                   "flip", 28, _fashion_mnist),
        BuiltinSet("digits", "scikit-learn's handwritten digits: 1,797 images, 8x8 grey, "
                   "10 classes (upsampled to 28x28)", tuple(str(d) for d in range(10)), 1,
                   "seed-cnn", "crop", 28, _digits),
        BuiltinSet("shapes", "synthetic coloured circles, squares and triangles on noise "
                   "(options: size, count, seed)", shapes.CLASSES, 3, "vgg-bn", "flip+crop",
                   32, _shapes, (("size", 32), ("count", 1200), ("seed", 0))),
        BuiltinSet("fashion-mnist-mosaic", "multi-label: 2x2 mosaics of Fashion-MNIST items, "
                   "labelled by the classes shown, 56x56 grey (options: count, seed, blank = "
                   "percent of empty cells)", fashion_mnist.CLASSES, 1, "fast-cnn",
                   "flip+crop", 56, _mosaic, (("count", 6000), ("seed", 0), ("blank", 25)),
                   multilabel=True, may_be_zero=("blank",)),
    )
}


def parse_name(spec: str) -> tuple[BuiltinSet, dict[str, int]] | None:
    """Return the built-in set and its options for ``spec``, or None if it names none."""
    name, _, rest = spec.partition(":")
    if name not in BUILTINS:
        return None
    builtin = BUILTINS[name]
    options = dict(builtin.options)
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if key not in options:
            known = ", ".join(options) or "none"
            raise CnnkitError(f"Built-in set {name!r} has no option {key!r} (options: {known}).")
        try:
            options[key] = int(value)
        except ValueError:
            raise CnnkitError(f"Option {key} of {name!r} takes a whole number. "
                              f"Received: {value!r}") from None
        low = 0 if key in builtin.may_be_zero else 1
        if key != "seed" and options[key] < low:
            least = "0 or more" if low == 0 else "positive"
            raise CnnkitError(f"Option {key} of {name!r} must be {least}. Received: {value}")
    return builtin, options


def load_builtin(spec: str) -> tuple[BuiltinSet, ImageSet, ImageSet | None]:
    parsed = parse_name(spec)
    if parsed is None:
        raise CnnkitError(f"No built-in data set {spec!r}. Built-in sets: {', '.join(BUILTINS)}.")
    builtin, options = parsed
    train, test = builtin.loader(options)
    return builtin, train, test
