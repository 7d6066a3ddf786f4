"""The three ways to train a pretrained architecture: features, fine-tune, scratch."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import cnnkit
from cnnkit.artifacts.modelfile import read_card
from cnnkit.artifacts.rundir import RunDir
from cnnkit.base.config import TrainConfig
from cnnkit.base.errors import CnnkitError
from cnnkit.cli import main
from cnnkit.evaluation import held_out_test
from cnnkit.models.build import create_model
from cnnkit.training.recipe import resolve_config

FAST = {"model": "efficientnet_lite0", "img_size": 32, "plots": False, "seed": 0}


def _phases(run: Path) -> list[dict]:
    return json.loads((run / "phases.json").read_text())


def test_features_mode_trains_only_a_head_and_caches_features(tmp_path: Path) -> None:
    first = cnnkit.train("shapes:count=240,size=32", mode="features", out=str(tmp_path),
                         name="a", **FAST)
    phases = _phases(first.run_dir)
    assert [p["mode"] for p in phases] == ["features"]
    assert phases[0]["frozen"] == "base" and phases[0]["features_cached"] is False
    # avg+max codes of blocks 3, 4, 5 (80, 112, 192 channels) and the last map (1280)
    assert phases[0]["trainable_params"] == (2 * (80 + 112 + 192 + 1280) + 1) * 3
    assert first.test_accuracy > 0.8
    # The backbone did not move: its weights are the package's.
    ref = create_model("efficientnet_lite0", 3, pretrained=True)
    model, card = cnnkit.load(first.run_dir, backend="torch").model, read_card(first.run_dir)[0]
    assert torch.equal(model.net.conv_stem.weight.cpu(), ref.conv_stem.weight)
    assert card.preprocess.mean == (0.5, 0.5, 0.5) and card.preprocess.channels == 3
    # A built-in set's images were trained and tested whole: predicting them gives the
    # test's own probabilities (no centre crop that training never took).
    assert card.preprocess.crop_pct == 1.0
    clf = cnnkit.load(first.run_dir, backend="torch")
    run = RunDir(first.run_dir)
    test = held_out_test(run, run.train_config(), clf)
    tested = clf.log_probs(test).exp().numpy()
    predicted = clf.predict_proba([x.permute(1, 2, 0).numpy() for x in test.images])
    np.testing.assert_allclose(predicted, tested, atol=1e-5)
    again = cnnkit.train("shapes:count=240,size=32", mode="features", out=str(tmp_path),
                         name="b", **FAST)
    assert _phases(again.run_dir)[0]["features_cached"] is True
    assert again.test_accuracy == first.test_accuracy
    # the same head to the last bit: the cached features sit in memory as fresh ones do
    heads = [load_file(str(r.run_dir / "model.safetensors")) for r in (first, again)]
    assert torch.equal(heads[0]["classifier.weight"], heads[1]["classifier.weight"])


def test_fine_tune_freezes_then_unfreezes_top_blocks(tmp_path: Path, monkeypatch) -> None:
    from cnnkit.training import loop
    from cnnkit.training.step import TrainStep

    seen: list[dict] = []

    class Watched(TrainStep):
        def train(self) -> None:  # the state each epoch trains in
            super().train()
            model = self.model
            seen.append({"bn_training": model.bn1.training,  # the stem's, frozen throughout
                         "top_bn_training": model.bn2.training,
                         "stem_trainable": model.conv_stem.weight.requires_grad,
                         "head_trainable": model.get_classifier().weight.requires_grad})

    monkeypatch.setattr(loop, "TrainStep", Watched)

    ref = create_model("efficientnet_lite0", 3, pretrained=True)
    result = cnnkit.train("shapes:count=120,size=32", mode="fine-tune", epochs=2,
                          head_epochs=1, unfreeze="2", out=str(tmp_path), keep_checkpoint=True,
                          **FAST)
    phases = _phases(result.run_dir)
    assert [p["name"] for p in phases] == ["head (linear probe)", "head", "fine-tune"]
    probe, head, tune = phases
    assert probe["frozen"] == head["frozen"] == "base"
    assert probe["trainable_params"] == head["trainable_params"] == 1280 * 3 + 3
    assert tune["frozen"] == "bottom 6 of 8 blocks"
    assert tune["trainable_params"] > head["trainable_params"]
    assert tune["lr_scales"] == [pytest.approx(0.7 ** 2), 1.0]
    assert len(seen) == 2
    assert all(not s["stem_trainable"] and not s["bn_training"] for s in seen)
    assert [s["top_bn_training"] for s in seen] == [False, False]  # statistics kept
    assert all(s["head_trainable"] for s in seen)
    # After the last epoch: frozen batch norm kept ImageNet's running statistics, the
    # unfrozen top block moved.
    from cnnkit.training.checkpoint import load_checkpoint

    state = load_checkpoint(result.run_dir / "checkpoints" / "last.safetensors")[0]
    assert torch.equal(state["bn1.running_mean"], ref.bn1.running_mean)
    assert torch.equal(state["blocks.4.0.conv_pw.weight"], ref.blocks[4][0].conv_pw.weight)
    assert not torch.equal(state["blocks.6.0.conv_pw.weight"], ref.blocks[6][0].conv_pw.weight)


def test_bn_stats_update_normalises_trainable_blocks_by_batch(tmp_path: Path,
                                                              monkeypatch) -> None:
    from cnnkit.training import loop
    from cnnkit.training.checkpoint import load_checkpoint
    from cnnkit.training.step import TrainStep

    seen: list[tuple[bool, bool]] = []

    class Watched(TrainStep):
        def train(self) -> None:
            super().train()
            seen.append((self.model.bn1.training, self.model.bn2.training))  # stem, top

    monkeypatch.setattr(loop, "TrainStep", Watched)
    ref = create_model("efficientnet_lite0", 3, pretrained=True)
    result = cnnkit.train("shapes:count=120,size=32", mode="fine-tune", epochs=2,
                          head_epochs=1, unfreeze="2", bn_stats="update", out=str(tmp_path),
                          keep_checkpoint=True, **FAST)
    assert seen == [(False, False), (False, True)]  # the head phase keeps them
    head, tune = _phases(result.run_dir)[1:]
    assert head["batch_norm"] == "running statistics kept"
    assert tune["batch_norm"] == "batch statistics (trainable blocks)"
    assert json.loads((result.run_dir / "config.json").read_text())["bn_stats"] == "update"
    state = load_checkpoint(result.run_dir / "checkpoints" / "last.safetensors")[0]
    assert torch.equal(state["bn1.running_mean"], ref.bn1.running_mean)
    assert not torch.equal(state["bn2.running_mean"], ref.bn2.running_mean)


def test_bn_stats_resolves_per_mode_and_refuses_what_cannot_apply() -> None:
    tune = resolve_config(TrainConfig("shapes", model="efficientnet_lite0", device="cpu"))
    scratch = resolve_config(TrainConfig("shapes", model="efficientnet_lite0",
                                         mode="scratch", device="cpu"))
    assert (tune.config.bn_stats, scratch.config.bn_stats) == ("keep", "update")
    with pytest.raises(CnnkitError, match="random weights"):
        resolve_config(TrainConfig("shapes", model="seed-cnn", bn_stats="keep"))
    with pytest.raises(CnnkitError, match="never trains the base"):
        resolve_config(TrainConfig("shapes", model="efficientnet_lite0", mode="features",
                                   bn_stats="update"))
    with pytest.raises(CnnkitError, match="--bn-stats"):
        TrainConfig("shapes", bn_stats="sometimes")


def test_linear_probe_fits_the_head_before_fine_tuning(tmp_path: Path) -> None:
    from cnnkit.training import features

    plan = resolve_config(TrainConfig("shapes:count=90,size=32", model="efficientnet_lite0",
                                      img_size=32, device="cpu"))
    assert plan.config.head_epochs == 0 and plan.config.probe
    assert [p.name for p in plan.phases] == ["fine-tune"]
    from cnnkit.artifacts.rundir import RunDir
    from cnnkit.data.sources import load_splits

    splits = load_splits(plan.config.data, plan.pre)
    model = create_model("efficientnet_lite0", 3, pretrained=True)
    before = model.get_classifier().weight.clone()
    run = RunDir.create(tmp_path, "probe")
    features.probe(plan, model, splits, run, None)
    assert not torch.equal(model.get_classifier().weight, before)
    assert all(p.requires_grad for p in model.parameters())  # nothing left frozen
    record = _phases(run.root)[0]
    assert record["train_acc"] > 0.9 and record["images"] == len(splits.train)


def test_fine_tuning_after_the_probe_never_ends_worse_than_the_probe(tmp_path: Path,
                                                                    capsys) -> None:
    # Issue 28: on 160 images two epochs after the probe ended at 60% validation, where
    # the probe's head alone had 90%. The probe is a trained start: a short run fine-tunes
    # at a share of the rate, and keeps the probe if it did better on validation.
    result = cnnkit.train("shapes:count=120,size=32", mode="fine-tune", epochs=2,
                          batch_size=16, out=str(tmp_path), **FAST)
    captured = capsys.readouterr()
    # 108 training images in batches of 16, two epochs: 14 steps
    assert "a trained start (the linear probe) and 14 steps: peak rate 0.0005" in captured.out
    assert "start (the linear probe): val loss" in captured.out
    # the epochs themselves: never worse than guessing among 3 classes (before: 1.26, 1.20,
    # and 67% test), and the test accuracy of the kept model stays high
    assert all(row["train_loss"] < math.log(3) for row in result.history)
    assert result.test_accuracy >= 0.9
    kept = json.loads((result.run_dir / "kept.json").read_text())
    assert kept["start"]["label"] == "the linear probe"
    assert kept["val_acc"] >= kept["start"]["val_acc"]
    said = "kept the trained model" in captured.out, "kept the starting" in captured.err
    assert said == ((False, True) if kept["kept"] == "start" else (True, False))
    # a rate given by hand is the user's: no share of it (a run of any length would get
    # one, as above)
    again = cnnkit.train("shapes:count=60,size=32", mode="fine-tune", epochs=1, lr=2e-3,
                         batch_size=16, out=str(tmp_path), **FAST)
    assert again.config.lr == 2e-3 and "peak rate" not in capsys.readouterr().out


def test_per_depth_learning_rates_shrink_towards_the_input() -> None:
    plan = resolve_config(TrainConfig("shapes", model="efficientnet_lite0", epochs=3,
                                      lr_decay=0.5, device="cpu"))
    model = create_model("efficientnet_lite0", 3)
    groups = plan.phases[-1].prepare(model)
    scales = {p.data_ptr(): g["lr_scale"] for g in groups for p in g["params"]}
    assert scales[model.get_classifier().weight.data_ptr()] == 1.0
    assert scales[model.conv_head.weight.data_ptr()] == 0.5
    assert scales[model.conv_stem.weight.data_ptr()] == pytest.approx(0.5 ** 8)
    assert all(p.requires_grad for p in model.parameters())


def test_scratch_mode_starts_from_random_weights(tmp_path: Path) -> None:
    plan = resolve_config(TrainConfig("shapes", model="efficientnet_lite0", mode="scratch",
                                      device="cpu"))
    assert plan.config.mode == "scratch" and len(plan.phases) == 1
    result = cnnkit.train("shapes:count=60,size=32", mode="scratch", epochs=1,
                          out=str(tmp_path), **FAST)
    ref = create_model("efficientnet_lite0", 3, pretrained=True)
    model = cnnkit.load(result.run_dir, backend="torch").model
    assert not torch.equal(model.conv_stem.weight.cpu(), ref.conv_stem.weight)
    assert _phases(result.run_dir)[0]["frozen"] == "none"


def test_a_photo_folder_defaults_to_fine_tuning_lite0(make_tree, tmp_path: Path) -> None:
    # 64 px: more than a quarter of the 224 px input (smaller images train from scratch)
    photos = make_tree(tmp_path / "photos", per_class=2, size=64)
    plan = resolve_config(TrainConfig(str(photos), device="cpu"))
    assert plan.config.model == "efficientnet_lite0" and plan.config.mode == "fine-tune"
    assert (plan.pre.img_size, plan.pre.channels, plan.pre.interpolation) == (224, 3, "bicubic")
    assert plan.config.probe and plan.config.head_epochs == 0


def test_grey_data_becomes_three_channels_for_rgb_backbones() -> None:
    plan = resolve_config(TrainConfig("fashion-mnist", model="efficientnet_lite0",
                                      device="cpu"))
    assert plan.pre.channels == 3 and plan.pre.grey and plan.pre.decode_channels == 1
    # colour data, or a grey model, reads images as they are
    assert not resolve_config(TrainConfig("shapes", model="efficientnet_lite0")).pre.grey
    assert not resolve_config(TrainConfig("fashion-mnist", model="fast-cnn")).pre.grey
    with pytest.raises(CnnkitError, match="3-channel"):
        resolve_config(TrainConfig("fashion-mnist", model="efficientnet_lite0", channels=1))


def test_a_model_of_grey_data_reads_every_image_as_grey(grey_run: Path, tmp_path: Path
                                                        ) -> None:
    """Trained on grey digits, Lite0 sees a tinted digit as the grey digit it was trained
    on (not as colours it never saw), through every backend and the exported file."""
    import shutil

    run = Path(shutil.copytree(grey_run, tmp_path / "run"))  # the export writes into it
    assert json.loads((run / "model.json").read_text())["input"]["grey"] is True
    from sklearn.datasets import load_digits

    grey = [(d * 255 / 16).astype(np.uint8) for d in load_digits().images[:12]]
    tinted = [np.stack([g, g * 0.6, g * 0.3], axis=-1).astype(np.uint8) for g in grey]
    luma = [np.asarray(Image.fromarray(t).convert("L")) for t in tinted]
    for backend in ("torch", "onnx"):
        clf = cnnkit.load(run, backend=backend)
        np.testing.assert_allclose(clf.predict_proba(tinted), clf.predict_proba(luma),
                                   atol=1e-6)
    assert main(["export", str(run)]) == 0
    onnx = cnnkit.load(run / "model.onnx")
    np.testing.assert_allclose(onnx.predict_proba(tinted), onnx.predict_proba(luma), atol=1e-6)


def test_transfer_modes_need_a_pretrained_model() -> None:
    with pytest.raises(CnnkitError, match="needs a pretrained model"):
        resolve_config(TrainConfig("shapes", model="seed-cnn", mode="features"))


def test_features_runs_are_not_resumed(grey_run: Path, tmp_path: Path) -> None:
    import shutil

    run = shutil.copytree(grey_run, tmp_path / "run")  # a finished features run
    assert json.loads((run / "config.json").read_text())["mode"] == "features"
    with pytest.raises(CnnkitError, match="run the same command again"):
        cnnkit.resume(run)


def test_drop_path_skips_blocks_while_fine_tuning_and_not_after(tmp_path: Path) -> None:
    from timm.layers import DropPath

    seen: list[int] = []

    def count(trainer, row) -> None:
        seen.append(sum(isinstance(m, DropPath) and m.training for m in trainer.model.modules()))

    result = cnnkit.train("shapes:count=60,size=32", mode="fine-tune", epochs=1,
                          drop_path=0.2, out=str(tmp_path), callbacks=[count], **FAST)
    assert seen == [15]  # 16 blocks, the first at rate 0
    assert json.loads((result.run_dir / "config.json").read_text())["drop_path"] == 0.2
    # a plain model file: no DropPath
    model = cnnkit.load(result.run_dir, "cpu", backend="torch").model
    assert not any(isinstance(m, DropPath) for m in model.modules())


def test_drop_path_is_refused_where_it_cannot_apply(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="never trains the base"):
        resolve_config(TrainConfig("shapes", model="efficientnet_lite0", mode="features",
                                   drop_path=0.1))
    with pytest.raises(CnnkitError, match=r"in \[0, 1\)"):
        TrainConfig("shapes", drop_path=1.0)
    with pytest.raises(CnnkitError, match="residual blocks"):
        cnnkit.train("shapes:count=60,size=16", model="seed-cnn", drop_path=0.1,
                     out=str(tmp_path / "runs"), plots=False)
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made


def test_a_resumed_run_skips_blocks_as_the_unbroken_one_does(tmp_path: Path) -> None:
    def stop(trainer, row) -> None:
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    opts = {"mode": "fine-tune", "epochs": 2, "drop_path": 0.3, **FAST}
    whole = cnnkit.train("shapes:count=60,size=32", out=str(tmp_path), name="whole", **opts)
    with pytest.raises(KeyboardInterrupt):
        cnnkit.train("shapes:count=60,size=32", out=str(tmp_path), name="stopped",
                     callbacks=[stop], **opts)
    resumed = cnnkit.resume(tmp_path / "stopped")
    # Without drop-path after --resume, the second epoch's loss would differ.
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]


def test_unfreeze_beyond_the_models_blocks_is_one_line(tmp_path: Path, capsys) -> None:
    """--unfreeze 99 on a model of 8 blocks unfroze all 8 without a word."""
    code = main(["train", "shapes:count=30,size=32", "-m", "efficientnet_lite0",
                 "--mode", "fine-tune", "--img-size", "32", "-e", "1", "--unfreeze", "99",
                 "--out", str(tmp_path), "--name", "r"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err == ("error: --unfreeze 99: efficientnet_lite0 has 8 blocks below its head. "
                   "Pass 1 to 8 to train the top ones, or --unfreeze all.\n")
    assert not (tmp_path / "r").exists()


def test_unfreeze_up_to_the_models_blocks_passes() -> None:
    from cnnkit.training.transfer import blocks, check_unfreeze

    model = create_model("efficientnet_lite0", 3, pretrained=False)
    count = len(blocks(model))
    cfg = TrainConfig(data="x", mode="fine-tune")
    check_unfreeze(model, cfg.replace(unfreeze=str(count)), "efficientnet_lite0")
    with pytest.raises(CnnkitError, match=f"has {count} blocks below its head"):
        check_unfreeze(model, cfg.replace(unfreeze=str(count + 1)), "efficientnet_lite0")


@pytest.mark.parametrize(("options", "message"), [
    (["--unfreeze", "2"], "--unfreeze shapes the phases of --mode fine-tune, and this run is "
                          "--mode scratch (auto: the model has no pretrained weights): lenet5 "
                          "trains every layer from random weights. Drop --unfreeze, or "
                          "fine-tune a pretrained model."),
    (["--head-epochs", "1", "--mode", "scratch"],
     "--head-epochs shapes the phases of --mode fine-tune, and this run is --mode scratch: "),
    (["--lr-decay", "0.5", "--unfreeze", "1", "--head-epochs", "1"],
     "error: --unfreeze, --head-epochs and --lr-decay shape the phases of --mode fine-tune"),
])
def test_fine_tune_options_on_a_scratch_run_are_one_line(tmp_path: Path, capsys, options,
                                                         message: str) -> None:
    """They were dropped without a word: the run trained every layer in one phase."""
    code = main(["train", "shapes:count=30,size=16", "-m", "lenet5", "-e", "2", *options,
                 "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not any(tmp_path.iterdir())


def test_fine_tune_options_on_a_features_run_are_one_line() -> None:
    with pytest.raises(CnnkitError, match="this run is --mode features: its head is fitted to "
                                          "a base that never trains"):
        resolve_config(TrainConfig(data="shapes:count=30,size=32", mode="features",
                                   unfreeze="2", **FAST))
