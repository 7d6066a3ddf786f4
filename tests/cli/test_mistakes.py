"""User mistakes through the real command: one line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from cnnkit.cli import main


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list, pattern: str) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert pattern.lower() in err.lower(), err
    return err


def _tree(root: Path, classes: dict[str, int]) -> Path:
    for cls, n in classes.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(root / cls / f"{i}.png")
    return root


def test_a_missing_path(tmp_path: Path, capsys) -> None:
    _one_line_error(capsys, ["train", tmp_path / "photoz"], "Data not found")
    _one_line_error(capsys, ["train", tmp_path / "labels.csv"], "CSV file not found")


def test_an_empty_class_folder(tmp_path: Path, capsys) -> None:
    data = _tree(tmp_path / "d", {"cat": 3, "dog": 3, "bird": 0})
    err = _one_line_error(capsys, ["train", data, "-m", "seed-cnn"], "has no images")
    assert "bird" in err


def test_a_single_class(tmp_path: Path, capsys) -> None:
    _one_line_error(capsys, ["train", _tree(tmp_path / "d", {"cat": 5}), "-m", "seed-cnn"],
                    "only one class")


def test_a_folder_of_loose_images(tmp_path: Path, capsys) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    _one_line_error(capsys, ["train", tmp_path, "-m", "seed-cnn"], "no class sub-folders")


def test_an_unreadable_image(trained, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "photo.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    err = _one_line_error(capsys, ["predict", trained[0], bad], "photo.jpg")
    assert "cannot decode" in err
    assert bad.read_bytes() == b"\xff\xd8\xff\xe0 truncated"


def test_a_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(img)
    (tmp_path / "notarun").mkdir()
    _one_line_error(capsys, ["predict", tmp_path / "notarun", img], "is not a cnnkit run")
    _one_line_error(capsys, ["evaluate", tmp_path / "notarun"], "is not a cnnkit run")
    _one_line_error(capsys, ["train", "--resume", tmp_path / "notarun"], "is not a cnnkit run")
    _one_line_error(capsys, ["predict", "no-such-run", img], "neither a run folder")


def test_a_model_file_that_is_not_a_model(tmp_path: Path, capsys) -> None:
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(img)
    (tmp_path / "weights.pt").write_bytes(b"\x80\x04pickle")
    _one_line_error(capsys, ["predict", tmp_path / "weights.pt", img], "pickles are not loaded")
    (tmp_path / "model.json").write_text("{}")
    _one_line_error(capsys, ["evaluate", tmp_path / "model.json", "shapes"],
                    "not a cnnkit model sidecar")


@pytest.mark.parametrize("model, message", [
    ("no-such-model", "Unknown model 'no-such-model'"),
    ("seed_cnn", "Did you mean seed-cnn"),
    ("conv32k3-pool2-dens128", "Cannot read 'dens128'"),
    ("conv0k3-dense8", "at least 1"),
    ("missing.yaml", "Model file not found"),
    ("dense1000000000", "units must be at most 65,536"),
    ("-".join(["conv4k3same"] * 200), "longer than a model's name may be"),
    ("conv4096k3same-dense65536", "parameters before its classifier"),
])
def test_a_bad_model(tmp_path: Path, capsys, model: str, message: str) -> None:
    _one_line_error(capsys, ["train", "shapes:count=30", "--model", model, "--out",
                             tmp_path / "runs"], message)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text, message", [
    ("epochs: [3\n", "is not valid YAML"),
    ("epoch: 3\n", "Unknown training option(s): epoch"),
    ("epochs: three\n", "--epochs takes a whole number"),
    ("- 3\n", "should hold a mapping"),
])
def test_a_bad_config_file(tmp_path: Path, capsys, text: str, message: str) -> None:
    (tmp_path / "run.yaml").write_text(text)
    _one_line_error(capsys, ["train", "shapes", "--config", tmp_path / "run.yaml"], message)
    _one_line_error(capsys, ["train", "shapes", "--config", tmp_path / "nope.yaml"],
                    "Config file not found")


@pytest.mark.parametrize("argv, message", [
    (["train", "shapes", "--epoch", "3"], "No such option: --epoch"),
    (["train", "shapes", "--epochs", "three"], "Invalid value for '--epochs'"),
    (["evaluate"], "Missing argument 'run'"),
    (["predict", "runs/x"], "Missing argument 'paths'"),
    (["trian", "shapes"], "No such command 'trian'"),
    (["data", "export", "shapes"], "Missing argument 'out'"),
])
def test_usage_errors_are_one_line(capsys, argv: list[str], message: str) -> None:
    err = _one_line_error(capsys, argv, message)
    assert "--help" in err


@pytest.mark.parametrize("argv, message", [
    (["train", "shapes", "--schedule", "linear"], "--schedule must be one of"),
    (["train", "shapes", "--augment", "spin"], "Unknown augmentation 'spin'"),
    (["train", "shapes", "--val-fraction", "1.5"], "--val-fraction must be in"),
    (["train", "shapes", "--device", "cuda:7"], "--device"),
    (["train"], "Missing DATA"),
    (["train", "shapes:colour=red"], "has no option 'colour'"),
    (["train", "shapes", "--weight-decay", "nan"], "--weight-decay takes"),
    (["train", "shapes", "--weight-decay", "-1"], "--weight-decay takes"),
])
def test_bad_option_values(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    if "cuda" in argv and __import__("torch").cuda.is_available():
        pytest.skip("checks the message for asking for a GPU on a machine without one")
    _one_line_error(capsys, [*argv, "--out", tmp_path / "runs"], message)
    assert not (tmp_path / "runs").exists()


def test_an_output_folder_that_is_a_file(trained, tmp_path: Path, capsys) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    data = _tree(tmp_path / "d", {"cat": 3, "dog": 3})
    _one_line_error(capsys, ["train", data, "--out", taken], "--out")
    err = _one_line_error(capsys, ["train", data, "--out", taken / "runs"], "is a file")
    assert f"{taken} is a file" in err
    assert taken.read_text() == "not a folder"
    img = next(trained[1].rglob("*.png"))
    _one_line_error(capsys, ["explain", trained[0], img, "--out", taken], "is a file")
    _one_line_error(capsys, ["export", trained[0], "--out", taken / "m.onnx"], "is a file")
    _one_line_error(capsys, ["compare", trained[0], trained[0], "--out", tmp_path],
                    "is a folder, where a file is to be written")


def test_an_output_file_where_nothing_can_be_written(trained, capsys) -> None:
    """evaluate --json into /proc (a folder that holds no new files) ended in a
    FileNotFoundError traceback naming the atomic write's temporary file."""
    err = _one_line_error(capsys, ["evaluate", trained[0], "--json", "/proc/m.json",
                                   "--device", "cpu"], "/proc/m.json:")
    assert ".tmp" not in err and "choose a file in a folder you can write to" in err


