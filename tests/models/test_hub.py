"""Pretrained weights: where they are (bundled, cached, download) and failing fast offline.

The offline cases do not depend on this machine's network: ``HF_HUB_OFFLINE`` and an
``HF_ENDPOINT`` on a closed local port stand for "no hub", in fresh processes because
``huggingface_hub`` reads its settings at import.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cnnkit.base.errors import CnnkitError
from cnnkit.models import get_model_info, hub, list_models
from cnnkit.models.alexnet import ALEXNET_URL


def _fake_hub(root: Path, repo: str) -> Path:
    """A hub cache holding ``repo`` with a model.safetensors, as hf_hub_download leaves it."""
    folder = root / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    save_file({"x": torch.zeros(1)}, str(folder / "snapshots" / commit / "model.safetensors"))
    return root


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    (tmp_path / "hub").mkdir(exist_ok=True)
    return {**env, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "hf"),
            "TORCH_HOME": str(tmp_path / "torch"), **extra}


def _train(tmp_path: Path, model: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess,
                                                                      float]:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cnnkit", "train", "shapes", "--model", model,
                          "--epochs", "1", "--out", str(tmp_path / "runs"), "--no-plots"],
                         env=env, capture_output=True, text=True, timeout=120)
    return out, time.perf_counter() - start


BUILD = """
import sys, time
import timm, huggingface_hub  # imported first: the clock below times the build alone
from cnnkit.base.errors import CnnkitError
from cnnkit.models import create_model
start = time.perf_counter()
try:
    create_model(sys.argv[1], 3, pretrained=True)
except CnnkitError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
finally:
    print(f"{time.perf_counter() - start:.3f}")
"""


def _one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.strip()]
    assert len(errors) == 1, stderr  # no retry messages, no traceback
    assert errors[0].startswith("error: ") and errors[0].endswith("--mode scratch."), errors[0]
    return errors[0]


@pytest.mark.parametrize("no_hub", ["HF_HUB_OFFLINE", "HF_ENDPOINT"])
def test_building_without_a_hub_fails_at_once_with_one_whole_line(tmp_path: Path,
                                                                   no_hub: str) -> None:
    value = "1" if no_hub == "HF_HUB_OFFLINE" else f"http://127.0.0.1:{_closed_port()}"
    out = subprocess.run([sys.executable, "-c", BUILD, "vgg16"], capture_output=True,
                         text=True, env=_env(tmp_path, **{no_hub: value}), timeout=120)
    assert out.returncode == 2, out.stderr
    line = _one_error_line(out.stderr)
    assert "vgg16.tv_in1k" in line
    assert ("HF_HUB_OFFLINE is set" if no_hub == "HF_HUB_OFFLINE" else "cannot be reached") \
        in line
    assert float(out.stdout) < 5  # the hub's retries took about 60 s


def test_an_unreachable_hub_fails_fast_with_one_whole_line(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    out, seconds = _train(tmp_path, "resnet18", _env(tmp_path, HF_ENDPOINT=endpoint))
    assert out.returncode == 2
    line = _one_error_line(out.stderr)
    assert "resnet18.a1_in1k" in line and "cannot be reached" in line
    assert "Connection refused" in line
    assert "data:" not in out.stdout  # checked before any image is loaded
    assert not (tmp_path / "runs").exists()
    assert seconds < 60  # before: ten retry lines over about 60 s


def test_unreachable_names_the_reason_within_the_timeout() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert hub.unreachable(f"http://127.0.0.1:{server.getsockname()[1]}") is None
    start = time.perf_counter()
    reason = hub.unreachable(f"http://127.0.0.1:{_closed_port()}", timeout=1.0)
    assert reason is not None and "Connection refused" in reason
    reason = hub.unreachable("https://cnnkit-no-such-host.invalid", timeout=1.0)
    assert reason == "cannot resolve cnnkit-no-such-host.invalid"
    assert time.perf_counter() - start < 3.5


def test_download_check_honours_hf_hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hf_offline()
    with pytest.raises(CnnkitError, match="HF_HUB_OFFLINE is set"):
        hub.check_can_download("resnet18.a1_in1k", "hf-hub:timm/resnet18.a1_in1k")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not hub.hf_offline()


def test_weights_status_bundled_cached_or_download(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(_fake_hub(tmp_path / "hub", "timm/resnet18.a1_in1k")))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    status = {m.name: hub.weights_status(m.weights_from) for m in list_models()}
    assert status["efficientnet_lite0"] == hub.BUNDLED
    assert status["resnet18"] == hub.CACHED
    assert status["vgg16"] == status["alexnet"] == hub.DOWNLOAD
    assert status["seed-cnn"] is None  # scratch models have no pretrained weights
    checkpoint = hub.url_cached_file(ALEXNET_URL)
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    assert hub.weights_status(get_model_info("alexnet").weights_from) == hub.CACHED


def test_every_pretrained_name_says_where_its_weights_come_from() -> None:
    for info in list_models(family="pretrained"):
        assert info.weights_from and info.weights_from.split(":")[0] in (
            "package", "hf-hub", "url"), info.name


def test_the_paths_match_torch_and_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.models import AlexNet_Weights

    assert AlexNet_Weights.IMAGENET1K_V1.url == ALEXNET_URL
    assert hub.torch_hub_dir() == Path(torch.hub.get_dir())
    monkeypatch.setenv("TORCH_HOME", "/somewhere/torch")
    assert hub.torch_hub_dir() == Path(torch.hub.get_dir()) == Path("/somewhere/torch/hub")


def test_cnnkit_models_shows_each_pretrained_names_weights(tmp_path: Path) -> None:
    env = _env(tmp_path, COLUMNS="200")
    _fake_hub(Path(env["HF_HUB_CACHE"]), "timm/resnet50.a1_in1k")
    out = subprocess.run([sys.executable, "-m", "cnnkit", "models", "--family", "pretrained"],
                         env=env, capture_output=True, text=True, check=True)
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.stdout.splitlines()
             if line.startswith("│")]
    rows = {c[0]: c[3] for c in cells if c[0]}
    assert rows["efficientnet_lite0"] == "bundled"
    assert rows["resnet50"] == "cached"
    assert rows["resnet18"] == rows["vgg16"] == rows["alexnet"] == "download"


def test_the_hub_cache_is_found_where_huggingface_hub_looks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cnnkit reads the hub cache without importing huggingface_hub; both agree."""
    from huggingface_hub import try_to_load_from_cache

    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert hub.hf_cache_dir() == tmp_path / "home" / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub.hf_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert hub.hf_cache_dir() == tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    _fake_hub(tmp_path / "hub", "timm/resnet18.a1_in1k")
    theirs = try_to_load_from_cache("timm/resnet18.a1_in1k", "model.safetensors",
                                    cache_dir=str(tmp_path / "hub"))
    assert hub.hf_cached_file("timm/resnet18.a1_in1k") == Path(theirs)
    assert hub.hf_cached_file("timm/vgg16.tv_in1k") is None


def test_a_host_found_unreachable_is_not_tried_again_for_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    url = f"http://127.0.0.1:{port}"
    first = hub.unreachable(url, timeout=1.0)
    assert first is not None and "Connection refused" in first
    with socket.socket() as server:  # the host answers now...
        server.bind(("127.0.0.1", port))
        server.listen()
        assert hub.unreachable(url, timeout=1.0) == first  # ...but is not asked again
        monkeypatch.setattr(hub, "UNREACHABLE_TTL_S", 0.0)  # until the answer is old
        assert hub.unreachable(url, timeout=1.0) is None
