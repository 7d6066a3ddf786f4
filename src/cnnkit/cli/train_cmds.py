"""``cnnkit train``, ``cnnkit evaluate``, ``cnnkit predict``."""

from __future__ import annotations

import csv
import json
import os
import sys
import time as clock
from pathlib import Path
from typing import Any, Optional

import typer

from cnnkit.base import log
from cnnkit.base.config import TrainConfig, load_config_file, parse_duration
from cnnkit.base.errors import CnnkitError
from cnnkit.cli import ray_cmds
from cnnkit.cli.app import app
from cnnkit.cli.ray_cmds import RAY_HELP
from cnnkit.runtime.backend_names import BACKEND_HELP


def _option(name: str, *flags: str, help: str | None = None) -> Any:
    """A training option that defaults to "not given", so that the --config file and then
    TrainConfig fill it in; --help shows TrainConfig's default."""
    default = TrainConfig.__dataclass_fields__[name].default
    shown = None if default is None else str(default)
    if isinstance(default, bool):
        flag = name.replace("_", "-")
        flags = flags or (f"--{flag}/--no-{flag}",)
        shown = flag if default else f"no-{flag}"
    if shown is not None:
        help = f"{help or ''}  [default: {shown}]".lstrip()
    return typer.Option(None, *flags, help=help, show_default=False)


STARTUP_S = 30.0  # a process older than this at `train` did not start for it