def test_predict_option_mistakes(trained, capsys) -> None:
    img = next(trained[1].rglob("*.png"))
    _one_line_error(capsys, ["predict", trained[0], img, "--format", "xml"], "--format must be")
    _one_line_error(capsys, ["predict", trained[0], img, "--top-k", "0"], "--top-k must be")
    _one_line_error(capsys, ["predict", trained[0], "nothing/*.png"], "No images match")


def test_resume_mistakes(trained, tmp_path: Path, capsys) -> None:
    run = Path(shutil.copytree(trained[0], tmp_path / "run"))
    _one_line_error(capsys, ["train", "--resume", run, "--epochs", "5"], "drop --epochs")
    _one_line_error(capsys, ["train", "--resume", run], "already finished its 3 epochs")


def test_the_installed_command_in_a_fresh_process(tmp_path: Path) -> None:
    """The real entry point: one line, status 2, and no scikit-learn imported to predict."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src"),
           "CNNKIT_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "cnnkit", "train", str(tmp_path / "nope")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Data not found" in proc.stderr
    code = ("import sys\nfrom cnnkit.cli import main\n"
            "main(['predict', 'nothing', 'nothing.png'])\n"
            "print('sklearn' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_first_hour_messages(tmp_path: Path, capsys) -> None:
    """Issue 18 item 7: the small messages a new user met."""
    args = ["train", "shapes:size=12,count=40", "--model", "conv4k3-pool2-dense8", "--epochs",
            "1", "--device", "cpu", "--no-plots", "--out", str(tmp_path), "--name", "r"]
    assert main(args) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("test: "))
    assert "  " not in line and " on 10 images" in line  # 3 classes: no top-k, no gap
    assert "(--batch-size to choose)" in out  # names the option that was changed
    assert main(["train", "--resume", str(tmp_path / "r"), "--no-plots"]) == 2
    assert "drop --no-plots" in capsys.readouterr().err
    pickled = tmp_path / "model.pth"
    import torch

    torch.save(torch.nn.Linear(2, 2), pickled)  # a whole pickled model, not its weights
    code = main(["train", "shapes:size=12,count=40", "--model", "efficientnet_lite0",
                 "--weights", str(pickled), "--epochs", "1", "--out", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 2 and "\x1b" not in err and "refuses" in err and len(err.splitlines()) == 1


def test_features_mode_has_no_batches_to_shrink(tmp_path: Path, capsys) -> None:
    assert main(["train", "shapes:size=32,count=40", "--model", "efficientnet_lite0",
                 "--mode", "features", "--img-size", "32", "--epochs", "1", "--device", "cpu",
                 "--no-plots", "--out", str(tmp_path), "--name", "f"]) == 0
    out = capsys.readouterr().out
    assert "batch size" not in out and "augmentation: none" in out
    assert main(["summary", str(tmp_path / "f")]) == 0
    out = capsys.readouterr().out
    assert "trainable, 3,371,008 frozen" in out and "never trained" in out
