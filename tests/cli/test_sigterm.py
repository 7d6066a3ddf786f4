"""SIGTERM in the command line's processes, and in the worker processes forked from them."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import multiprocessing, signal
from cnnkit.cli import sigterm_handler
signal.signal(signal.SIGTERM, sigterm_handler([]))
for _ in range(8):
    with multiprocessing.get_context("fork").Pool(2) as pool:  # exiting terminates it
        pool.map(abs, range(4))
print("done")
"""


def test_a_forked_pool_ends_its_workers_without_a_traceback() -> None:
    """cnnkit check --labels ended (exit 0, right answers) with 'Process ForkPoolWorker-4:
    Traceback ... cnnkit.cli.Terminated' on stderr in 2 runs of 3: cleanlab's worker pool
    is forked, its workers inherit the command's SIGTERM handler, and the pool ends them
    with SIGTERM."""
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
    assert "Traceback" not in done.stderr and "Terminated" not in done.stderr, done.stderr
