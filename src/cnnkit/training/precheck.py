"""The short data check ``cnnkit train`` runs before decoding: ``cnnkit check`` without
decoding and near-copies, its warnings one line each (``--no-check`` skips it)."""

from __future__ import annotations

from cnnkit import log
from cnnkit.data.audit import audit
from cnnkit.training.recipe import Plan


def check_data(plan: Plan) -> None:
    """Warn about copies across labels or splits, leakage, links that loop, tiny images
    and imbalance in folder and CSV data; built-in sets are known and skipped.

    Problems (an empty class, one class) are left to loading, which stops with them.
    """
    if not plan.config.check or plan.source.root is None:
        return
    result = audit(plan.source, img_size=plan.pre.img_size, decode=False, progress=False)
    warnings = result.warnings
    for finding in warnings:
        example = f" (e.g. {log.quoted(finding.files[0])})" if finding.files else ""
        log.warn(f"data check: {finding.what}{example}")
    if warnings:
        log.warn(f"data check: run `cnnkit check {plan.source.spec}` for every file name and "
                 "advice (--no-check skips this check)")
