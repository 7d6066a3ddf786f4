"""Each kind of data source is one class; a new kind is one class plus one entry in KINDS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnkit.data import sources
from cnnkit.data.imageset import ImageSet
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.source import DataSource, Parts, split_off


@pytest.mark.parametrize("kind", sources.KINDS, ids=lambda k: k.kind)
def test_every_registered_kind_does_what_a_source_must(kind: type[DataSource]) -> None:
    # presplit: the kind's, or a property where the data decides (a CSV's split column)
    assert kind.kind and isinstance(kind.presplit, (bool, property))
    for method in ("recognise", "load", "eval_set"):
        assert getattr(kind, method) is not getattr(DataSource, method), method
    assert [k.kind for k in sources.KINDS].count(kind.kind) == 1


def test_each_data_argument_is_recognised_by_one_kind(make_tree, tmp_path: Path) -> None:
    folder = make_tree(tmp_path / "photos", per_class=2, size=8)
    (tmp_path / "split" / "train").mkdir(parents=True)
    make_tree(tmp_path / "split" / "train", per_class=2, size=8)
    (tmp_path / "labels.csv").write_text("path,label\n")
    for data, kind in (("shapes:size=8", "builtin"), (str(folder), "folder"),
                       (str(tmp_path / "split"), "split-folder"),
                       (str(tmp_path / "labels.csv"), "csv")):
        recognised = [k.kind for k in sources.KINDS if k.recognise(data) is not None]
        assert recognised[0] == kind and sources.describe(data).kind == kind
    assert sources.describe(str(folder)).same_data(sources.describe(str(folder) + "/."))
    assert not sources.describe("shapes").same_data(sources.describe(str(folder)))
    assert sources.describe("shapes").run_spec() == "shapes"
    assert sources.describe(str(folder)).run_spec() == str(folder.resolve())


class StripesSource(DataSource):
    """A made-up kind: 'stripes:N' is N horizontal and N vertical 8x8 stripe images."""

    kind = "stripes"
    presplit = False

    @classmethod
    def recognise(cls, data: str) -> DataSource | None:
        return cls("stripes", data) if data.startswith("stripes:") else None

    def _all(self) -> ImageSet:
        n = int(self.spec.partition(":")[2])
        images = torch.zeros(2 * n, 1, 8, 8, dtype=torch.uint8)
        images[:n, :, ::2, :] = 255
        images[n:, :, :, ::2] = 255
        labels = torch.tensor([0] * n + [1] * n)
        return ImageSet(images, labels, ("horizontal", "vertical"))

    def load(self, pre: Preprocess, *, val_fraction: float, test_fraction: float,
             seed: int) -> Parts:
        train, test = split_off(self._all(), test_fraction, seed)
        train, val = split_off(train, val_fraction, seed)
        return train, val, test

    def eval_set(self, pre: Preprocess, classes: tuple[str, ...]) -> ImageSet:
        return self._all()


def test_a_new_kind_is_one_class_and_one_registration(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import cnnkit

    monkeypatch.setattr(sources, "KINDS", (StripesSource, *sources.KINDS))
    result = cnnkit.train("stripes:20", model="conv4k3-pool2-dense8", epochs=1, batch_size=8,
                          img_size=8, channels=1, plots=False, device="cpu",
                          out=str(tmp_path))
    assert result.run_dir.name == "stripes-conv4k3-pool2-dense8"
    assert json.loads((result.run_dir / "config.json").read_text())["data"] == "stripes:20"
    assert cnnkit.evaluate(str(result.run_dir), "stripes:20").n == 40
