"""``cnnkit export``: a trained model as an ONNX file for other runtimes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cnnkit.cli.app import app


@app.command()
def export(
    model: str = typer.Argument(..., help="Run folder, model.json, or a pretrained model "
                                "name (ImageNet classes)."),
    fmt: str = typer.Option("onnx", "--format", help="onnx, or executorch (a .pte program "
                            "for ExecuTorch's runtime, XNNPACK-delegated; needs "
                            "cnnkit[executorch])."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="File to write (default: "
                                       "model.onnx, or model.pte, in the run folder)."),
    check_images: Optional[list[str]] = typer.Option(
        None, "--check-images", help="Images (files, folders, globs) to check the export on "
        "(default: the run's own test images)."),
    opset: int = typer.Option(17, help="ONNX opset (17 or newer)."),
    quantize: Optional[str] = typer.Option(
        None, help="int8: also write a statically quantized file (model.int8.onnx, which "
        "--backend onnx-int8 runs), calibrated on the run's training images and measured "
        "against the float file on its whole test split."),
    max_accuracy_drop: float = typer.Option(
        1.0, help="With --quantize: the most points of test accuracy int8 may lose against "
        "float; beyond, the int8 file is not kept and the command fails."),
) -> None:
    """Write an ONNX file (dynamic batch, classes and preprocessing in its metadata) and
    check it against PyTorch on real images."""
    from cnnkit.base import log
    from cnnkit.export.onnx import export_model

    result = export_model(model, fmt=fmt, out=out, check=check_images, opset=opset,
                          quantize=quantize, max_accuracy_drop=max_accuracy_drop)
    size = result.path.stat().st_size / 1e6
    log.info(f"wrote {result.path} ({size:.1f} MB)")
    for parity in result.parities:
        log.info(parity.line())
    c = result.comparison
    if result.int8 is not None and c is not None:
        size = result.int8.stat().st_size / 1e6
        log.info(f"wrote {result.int8} ({size:.1f} MB)")
        log.info(f"on the run's test split ({c.images:,} images):")
        log.info(f"  float  {c.figure} {c.float_accuracy:.2%}   {c.float_speed:,.1f} images/s")
        log.info(f"  int8   {c.figure} {c.int8_accuracy:.2%}   {c.int8_speed:,.1f} images/s   "
                 f"({(c.int8_accuracy - c.float_accuracy) * 100:+.2f} points, "
                 f"{c.speedup:.2f}x the speed; batch 32)")
        if c.speedup < 1:
            log.warn(f"the int8 file is slower than the float one here ({c.speedup:.2f}x): "
                     "for a model this small, quantizing and dequantizing costs more than "
                     "int8 saves; predict with the float file (--backend onnx).")
        if c.float_unknown is not None and c.int8_unknown is not None:
            log.info(f"  answered 'unknown' (each file's rule): float {c.float_unknown:.1%}, "
                     f"int8 {c.int8_unknown:.1%}")
    if result.card is not None:
        log.info(f"model card: {result.card.markdown} and {result.card.json.name}")
