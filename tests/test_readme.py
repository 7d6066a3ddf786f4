"""The README's Python example runs as written."""

from __future__ import annotations

import json
import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_api_example_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    script = tmp_path / "example.py"
    script.write_text(code)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "digits-png/train/3/00001.png [('" in out
    assert (tmp_path / "runs").is_dir() and len(list((tmp_path / "runs").iterdir())) == 2
    # evaluated on the run's held-out test images, not on images it trained on
    run = next(p for p in (tmp_path / "runs").iterdir() if "seed-cnn" in p.name)
    test_n = json.loads((run / "test_metrics.json").read_text())["n"]
    assert re.search(rf"^{test_n} 0\.\d+ \[\[", out, re.M)
    runpy.run_path(str(script), run_name="__main__")  # a second time, as written
    assert len(list((tmp_path / "runs").iterdir())) == 4
