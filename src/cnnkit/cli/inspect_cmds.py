"""``cnnkit summary``, ``convolve``, ``explain`` and ``report``: seeing inside a CNN."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cnnkit.base.errors import CnnkitError
from cnnkit.cli.app import app


@app.command()
def summary(
    model: str = typer.Argument(..., help="Registered name, layer spec "
                                "('conv32k3-pool2-dense128'), .yaml file, or run folder."),
    img_size: Optional[int] = typer.Option(None, help="Input side in pixels (default: the "
                                           "model's own, 28 for scratch models)."),
    channels: Optional[int] = typer.Option(None, help="1 (grey) or 3 (RGB); default: the "
                                           "model's own, 1 for scratch models."),
    classes: Optional[int] = typer.Option(None, help="Number of classes (default: 1000 for "
                                          "pretrained models, 10 for scratch ones)."),
    depth: Optional[int] = typer.Option(None, help="Group layers into blocks this many "
                                        "levels down (1: the model's main parts)."),
) -> None:
    """One row per layer: output shape, parameters (with their formula) and multiply-adds."""
    from cnnkit.base import log
    from cnnkit.inspect.resolve import model_to_inspect, stack_to_inspect

    stack = stack_to_inspect(model, img_size, channels, classes) if depth is None else None
    if stack is not None:  # a layer stack: its rows follow from its layers, without torch
        from cnnkit.inspect.summary_rows import stack_summary

        result = stack_summary(stack.layers, stack.input_shape, stack.classes,
                               model_name=f"{stack.name}, {stack.classes} classes")
        log.console().print(result)
        if img_size is None and stack.input_shape[1] == 28:
            log.info("Scratch models adapt to their input; --img-size and --channels change "
                     "the counts.")
        return
    from cnnkit.inspect.summary import summary as summarise

    target = model_to_inspect(model, img_size, channels, classes)
    result = summarise(target.model, target.input_shape, depth=depth,
                       model_name=f"{target.name}, {target.classes} classes")
    log.console().print(result)
    if target.source == "run" and result.frozen_params:
        log.info("frozen: parameters this run never trained (--mode features fits the "
                 "classifier alone on the pretrained backbone's features).")
    if target.source != "run" and img_size is None and target.input_shape[1] == 28:
        log.info("Scratch models adapt to their input; --img-size and --channels change the "
                 "counts.")


@app.command()
def convolve(
    image: Path = typer.Argument(..., help="An image file (read as grey)."),
    filter: str = typer.Option("vertical-edge", "--filter", "-f", help="vertical-edge, "
                               "horizontal-edge, sobel-x, sobel-y, laplacian, sharpen, blur, "
                               "or a kernel such as '1,0,-1;1,0,-1;1,0,-1'."),
    stride: int = typer.Option(1, help="Pixels the filter moves at each step."),
    padding: str = typer.Option("valid", help="valid (none), same (keep the size at stride "
                                "1) or a number of zero pixels around the image."),
    activation: str = typer.Option("none", help="relu or none."),
    pool: str = typer.Option("none", help="max, avg or none: pooling after the convolution."),
    pool_size: int = typer.Option(2, help="Pooling window side."),
    pool_stride: Optional[int] = typer.Option(None, help="Pooling stride (default: the "
                                              "window side)."),
    size: Optional[int] = typer.Option(None, help="Resize and centre-crop the image to a "
                                       "square of this side first."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG to write (default: "
                                       "convolution.png, or none with --animate)."),
    animate: Optional[Path] = typer.Option(None, "--animate", help="Also write a GIF of the "
                                           "window sliding over a small crop, one output "
                                           "value per frame."),
    crop: int = typer.Option(8, help="--animate: side of the crop in pixels."),
    at: Optional[str] = typer.Option(None, help="--animate: ROW,COL of the crop's top-left "
                                     "corner (default: where the filter responds most)."),
) -> None:
    """Apply one filter to a real image, as a convolution layer does, and draw the result."""
    from cnnkit.base import log
    from cnnkit.inspect.convolve import convolve as run_convolution
    from cnnkit.inspect.convolve import load_grey, parse_kernel, parse_padding
    from cnnkit.inspect.figures import plot_convolution

    if out is None and animate is None:
        out = Path("convolution.png")
    if out is not None and out.suffix.lower() != ".png":
        raise CnnkitError(f"--out must be a .png file. Received: {out}")
    if animate is not None and animate.suffix.lower() != ".gif":
        raise CnnkitError(f"--animate must be a .gif file. Received: {animate}")
    corner = None
    if at is not None:
        parts = at.replace(" ", "").split(",")
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise CnnkitError(f"--at takes ROW,COL in pixels, e.g. 10,20. Received: {at!r}")
        corner = (int(parts[0]), int(parts[1]))
    name, kernel = parse_kernel(filter)
    pads = parse_padding(padding, kernel.shape)
    grey = load_grey(image, size)
    result = run_convolution(grey, kernel, filter_name=name, stride=stride, padding=pads,
                             activation=activation, pool=pool, pool_size=pool_size,
                             pool_stride=pool_stride)
    log.info(result.report())
    if out is not None:
        log.info(f"wrote {plot_convolution(result, out)}")
    if animate is not None:
        from cnnkit.inspect.convolve_anim import animate_convolution

        gif = animate_convolution(grey, kernel, animate, filter_name=name, stride=stride,
                                  padding=pads, crop=crop, at=corner)
        log.info(f"wrote {gif}")


@app.command()
def explain(
    model: str = typer.Argument(..., help="Run folder, model.json, or a pretrained model "
                                "name (ImageNet classes)."),
    image: str = typer.Argument(..., help="The image to explain."),
    class_name: Optional[str] = typer.Option(None, "--class", "--label",
                                             help="Class (or a multi-label model's label) to "
                                             "explain (default: the top prediction)."),
    layer: Optional[list[str]] = typer.Option(None, "--layer", help="Layer whose feature "
                                              "maps to draw (repeatable; names as in "
                                              "`cnnkit summary`)."),
    cam_layer: Optional[str] = typer.Option(None, help="Layer for Grad-CAM (default: the "
                                            "last one with a spatial map of 7x7 or more)."),
    out: Path = typer.Option(Path("explain"), "--out", "-o", help="Folder for the PNGs."),
    device: str = typer.Option("auto"),
) -> None:
    """Grad-CAM heat map, feature maps and first-layer filters for one image, as PNGs."""
    from cnnkit.base import log
    from cnnkit.inspect.explain import explain as run_explain
    from cnnkit.inspect.resolve import refuse_onnx
    from cnnkit.runtime.inputs import expand_inputs
    from cnnkit.runtime.predict import load_predictor

    refuse_onnx(model, "explain", "Grad-CAM takes gradients through it")
    files = expand_inputs([image])
    if len(files) != 1:
        raise CnnkitError(f"explain takes one image; {image!r} gives {len(files)}.")
    predictor = load_predictor(model, device, backend="torch")  # Grad-CAM needs gradients
    result = run_explain(predictor, files[0], out, class_name=class_name, layers=layer or None,
                         cam_layer=cam_layer)
    tops = ", ".join(f"{c} {log.percent(p)}" for c, p in result.top[:3])
    multi = predictor.card.task.name == "multi-label"  # sigmoids: they need not sum to 1
    log.info(f"{'labels (each its own probability)' if multi else 'top classes'}: {tops}")
    log.info(f"Grad-CAM for {result.class_name!r} ({log.percent(result.probability)}) from layer "
             f"{result.layer}")
    if not result.cam.any():
        log.warn(f"Grad-CAM is 0 everywhere for {result.class_name!r}: nothing in this image "
                 f"raises its score through layer {result.layer}, so the heat map is blank "
                 "(--cam-layer picks another layer).")
    for f in result.files:
        log.info(f"wrote {f}")


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run folder made by `cnnkit train`."),
    device: str = typer.Option("auto"),
) -> None:
    """Write (again) a run's plots/ and report.html."""
    from cnnkit.base import log
    from cnnkit.inspect.report import write_run_report

    result = write_run_report(run, device=device)
    for f in result.plots.values():
        log.info(f"wrote {f}")
    log.info(f"wrote {result.html} ({result.seconds:.1f}s)")
