"""Built-in data sets: fashion-mnist, digits and the seeded synthetic shapes."""

from __future__ import annotations

import pytest
import torch

from cnnkit.base.errors import CnnkitError
from cnnkit.data import fashion_mnist
from cnnkit.data.builtin import BUILTINS, load_builtin, parse_name
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.sources import describe, load_splits

PRE = Preprocess(28, 1, (0.5,), (0.5,))


def test_names_and_options_are_parsed() -> None:
    assert parse_name("cats/") is None
    builtin, opts = parse_name("shapes:size=20,count=30,seed=-1")
    assert builtin.name == "shapes" and opts == {"size": 20, "count": 30, "seed": -1}
    assert parse_name("shapes")[1] == {"size": 32, "count": 1200, "seed": 0}
    info = describe("shapes:size=20")
    assert info.kind == "builtin" and info.name == "shapes"


@pytest.mark.parametrize("spec, message", [
    ("shapes:colour=3", "has no option 'colour'"),
    ("shapes:size=big", "takes a whole number"),
    ("shapes:size=0", "must be positive"),
    ("digits:size=8", r"has no option 'size' \(options: none\)"),
])
def test_bad_options_are_explained(spec: str, message: str) -> None:
    with pytest.raises(CnnkitError, match=message):
        parse_name(spec)


def test_shapes_are_seeded_and_sized() -> None:
    _, train, test = load_builtin("shapes:size=16,count=30,seed=5")
    assert tuple(train.images.shape) == (30, 3, 16, 16)
    assert train.images.dtype == torch.uint8
    assert train.class_counts() == [10, 10, 10]
    assert len(test) == 7 and test.size == (16, 16)
    _, again, _ = load_builtin("shapes:size=16,count=30,seed=5")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    _, other, _ = load_builtin("shapes:size=16,count=30,seed=6")
    assert not torch.equal(other.images, train.images)
    # the test set is not a copy of the training set
    assert not any(torch.equal(test.images[0], img) for img in train.images)


def test_shapes_size_reaches_the_loaded_splits() -> None:
    s = load_splits("shapes:size=16,count=60", Preprocess(16, 3, (0.5,) * 3, (0.5,) * 3),
                    val_fraction=0.1)
    assert s.train.size == (16, 16) and s.val.size == (16, 16) and s.test.size == (16, 16)
    assert [len(s.train), len(s.val), len(s.test)] == [54, 6, 15]


def test_digits() -> None:
    builtin, train, test = load_builtin("digits")
    assert test is None and builtin.channels == 1
    assert tuple(train.images.shape) == (1797, 1, 8, 8)
    assert train.images.max() == 255 and train.images.min() == 0
    assert train.classes == tuple("0123456789")
    s = load_splits("digits", PRE, val_fraction=0.1, test_fraction=0.1, seed=0)
    assert len(s.train) + len(s.val) + len(s.test) == 1797
    assert min(s.test.class_counts()) >= 17  # stratified: every digit is tested


def test_fashion_mnist_with_a_small_per_class_subset() -> None:
    s = load_splits("fashion-mnist", PRE, val_fraction=0.1, per_class=3, seed=1)
    assert s.classes == fashion_mnist.CLASSES and s.classes[0] == "T-shirt/top"
    assert s.train.class_counts() == [3] * 10
    assert len(s.test) == 10_000  # the official test split, untouched
    # Few-image runs validate on the same train:val proportion (1 per class here), not on
    # 6,000 images.
    assert s.val.class_counts() == [1] * 10
    assert tuple(s.train.images.shape[1:]) == (1, 28, 28)
    assert s.test.class_counts() == [1000] * 10


def test_every_builtin_is_described() -> None:
    for name, builtin in BUILTINS.items():
        assert builtin.name == name and builtin.channels in (1, 3)
        assert len(builtin.classes) >= 2 and builtin.description


def test_the_torch_free_list_of_builtin_names_is_the_registry_s() -> None:
    from cnnkit.data.builtin import BUILTINS
    from cnnkit.data.spec import BUILTIN_NAMES

    assert tuple(BUILTINS) == BUILTIN_NAMES
