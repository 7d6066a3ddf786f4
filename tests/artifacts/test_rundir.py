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
