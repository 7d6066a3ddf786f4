"""``fashion-mnist-mosaic``: multi-label images made from real ones.

Each image is a 2x2 grid of cells; a cell holds a Fashion-MNIST item drawn at random,
or is left blank (black, as Fashion-MNIST's background) with a given chance. An image's
labels are the classes of the items it shows (two of one class count once), so it has
zero to four labels. Training mosaics are made from the training items, test mosaics
from the test items, so no item is in both. Seeded: the same options give the same set.
"""

from __future__ import annotations

import numpy as np

GRID = 2


def generate(items: np.ndarray, classes: np.ndarray, count: int, seed: int,
             blank: float, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` mosaics of ``items`` (uint8 ``(N, H, W)``) with class indices
    ``classes``; each cell blank with chance ``blank``. Returns uint8 images
    ``(count, 2H, 2W)`` and float32 multi-hot labels ``(count, num_classes)``."""
    rng = np.random.default_rng(seed)
    n, h, w = items.shape
    cells = GRID * GRID
    pick = rng.integers(0, n, size=(count, cells))
    shown = rng.random((count, cells)) >= blank
    tiles = items[pick] * shown[:, :, None, None].astype(items.dtype)
    grid = tiles.reshape(count, GRID, GRID, h, w).transpose(0, 1, 3, 2, 4)
    images = np.ascontiguousarray(grid.reshape(count, GRID * h, GRID * w))
    targets = np.zeros((count, num_classes), dtype=np.float32)
    rows = np.repeat(np.arange(count), cells)[shown.ravel()]
    targets[rows, classes[pick].ravel()[shown.ravel()]] = 1.0
    return images, targets
