"""A real Ray cluster in this process (``ray.init(num_cpus=2)``), shared by the tests
that need one."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray", reason="Ray comes with the [ray] extra (in [dev])")


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory):
    """Two CPUs, in-process; the workers inherit this session's cache folder."""
    import os

    os.environ["CNNKIT_CACHE"] = str(tmp_path_factory.getbasetemp() / "cnnkit-cache")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
