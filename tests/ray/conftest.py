"""A real Ray cluster in this process (``ray.init(num_cpus=2)``), shared by the tests
that need one."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="Ray comes with the [ray] extra (in [dev])")


def pids_named(text: str) -> list[int]:
    """Processes whose command line (Ray's process title) contains ``text``."""
    import os

    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                line = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.isdigit() and text in line:
            found.append(int(entry))
    return found


@pytest.fixture
def find_pids():
    """:func:`pids_named`, for the tests that kill a worker."""
    return pids_named


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Two CPUs, in-process; the workers inherit this session's cache folder."""
    import os

    os.environ["CNNKIT_CACHE"] = str(tmp_path_factory.getbasetemp() / "cnnkit-cache")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
