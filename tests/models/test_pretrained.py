"""Pretrained backbones: the offline EfficientNet-Lite0 mapping, timm by name, weight files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from skimage import data as skdata

from cnnkit.base.errors import CnnkitError
from cnnkit.models.build import create_model, resolve
from cnnkit.models.pretrained import ALIASES
from cnnkit.models.registry import get_model_info
from cnnkit.models.weights import load_weights_file, read_weights_file
from cnnkit.runtime.predict import load_predictor


@pytest.fixture(scope="module")
def lite0_imagenet():
    return load_predictor("efficientnet_lite0", "cpu")


def test_lite0_package_weights_predict_real_photos(lite0_imagenet) -> None:
    # The 296 tensors are mapped by position: if the order were wrong, these would be noise.
    coffee, cat = lite0_imagenet.predict([skdata.coffee(), skdata.chelsea()], top_k=3)
    assert coffee.label == "espresso" and coffee.probability > 0.5
    assert "cat" in cat.label
    assert sum(p for c, p in cat.top if "cat" in c) > 0.8


def test_zero_shot_cli_prints_espresso(tmp_path: Path) -> None:
    from PIL import Image

    photo = tmp_path / "coffee.jpg"
    Image.fromarray(skdata.coffee()).save(photo)
    out = subprocess.run([sys.executable, "-m", "cnnkit", "predict", "efficientnet_lite0",
                          str(photo), "--format", "json"], capture_output=True, text=True,
                         check=True)
    rows = json.loads(out.stdout)
    assert rows[0]["label"] == "espresso"
    assert rows[0]["path"] == str(photo)


def test_a_cached_zero_shot_export_predicts_without_torch_or_timm(lite0_imagenet,
                                                                  tmp_path: Path) -> None:
    from PIL import Image

    assert type(lite0_imagenet.backend).__name__ == "OnnxBackend"  # exported once, cached
    photo = tmp_path / "coffee.jpg"
    Image.fromarray(skdata.coffee()).save(photo)
    code = ("import json, sys; from cnnkit.runtime.predict import load_predictor; "
            "p = load_predictor('efficientnet_lite0', 'auto').predict([sys.argv[1]])[0]; "
            "print(json.dumps([p.label, p.probability, "
            "sorted({m.split('.')[0] for m in sys.modules})]))")
    # the cache the fixture exported into (it is made before this test's own cache is set)
    cache = lite0_imagenet.backend.path.parent.parent
    out = subprocess.run([sys.executable, "-c", code, str(photo)], capture_output=True,
                         text=True, check=True, env={**os.environ, "CNNKIT_CACHE": str(cache)})
    label, probability, modules = json.loads(out.stdout.splitlines()[-1])
    assert not {"torch", "torchvision", "timm"} & set(modules)
    expected = lite0_imagenet.predict([str(photo)])[0]
    assert label == expected.label == "espresso"
    assert probability == pytest.approx(expected.probability, abs=1e-6)


def test_lite0_preprocessing_follows_the_backbone() -> None:
    info = get_model_info("efficientnet_lite0")
    assert (info.img_size, info.channels, info.mean, info.std) == (224, 3, (0.5,) * 3, (0.5,) * 3)
    assert info.interpolation == "bicubic" and info.crop_pct == 0.875


def test_new_head_keeps_the_pretrained_base() -> None:
    ref = create_model("efficientnet_lite0", 1000, pretrained=True)
    new = create_model("efficientnet_lite0", 7, pretrained=True)
    assert new.get_classifier().out_features == 7
    assert torch.equal(ref.conv_stem.weight, new.conv_stem.weight)
    scratch = create_model("efficientnet_lite0", 7, pretrained=False)
    assert not torch.equal(ref.conv_stem.weight, scratch.conv_stem.weight)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_alias_preprocessing_matches_timm(alias: str) -> None:
    from timm.models import get_pretrained_cfg

    name = ALIASES[alias][0]
    cfg = get_pretrained_cfg(name)
    info = get_model_info(alias)
    assert info.is_pretrained and info.img_size == cfg.input_size[-1]
    assert info.mean == tuple(cfg.mean) and info.std == tuple(cfg.std)
    assert (info.interpolation, info.crop_pct) == (cfg.interpolation, cfg.crop_pct)


def test_the_seed_architectures_are_reachable_by_name() -> None:
    for name in ("vgg16", "resnet18", "resnet50", "alexnet", "mobilenet", "efficientnet"):
        model = create_model(name, 5, pretrained=False)
        x = torch.randn(1, 3, 64 if name != "alexnet" else 224,
                        64 if name != "alexnet" else 224)
        assert model.eval()(x).shape == (1, 5), name
        assert model.get_classifier().out_features == 5


def test_any_timm_model_by_name() -> None:
    arch, info = resolve("timm/resnet10t")
    assert arch.name == "resnet10t" and info.is_pretrained
    model = create_model(arch, 3, pretrained=False)
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(CnnkitError, match="Unknown model"):
        resolve("resnet_nonexistent_99")


FAKE_CACHE_SCRIPT = """
import sys, torch
from cnnkit.models.build import create_model
from cnnkit.base.errors import CnnkitError
model = create_model(sys.argv[1], 4, pretrained=True)
print(float(model.conv1.weight.flatten()[0]), model.get_classifier().out_features)
"""


def _fake_hub(tmp_path: Path, repo: str) -> tuple[Path, torch.Tensor]:
    """A Hugging Face hub cache holding one timm repo, as hf_hub_download leaves it."""
    import timm

    state = timm.create_model(repo.split("/")[1], pretrained=False).state_dict()
    state["conv1.weight"] = torch.full_like(state["conv1.weight"], 0.125)
    folder = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snap / "model.safetensors"))
    return tmp_path / "hub", state["conv1.weight"]


def _run_offline(hub: Path, model: str, **no_hub: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HF_")},
           "HF_HUB_CACHE": str(hub), "HF_HOME": str(hub.parent / "hf-home"),
           **(no_hub or {"HF_HUB_OFFLINE": "1"})}
    return subprocess.run([sys.executable, "-c", FAKE_CACHE_SCRIPT, model], env=env,
                          capture_output=True, text=True)


# With the weights cached, neither HF_HUB_OFFLINE nor a hub that refuses connections
# (a closed local port) stops or slows the build: the cache is read without asking the hub.
@pytest.mark.parametrize("no_hub", [{"HF_HUB_OFFLINE": "1"},
                                    {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_timm_weights_come_from_the_hub_cache(tmp_path: Path, no_hub: dict[str, str]) -> None:
    hub, _ = _fake_hub(tmp_path, "timm/resnet18.a1_in1k")
    out = _run_offline(hub, "resnet18", **no_hub)
    assert out.returncode == 0, out.stderr
    assert "Retrying" not in out.stderr and "huggingface.co" not in out.stderr
    first, classes = out.stdout.split()
    assert float(first) == 0.125 and int(classes) == 4


def test_timm_weights_missing_offline_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "hub").mkdir()
    out = _run_offline(tmp_path / "hub", "resnet18")
    assert out.returncode != 0
    assert ("The pretrained weights of resnet18.a1_in1k are not in the Hugging Face cache "
            "and HF_HUB_OFFLINE is set") in out.stderr
    assert "efficientnet_lite0" in out.stderr


def test_weights_file_safetensors_and_pth(tmp_path: Path) -> None:
    src = create_model("efficientnet_lite0", 10, pretrained=False)
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(st))
    pth = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, pth)
    for path in (st, pth):
        # A 3-class model takes the base and leaves its new classifier alone.
        model = create_model("efficientnet_lite0", 3, weights=str(path))
        assert torch.equal(model.conv_stem.weight, src.conv_stem.weight)
        assert model.get_classifier().out_features == 3


def test_weights_file_never_unpickles(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "payload": Path("/etc/passwd")}, path)
    with pytest.raises(CnnkitError, match="holds Python objects other than tensors") as info:
        read_weights_file(path)
    message = str(info.value)  # whole and plain: no cut-off quote of torch's own text
    assert "\n" not in message and "Re-running" not in message and "..." not in message
    assert message.endswith("or safetensors.")


def test_weights_file_for_another_model_is_refused(tmp_path: Path) -> None:
    other = create_model("seed-cnn", 10, 1, 28)
    path = tmp_path / "seed.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(path))
    with pytest.raises(CnnkitError, match="does not fit this model"):
        load_weights_file(create_model("efficientnet_lite0", 10), path)
    with pytest.raises(CnnkitError, match="not found"):
        read_weights_file(tmp_path / "nope.safetensors")


def test_weights_file_starts_a_scratch_stack_too(tmp_path: Path) -> None:
    """`--weights` on a registry stack (seed-cnn) loads them rather than being ignored."""
    src = create_model("seed-cnn", 10, 1, 28)
    path = tmp_path / "seed.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    model = create_model("seed-cnn", 10, 1, 28, weights=str(path))
    for (name, a), b in zip(src.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(CnnkitError, match="does not fit this model"):
        create_model("fast-cnn", 10, 1, 28, weights=str(path))
