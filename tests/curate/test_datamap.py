"""The map of the data: a run's own codes in 2-D, the page, and the report's link."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from cnnkit.artifacts.rundir import RunDir
from cnnkit.cli import main
from cnnkit.curate.codes import Coded
from cnnkit.curate.datamap import build_map, write_html
from cnnkit.inspect.html import _map_note


def test_data_map_of_a_run_writes_the_page_the_report_links(tmp_path: Path, trained,
                                                             capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained[0], run)  # the fixture's run is shared: change a copy
    assert "not drawn yet" in _map_note(RunDir(run))
    threads = torch.get_num_threads()
    assert main(["data", "map", str(run)]) == 0
    assert torch.get_num_threads() == threads  # UMAP's numba leaves the caller's setting
    page = (run / "datamap.html").read_text()
    data = json.loads(re.search(r'<script id=data type="application/json">(.*?)</script>',
                                page, re.S).group(1))
    assert len(data["points"]) == 30 and data["classes"] == ["circle", "square", "triangle"]
    point = data["points"][0]
    name, thumb = point[3], point[5]
    assert thumb.startswith("data:image/png;base64,") and Path(name).is_file()
    assert all(p[2] in (0, 1, 2) for p in data["points"])
    assert (run / "datamap.png").read_bytes()[:4] == b"\x89PNG"
    assert "the model of" in page  # the run's own codes, not the pretrained network's
    note = _map_note(RunDir(run))
    assert 'href="datamap.html"' in note and "not drawn yet" not in note
    assert main(["data", "map", str(run), "--out", str(tmp_path / "map.txt")]) == 2
    assert "--out takes an .html file name" in capsys.readouterr().err


def _coded(sizes: tuple[int, ...], flip: int) -> Coded:
    """Clustered codes, ``sizes`` images a class, image ``flip`` filed under the next class."""
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(len(sizes)), sizes)
    codes = (rng.normal(size=(len(sizes), 16))[truth] * 4
             + rng.normal(size=(len(truth), 16))).astype(np.float32)
    given = truth.copy()
    given[flip] = (truth[flip] + 1) % len(sizes)
    images = torch.from_numpy(rng.integers(0, 255, (len(truth), 1, 16, 16), dtype=np.uint8))
    return Coded(codes, given, tuple("abc"[:len(sizes)]),
                 tuple(f"/data/{i}.png" for i in range(len(truth))), ("all",) * len(truth),
                 images, "test codes")


def test_a_small_class_leaves_the_other_labels_judged(tmp_path: Path, capsys) -> None:
    """cnnkit data map of a folder with a 2-image class said '0 probably wrong label(s)'
    on the terminal, where check --labels --folds 2 found the flipped one: the 5 folds
    could not be cut, and only the page's note said the labels were not judged."""
    m = build_map(_coded((30, 30, 2), flip=3))
    assert m.labels_judged and list(m.suspects) == [3]
    alone = build_map(_coded((30, 30, 1), flip=3))
    assert not alone.labels_judged and not alone.suspects
    write_html(alone, _coded((30, 30, 1), flip=3), tmp_path / "map.html", "map")
    out = capsys.readouterr().out
    assert "labels not judged" in out and "0 probably wrong" not in out
    assert "note: label errors not marked: class(es) 'c' have fewer than 2 images" in out
    assert "--folds" not in out  # data map has no such option
    assert "labels not judged" in (tmp_path / "map.html").read_text()
