"""The README's Python example runs as written, from a fresh folder."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_python_api_example_runs(tmp_path: Path, monkeypatch, capsys) -> None:
    code = _python_example()
    for name in re.findall(r'"([\w./-]+\.png)"', code):  # it makes every file it reads
        assert name.startswith("digits-png/"), name
    (tmp_path / "example.py").write_text(code)
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(tmp_path / "example.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "digits-png/train/3/00001.png [('" in out
    assert "digits-png/train/7/00002.png [('" in out
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert runs == ["digits-lenet5", "digits-seed-cnn"]
    assert (tmp_path / "runs" / "digits-seed-cnn" / "report.html").is_file()
