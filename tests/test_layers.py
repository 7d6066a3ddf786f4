"""The import layers of docs/design-notes.md hold at run time, not only in lint-imports."""

from __future__ import annotations

import os
import subprocess
import sys


def test_prediction_evaluation_and_reports_load_no_trainer() -> None:
    code = ("import sys, cnnkit.runtime.predict, cnnkit.evaluation, cnnkit.runtime.zeroshot, "
            "cnnkit.inspect.report, cnnkit.inspect.plots; "
            "print(sorted(m for m in sys.modules if m.startswith('cnnkit.training')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=os.environ.copy()).stdout
    assert out.strip() == "[]"
