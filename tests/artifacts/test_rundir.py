"""Run folders: creation is race-free when many runs start at once."""

from __future__ import annotations

import threading
from pathlib import Path

from cnnkit.artifacts.rundir import RunDir


def test_a_hundred_runs_created_at_once_each_get_their_own_folder(tmp_path: Path) -> None:
    barrier = threading.Barrier(100)
    made: list[Path] = []
    errors: list[BaseException] = []

    def create() -> None:
        barrier.wait()
        try:
            made.append(RunDir.create(tmp_path / "runs", "same name").root)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(made) == len(set(made)) == 100
    assert {p.name for p in made} == {"same-name"} | {f"same-name-{n}" for n in range(2, 101)}


def test_a_file_in_a_run_folder_is_not_said_to_be_missing(tmp_path: Path) -> None:
    """`cnnkit report runs/x/model.safetensors`: the file exists; the answer names the
    folder to pass instead of 'Run folder not found'."""
    import pytest

    from cnnkit.base.errors import CnnkitError

    (tmp_path / "config.json").write_text("{}")
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"")
    with pytest.raises(CnnkitError) as caught:
        RunDir.open(model)
    assert "not found" not in str(caught.value)
    assert f"pass the run folder it is in ({tmp_path})" in str(caught.value)
