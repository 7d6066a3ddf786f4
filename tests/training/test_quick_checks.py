"""Mistakes the options alone show are one line before torch, the data or any process:
a missing or 'imagenet' --weights, a pretrained model offline; and a 16-bit precision on
the CPU says what the run does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import cnnkit
from cnnkit.base.errors import CnnkitError

# Each command in one process, in turn; after each: its exit status, whether torch or
# timm were imported by then, and its stderr.
CALLS = """
import contextlib, io, json, sys
from cnnkit.cli import main
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(argv)
    print(json.dumps([code, "torch" in sys.modules, "timm" in sys.modules, err.getvalue()]))
"""


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(calls: list[list[str]], tmp_path: Path, **env: str) -> list[list]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    (tmp_path / "hub").mkdir(exist_ok=True)
    out = subprocess.run([sys.executable, "-c", CALLS, json.dumps(calls)], text=True,
                         capture_output=True, timeout=120, cwd=tmp_path,
                         env={**base, "HF_HUB_CACHE": str(tmp_path / "hub"),
                              "HF_HOME": str(tmp_path / "hf"), **env})
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("[")]


def _one_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.parametrize("no_hub", ["HF_HUB_OFFLINE", "HF_ENDPOINT"])
def test_mistakes_fail_before_torch_is_imported(tmp_path: Path, no_hub: str) -> None:
    Image.new("RGB", (40, 40), (10, 200, 30)).save(tmp_path / "x.png")
    offline = "1" if no_hub == "HF_HUB_OFFLINE" else f"http://127.0.0.1:{_closed_port()}"
    calls = [["train", "shapes", "--model", "resnet18", "--out", "runs"],
             ["train", "shapes", "--model", "resnet18", "--devices", "2", "--out", "runs"],
             ["predict", "resnet18", "x.png"],
             ["train", "shapes", "--model", "efficientnet_lite0", "--weights", "imagenet"],
             ["train", "shapes", "--model", "seed-cnn", "--weights", "no-such.pth"],
             ["train", "shapes", "--weights", "."],
             ["train", "shapes", "--model", "convnext_tiny", "--out", "runs"]]  # timm's only
    results = _run(calls, tmp_path, **{no_hub: offline})
    assert len(results) == len(calls)
    lines = []
    for argv, (code, torch_in, timm_in, err) in zip(calls, results):
        assert code == 2, (argv, err)
        assert not torch_in and not timm_in, argv  # seconds of imports, and the data, spared
        lines.append(_one_error(err))
    why = "HF_HUB_OFFLINE is set" if no_hub == "HF_HUB_OFFLINE" else "cannot be reached"
    assert all("resnet18" in line and why in line for line in lines[:3])
    assert "drop --weights" in lines[3] and "'imagenet'" in lines[3]
    assert "no-such.pth: not found" in lines[4]
    assert "--weights .: a folder" in lines[5]
    assert "Unknown model 'convnext_tiny'" in lines[6] and why in lines[6]
    assert "If convnext_tiny is a timm architecture" in lines[6]
    assert not (tmp_path / "runs").exists()


def test_the_python_api_checks_weights_before_loading_data(tmp_path: Path, capsys) -> None:
    with pytest.raises(CnnkitError, match=r"no-such\.pth: not found"):
        cnnkit.train("shapes:size=12,count=60", model="seed-cnn", weights="no-such.pth",
                     epochs=1, out=str(tmp_path), plots=False)
    assert "data:" not in capsys.readouterr().out  # before: after the images were loaded


@pytest.mark.parametrize("asked", ["fp16", "bf16"])
def test_16_bit_precision_on_the_cpu_says_what_it_does(tmp_path: Path, capsys,
                                                       asked: str) -> None:
    result = cnnkit.train("shapes:size=12,count=60", model="conv4k3-pool2-dense8", epochs=1,
                          precision=asked, device="cpu", plots=False, out=str(tmp_path))
    saved = json.loads((Path(result.run_dir) / "config.json").read_text())
    assert saved["precision"] == "bf16"  # what ran, as the run folder records it
    out = capsys.readouterr()
    warned = [line for line in out.err.splitlines() if "--precision fp16" in line]
    noted = [line for line in out.out.splitlines() if line.startswith("precision: bf16")]
    if asked == "fp16":
        assert len(warned) == 1 and "training in bf16 instead" in warned[0]
    else:
        assert not warned and len(noted) == 1 and "on the CPU" in noted[0]
