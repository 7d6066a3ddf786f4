"""Contact sheets: a grid of thumbnails, each with a caption of a few short lines."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from cnnkit.base.atomic import atomic_path

THUMB = 96  # thumbnail side, pixels
COLUMNS = 8
LINE = 12  # caption line height, pixels


def thumbnail(image: torch.Tensor, side: int = THUMB) -> np.ndarray:
    """A uint8 ``(C, H, W)`` image as an RGB ``(side, side, 3)`` array, aspect kept."""
    from PIL import Image

    arr = image.numpy().transpose(1, 2, 0)
    pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).convert("RGB")
    pil.thumbnail((side, side), Image.Resampling.NEAREST if max(pil.size) < side // 2
                  else Image.Resampling.BICUBIC)
    if max(pil.size) < side:  # small images grow to the cell, pixels kept sharp
        scale = side / max(pil.size)
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))),
                         Image.Resampling.NEAREST)
    cell = Image.new("RGB", (side, side), (255, 255, 255))
    cell.paste(pil, ((side - pil.width) // 2, (side - pil.height) // 2))
    return np.asarray(cell)


def contact_sheet(images: Sequence[torch.Tensor], captions: Sequence[Sequence[str]],
                  path: str | os.PathLike, *, columns: int = COLUMNS,
                  title: str = "") -> Path:
    """Write a PNG grid of ``images`` with their ``captions`` (lines under each)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    lines = max((len(c) for c in captions), default=0)
    cell_w, cell_h = THUMB + 8, THUMB + 6 + LINE * lines + 6
    cols = max(1, min(columns, len(images)))
    rows = max(1, -(-len(images) // cols))
    top = LINE + 8 if title else 0
    width = max(cols * cell_w, int(font.getlength(title)) + 8 if title else 0)
    sheet = Image.new("RGB", (width, top + rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((4, 4), title, fill=(0, 0, 0), font=font)
    chars = max(4, cell_w // 6)
    for k, (img, caption) in enumerate(zip(images, captions)):
        x, y = (k % cols) * cell_w + 4, top + (k // cols) * cell_h + 4
        sheet.paste(Image.fromarray(thumbnail(img)), (x, y))
        for j, text in enumerate(caption):
            text = text if len(text) <= chars else "..." + text[-(chars - 3):]
            draw.text((x, y + THUMB + 2 + j * LINE), text, fill=(0, 0, 0), font=font)
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path
