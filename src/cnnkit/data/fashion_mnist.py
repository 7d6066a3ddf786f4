"""Fashion-MNIST from its four IDX files: Debian's package, a cache, or the public download."""

from __future__ import annotations

import gzip
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np

from cnnkit.base.errors import CnnkitError
from cnnkit.base.paths import cache_dir

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"


def candidate_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("CNNKIT_FASHION_MNIST"):
        dirs.append(Path(os.environ["CNNKIT_FASHION_MNIST"]))
    dirs += [DEBIAN_DIR, cache_dir("datasets", "fashion-mnist")]
    return dirs


def find_dir() -> Path | None:
    for d in candidate_dirs():
        if all((d / name).is_file() for name in FILES.values()):
            return d
    return None


def fetch(quiet: bool = False) -> Path:
    """Return the folder holding the four files, downloading them if none has them."""
    found = find_dir()
    if found is not None:
        return found
    target = cache_dir("datasets", "fashion-mnist")
    for name in FILES.values():
        if (target / name).is_file():
            continue
        if not quiet:
            print(f"downloading {URL}{name}")
        tmp = target / f".{name}.part"
        try:
            with urllib.request.urlopen(URL + name, timeout=60) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise CnnkitError(
                f"Fashion-MNIST is not on this machine and downloading {URL}{name} failed "
                f"({exc}). Install Debian's 'dataset-fashion-mnist' package or put the four "
                f"IDX files in {target}."
            ) from None
        os.replace(tmp, target / name)
    return target


def read_idx(path: Path) -> np.ndarray:
    """Parse one (gzipped) IDX file: big-endian header, then raw uint8 data."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    magic = int.from_bytes(data[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08:
        raise CnnkitError(f"{path} is not an IDX file of uint8 data (magic {magic:#x}).")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels) as uint8 arrays."""
    folder = fetch(quiet=False)
    arrays = {key: read_idx(folder / name) for key, name in FILES.items()}
    return (arrays["train_images"], arrays["train_labels"],
            arrays["test_images"], arrays["test_labels"])