@app.command(context_settings={"help_option_names": ["-h", "--help"]})
def train(
    ctx: typer.Context,
    data: Optional[str] = typer.Argument(
        None, help="Folder (one sub-folder per class, or train/ val/ test/), CSV of "
        "path,label, or a built-in set: fashion-mnist, digits, shapes."),
    model: Optional[str] = _option("model", "--model", "-m", help="Registered name, layer "
                                   "spec ('conv32k3-pool2-dense128') or .yaml file."),
    mode: Optional[str] = _option("mode", help="auto, fine-tune, features or scratch."),
    weights: Optional[str] = _option("weights", help="Local weights (.safetensors, or .pth "
                                     "read with weights_only) for the backbone."),
    epochs: Optional[int] = _option("epochs", "--epochs", "-e"),
    time: Optional[str] = _option("time", help="A time budget for the whole run, e.g. 90s, "
                                  "10m or 1h30m: the epochs (and if need be a smaller input) "
                                  "are picked to fit, and the run ends on time with the best "
                                  "model so far."),
    batch_size: Optional[int] = _option("batch_size", "--batch-size", "-b"),
    lr: Optional[str] = _option("lr", help="Peak learning rate, or 'find': run the "
                                "learning-rate finder first and use its suggestion."),
    optimizer: Optional[str] = _option("optimizer", help="adamw or sgd."),
    schedule: Optional[str] = _option("schedule", help="onecycle, cosine or constant."),
    weight_decay: Optional[float] = _option("weight_decay"),
    warmup_epochs: Optional[float] = _option("warmup_epochs", help="Epochs of learning-rate "
                                             "warm-up at the start of each phase (0: none; "
                                             "default: onecycle's first 25%, else 5%)."),
    label_smoothing: Optional[float] = _option("label_smoothing"),
    ema: Optional[float] = _option("ema", help="Validate, keep and test an exponential moving "
                                   "average of the weights with this decay per step (0.999: "
                                   "about the last 1,000 steps of a long run; 0: off)."),
    augment: Optional[str] = _option("augment", help="auto, none, or a +-joined list of flip, "
                                     "vflip, crop, erase, color, mixup, cutmix, rotateN, "
                                     "zoomF, shiftF, shearN (e.g. flip+rotate15+zoom0.2), "
                                     "randaugment or trivialaugment."),
    img_size: Optional[int] = _option("img_size", help="Input size in pixels (square)."),
    channels: Optional[int] = _option("channels", help="1 (grey) or 3 (RGB)."),
    val_fraction: Optional[float] = _option("val_fraction"),
    test_fraction: Optional[float] = _option("test_fraction", help="Held-out test share when "
                                             "DATA is one folder or CSV."),
    per_class: Optional[int] = _option("per_class", help="Keep only N training images per "
                                       "class (seeded). The validation split shrinks with "
                                       "them, keeping the train:val proportion (12 per "
                                       "class for N=100 at --val-fraction 0.1); the test "
                                       "split stays whole."),
    seed: Optional[int] = _option("seed"),
    patience: Optional[int] = _option("patience", help="Early stopping after N epochs without "
                                      "a better validation accuracy (0: off)."),
    keep: Optional[str] = _option("keep", help="Which epoch's model to keep: best (by "
                                  "validation accuracy), last, or auto (best with 1,000+ "
                                  "validation images or --patience, else last)."),
    imbalance: Optional[str] = _option("imbalance", help="auto, weighted-loss, "
                                       "balanced-sampling, none."),
    device: Optional[str] = _option("device", help="auto, cpu, cuda, cuda:1, mps."),
    precision: Optional[str] = _option("precision", help="auto, fp32, bf16, fp16."),
    channels_last: Optional[str] = _option("channels_last", help="auto, on, off."),
    compile: Optional[str] = _option("compile", help="torch.compile: auto, on, off."),
    devices: int = typer.Option(1, help="Train in N processes on this machine (one per GPU, "
                                "or N on the CPU), data-parallel through torchrun; "
                                "--batch-size stays the global batch."),
    sync_bn: Optional[bool] = _option("sync_bn", "--sync-bn/--no-sync-bn", help="With "
                                      "several GPUs: batch norm statistics over the whole "
                                      "global batch (default: on with more than one GPU; "
                                      "GPUs only)."),
    tta: Optional[bool] = _option("tta", help="Flip test-time augmentation when testing."),
    init_from: Optional[str] = _option(
        "init_from", help="Start from the weights of this finished run (same classes): "
        "e.g. --mode fine-tune after a --mode features run."),
    keep_checkpoint: Optional[bool] = _option(
        "keep_checkpoint", help="Keep checkpoints/last.safetensors (weights, optimizer state) "
        "after the run ends; by default it is kept only while the run can be resumed."),
    plots: Optional[bool] = _option("plots", help="Write plots/ and report.html at the end (a "
                                    "few seconds)."),
    check: Optional[bool] = _option("check", help="Check the data first: copies across "
                                    "labels or splits, links that loop, tiny images, "
                                    "imbalance (`cnnkit check` without decoding)."),
    head_epochs: Optional[int] = _option("head_epochs", help="Fine-tune: epochs of SGD with "
                                         "the base frozen (default 0 with --probe, else a "
                                         "quarter of the epochs, 1-3)."),
    probe: Optional[bool] = _option("probe", help="Fine-tune: first fit the new head to the "
                                    "frozen features (a linear probe, seconds)."),
    unfreeze: Optional[str] = _option("unfreeze", help="Fine-tune: 'all' or the number of top "
                                      "blocks."),
    lr_decay: Optional[float] = _option("lr_decay", help="Fine-tune: learning-rate factor per "
                                        "block from the top."),
    bn_stats: Optional[str] = _option("bn_stats", help="Fine-tune: batch norm keeps the "
                                      "pretrained running statistics (keep; auto) or "
                                      "normalises by batch statistics and updates them "
                                      "(update)."),
    drop_path: Optional[float] = _option("drop_path", help="Stochastic depth: skip residual "
                                         "blocks at random while training, rising to this "
                                         "chance at the last block (timm models; 0: off)."),
    track: Optional[str] = _option("track", help="Also log the run to mlflow (MLflow's default "
                                   "store here, mlflow.db, or MLFLOW_TRACKING_URI; "
                                   "`mlflow ui` shows it), tensorboard (event files in the "
                                   "run folder) or mlflow+tensorboard; pip install "
                                   "'cnnkit[mlflow]' / 'cnnkit[tensorboard]'."),
    out: Optional[str] = _option("out", help="Folder for run folders."),
    name: Optional[str] = _option("name", help="Run folder name."),
    config: Optional[Path] = typer.Option(None, help="JSON or YAML file of options."),
    resume: Optional[Path] = typer.Option(None, help="Continue a stopped run."),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]", help=RAY_HELP),
    workers: Optional[int] = typer.Option(None, help="With --ray: training processes (Ray "
                                          "Train workers); default one per GPU of the "
                                          "cluster, else one per node."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Train a CNN on DATA and leave a run folder with the model, metrics and report."""

    age = _process_age()  # --time counts from the command's start, Python's included
    started, started_wall = clock.monotonic() - age, clock.time() - age

    log.set_quiet(quiet)
    given = {k: v for k, v in ctx.params.items()
             if v is not None and k not in ("quiet", "devices", "ray", "workers")}
    if workers is not None and ray is None:
        raise CnnkitError("--workers says how many Ray workers train; add --ray (or use "
                          "--devices N on this machine).")
    if resume is not None and ray is not None:

        if len(given) > 1:
            del given["resume"]
            raise CnnkitError(f"--resume continues a run with its own data and options; "
                              f"drop --{next(iter(given)).replace('_', '-')}.")
        ray_cmds.train(given, None, resume, ray, workers, devices)
        return
    if resume is not None:
        del given["resume"]
        if given:
            first = next(iter(given))
            flag = "DATA" if first == "data" else "--" + first.replace("_", "-")
            if given[first] is False:  # a switch turned off: --no-plots, not --plots
                flag = "--no-" + flag[2:]
            raise CnnkitError(f"--resume continues a run with its own data and options; "
                              f"drop {flag}.")
        from cnnkit.artifacts.rundir import RunDir
        from cnnkit.training.launch import launched

        saved = RunDir.open(resume).read_config()
        code = launched(devices, str(saved.get("device", "auto")), saved.get("mode"),
                        _argv(ctx))
        if code is None:
            from cnnkit.training import session

            session.resume(resume)
        elif code:
            raise typer.Exit(code)
        return
    if "lr" in given:
        given["lr"] = parse_lr(given["lr"])
    if "time" in given:
        given["time"] = parse_duration(given["time"])
    # Precedence: options given on the command line, then the --config file, then TrainConfig.
    options = load_config_file(config) if config else {}
    options.update({k: v for k, v in given.items() if k in TrainConfig.__dataclass_fields__})
    if options.get("data") is None:
        raise CnnkitError("Missing DATA: pass a folder, a CSV or a built-in set name "
                          "(e.g. `cnnkit train fashion-mnist`).")
    train_config = TrainConfig.from_dict(options)  # a mistake is one line before any launch
    from cnnkit.training.quick_checks import check_options

    check_options(train_config)  # weights files and offline weights: before torch and data
    if ray is not None:

        ray_cmds.train(given, train_config, None, ray, workers, devices)
        return
    from cnnkit.training.launch import launched, under_torchrun

    code = launched(devices, train_config.device, train_config.mode, _argv(ctx), started_wall)
    if code is None:
        from cnnkit.training import session  # torch and the trainer: after the checks above

        session.train(train_config, started=None if under_torchrun() else started)
    elif code:
        raise typer.Exit(code)


def parse_lr(text: str) -> float | str:
    """``--lr``: a number or 'find'."""
    if text == "find":
        return text
    try:
        return float(text)
    except ValueError:
        raise CnnkitError(f"--lr takes a positive number or 'find'. Received: {text!r}") from None


def _argv(ctx: typer.Context) -> list[str]:
    """The command's own arguments, for the processes --devices N starts."""
    return (ctx.obj or {}).get("argv", sys.argv[1:])


def _process_age() -> float:
    """Seconds since this process started, when it started as the ``cnnkit`` command
    (Python's start-up and imports; 0 when main() was called by another program, such as
    a notebook or a test, or where Linux's /proc cannot be read)."""

    first = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    if "cnnkit" not in (first.name, first.parent.name):
        return 0.0
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0
    return age if 0.0 <= age <= STARTUP_S else 0.0


@app.command()
def evaluate(
    run: Path = typer.Argument(..., help="Run folder (or model.json)."),
    data: Optional[str] = typer.Argument(None, help="Data to evaluate on; default: the "
                                         "run's held-out test split."),
    tta: bool = typer.Option(False, help="Average with horizontally flipped images."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write metrics here."),
    threshold: Optional[float] = typer.Option(
        None, help="Multi-label models: answer each label at or above this probability "
        "(0-1), in place of the per-label thresholds in model.json."),
    include_seen: bool = typer.Option(
        False, "--include-seen", help="Count the images of DATA the run trained or "
        "validated on (known by their contents, at any path); by default they are left "
        "out, and a warning says how many."),
    device: str = typer.Option("auto"),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
) -> None:
    """Accuracy, top-k accuracy, per-class precision/recall/F1 and the confusion matrix;
    for a multi-label model mAP (macro, micro), exact match, Hamming loss and per-label
    precision/recall/F1/AP."""
    from cnnkit.artifacts.modelcard import find_sidecar
    from cnnkit.tasks.threshold import check_threshold

    threshold = check_threshold(threshold)
    if not run.is_file():  # a missing path or a folder without a model: said before torch
        find_sidecar(run)   # loads (a file may be an ONNX export, which evaluate reads)
    from cnnkit.base.atomic import write_json
    from cnnkit.cli.tables import print_eval
    from cnnkit.evaluation import evaluate_run

    result = evaluate_run(run, data, tta=tta, device=device, backend=backend,
                          threshold=threshold, include_seen=include_seen)
    print_eval(result)
    if json_out:
        write_json(json_out, result.to_dict())


@app.command()
def predict(
    model: str = typer.Argument(..., help="Run folder, model.json, or a pretrained model "
                                "name for ImageNet classes."),
    paths: list[str] = typer.Argument(..., help="Image files, folders or globs."),
    top_k: int = typer.Option(5, "--top-k", "-k"),
    output: str = typer.Option("table", "--format", "-f", help="table, json or csv (on "
                               "stdout; see --output for large collections); with --ray, "
                               "the files' format: csv or parquet."),
    output_file: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Stream rows to this .csv or .jsonl file as they are "
        "computed (one per input, errors included); running again with the same file "
        "resumes it (with the same model and options: FILE.cnnkit.json records them)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start the --output file "
                                   "afresh instead of resuming it."),
    shard: Optional[str] = typer.Option(None, help="I/N: only every N-th file of the sorted "
                                        "inputs, from the I-th (0-based), to split a "
                                        "collection over N machines."),
    tta: bool = typer.Option(False, help="Average with the horizontally flipped image."),
    threshold: Optional[float] = typer.Option(
        None, help="Answer 'unknown' when the top probability is below this (0-1); the "
        "run's report shows the accuracy and share answered at each threshold. A "
        "calibrated run answers 'unknown' for images unlike every class without it. A "
        "multi-label model answers the labels at or above it, in place of each label's "
        "threshold in model.json."),
    batch_size: int = typer.Option(64),
    chunk_size: int = typer.Option(64, help="Images decoded per chunk (rows are flushed "
                                   "per chunk)."),
    workers: Optional[int] = typer.Option(None, help="Decoding processes (default: one "
                                          "per core for 128 images or more); with --ray, "
                                          "predictor actors (default: one per CPU, or per "
                                          "GPU, of the cluster)."),
    device: str = typer.Option("auto"),
    backend: str = typer.Option("auto", help=BACKEND_HELP),
    ray: Optional[str] = typer.Option(None, "--ray", metavar="[ADDRESS]", help=RAY_HELP + (
        " --output is then a folder of one file per block of images.")),
) -> None:
    """Top-k classes with probabilities for each image."""
    from cnnkit.runtime.inputs import expand_inputs
    from cnnkit.runtime.predict import load_predictor
    from cnnkit.runtime.stream import FORMATS, parse_shard, predict_to_file, select
    from cnnkit.tasks.threshold import check_threshold

    if output not in ("table", "json", "csv") and not (ray is not None and output == "parquet"):
        also = "" if ray is None else " (csv or parquet with --ray)"
        raise CnnkitError(f"--format must be table, json or csv{also}. Received: {output!r}")
    for name, value in (("--top-k", top_k), ("--batch-size", batch_size),
                        ("--chunk-size", chunk_size), ("--workers", workers or 1)):
        if value < 1:
            raise CnnkitError(f"{name} must be at least 1. Received: {value}")
    threshold = check_threshold(threshold)
    if overwrite and output_file is None:
        raise CnnkitError("--overwrite starts an --output file afresh; pass --output FILE "
                          "(or drop --overwrite).")
    parts = parse_shard(shard)
    if ray is not None:
        from cnnkit.ray.inputs import list_inputs

        options = dict(top_k=top_k, batch_size=batch_size, tta=tta, threshold=threshold,
                       workers=workers, chunk=chunk_size)
        ray_cmds.predict(model, select(list_inputs(paths), parts), output_file,
                         output, options, ray, device, backend, overwrite)
        return
    files = expand_inputs(paths)
    if output_file is not None and output_file.suffix.lower() not in FORMATS:
        raise CnnkitError(f"--output must end in .csv or .jsonl. Received: {output_file}")
    clf = load_predictor(model, device, backend)
    options = dict(top_k=top_k, batch_size=batch_size, tta=tta, threshold=threshold,
                   chunk=chunk_size, workers=workers)
    if output_file is not None:
        done = predict_to_file(clf, files, output_file, shard=parts, overwrite=overwrite,
                               model=model, **options)
        failed = f", {done.errors:,} unreadable" if done.errors else ""
        kept = f"; {done.skipped:,} already there" if done.skipped else ""
        rate = f" ({done.rate:,.1f} images/s)" if done.written else ""
        log.err_console().print(f"wrote {done.written:,} rows to {output_file}{failed}{kept}"
                                f"{rate}", markup=False, highlight=False)
        return
    _print_predictions(clf, select(files, parts), output, options)


def _print_predictions(clf: Any, files: list[str], output: str, options: dict) -> None:
    """Predict, then print everything at once (a table needs every row's width): one
    answer per input, in order; an image that cannot be read gets its own error in its
    place (and a warning line), so one bad file spoils no other's answer."""
    from cnnkit.base.progress import RateBar
    from cnnkit.cli.tables import print_predictions
    from cnnkit.runtime.stream import predict_rows

    bar = RateBar(len(files), "predicting", enabled=len(files) >= 256)
    rows = []
    try:
        for part in predict_rows(clf, files, **options):
            rows += part
            bar.advance(len(part))
    finally:
        bar.close()
    failed = [r for r in rows if r.error is not None]
    preds = [r.prediction for r in rows if r.prediction is not None]
    if not preds:
        first = f"{log.quoted(failed[0].path)}: {failed[0].error}"
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise CnnkitError(f"No image could be read: {first}{more}.")
    for r in failed:
        log.warn(f"could not read {log.quoted(r.path)}: {r.error}")
    threshold = options["threshold"]
    if output == "json":
        json.dump([r.prediction.to_dict() if r.prediction is not None
                   else {"path": r.path, "error": r.error} for r in rows],
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif output == "csv":  # the task's columns, as an --output file has them
        k = len(preds[0].top)
        writer = csv.writer(sys.stdout)
        writer.writerow(clf.task.answer_columns(k))
        for r in rows:
            writer.writerow([r.path, *clf.task.answer_fields(r.prediction, k), r.error or ""])
    elif clf.task.name != "single-label":
        from cnnkit.cli.tables import print_label_sets

        print_label_sets(preds, threshold, errors={r.path: r.error for r in failed},
                         order=[r.path for r in rows])
    else:
        print_predictions(preds, threshold, errors={r.path: r.error for r in failed},
                          order=[r.path for r in rows])
