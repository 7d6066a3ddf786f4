"""A seeded synthetic data set: coloured circles, squares and triangles on noise.

Any size and count, generated in milliseconds: for fast tests and for trying things
out without downloading anything.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")


def generate(count: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` RGB images ``(N, size, size, 3)`` uint8 and labels, classes balanced."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % len(CLASSES)
    rng.shuffle(labels)
    images = np.empty((count, size, size, 3), dtype=np.uint8)
    for i, label in enumerate(labels):
        base = rng.integers(0, 256, size=3)
        noise = rng.normal(0, 25, size=(size, size, 3))
        bg = np.clip(base * 0.35 + 60 + noise, 0, 255).astype(np.uint8)
        img = Image.fromarray(bg, "RGB")
        draw = ImageDraw.Draw(img)
        r = rng.uniform(0.2, 0.4) * size
        cx, cy = rng.uniform(r, size - r, size=2)
        colour = tuple(int(c) for c in rng.integers(110, 256, size=3))
        if label == 0:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        elif label == 1:
            h = r * 0.85
            draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=colour)
        else:
            angle = rng.uniform(0, 2 * np.pi)
            pts = [(cx + r * np.cos(angle + k * 2 * np.pi / 3),
                    cy + r * np.sin(angle + k * 2 * np.pi / 3)) for k in range(3)]
            draw.polygon(pts, fill=colour)
        images[i] = np.asarray(img)
    return images, labels.astype(np.int64)
