"""The map of the data: a run's own codes in 2-D, the page, and the report's link."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch

from cnnkit.artifacts.rundir import RunDir
from cnnkit.cli import main
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
