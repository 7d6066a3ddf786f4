"""What the end-of-training plots and report cost, as ``cnnkit train`` pays it.

Takes a finished run folder (default: trains Fashion-MNIST's default model for one
epoch first), loads its best model, data splits and test metrics as training has them
in memory, and times ``write_run_report`` with them, several times; then the
on-demand ``cnnkit report`` path, which also reloads data and re-evaluates the test split.

    python benchmarks/report_cost.py [RUN] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch

from cnnkit.artifacts.modelfile import load_model
from cnnkit.artifacts.rundir import RunDir
from cnnkit.base import log
from cnnkit.base.config import TrainConfig
from cnnkit.data.sources import load_run_splits
from cnnkit.inspect.report import write_run_report
from cnnkit.runtime.inference import log_probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="run folder (default: train one, 1 epoch)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, load average: "
          f"{os.getloadavg()[0]:.2f}")
    run = args.run
    if run is None:
        import cnnkit

        out = tempfile.mkdtemp(prefix="report-cost-")
        run = str(cnnkit.train("fashion-mnist", epochs=1, plots=False, out=out).run_dir)
    log.set_quiet(True)
    rundir = RunDir.open(run)
    cfg = TrainConfig.from_dict(rundir.read_config())
    model, card = load_model(run)
    splits = load_run_splits(cfg, card.preprocess)
    test = card.task.evaluate(log_probs(model, splits.test, card.preprocess,
                                        torch.device("cpu"), task=card.task),
                              splits.test.labels, card.classes)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        report = write_run_report(rundir, model=model, card=card, splits=splits, test=test)
        times.append(time.perf_counter() - t0)
    print(f"end of training (model, data and test metrics in memory): median "
          f"{statistics.median(times):.2f} s over {args.repeat} "
          f"({', '.join(f'{t:.2f}' for t in times)}); {len(report.plots)} plots")
    t0 = time.perf_counter()
    write_run_report(rundir)
    print(f"cnnkit report (reload data, evaluate {len(splits.test):,} test images): "
          f"{time.perf_counter() - t0:.2f} s")
    print(f"report: {report.html}")


if __name__ == "__main__":
    main()
