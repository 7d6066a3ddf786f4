"""The one place images are decoded: Pillow, read-only, every common format and mode.

Whatever arrives (JPEG, PNG, BMP, WebP, GIF, TIFF; grey, RGB, RGBA, palette, CMYK,
16-bit) leaves as a uint8 array of the requested channel count with its EXIF
orientation applied. Files are opened read-only and never written.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnkit import log

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


class CorruptImageError(ValueError):
    """An image file that cannot be decoded; the message names the file and the cause."""


class UnsupportedFormatError(CorruptImageError):
    """Data that is not an image in one of the formats asked for (``formats=``)."""


class ImageTooLargeError(CorruptImageError):
    """An image with more pixels than Pillow's decompression-bomb limit allows."""


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def open_image(
    source: str | os.PathLike | bytes | Image.Image, draft_size: int | None = None,
    formats: tuple[str, ...] | None = None,
) -> Image.Image:
    """Open and fully load an image (first frame of an animation), orientation applied.

    With ``draft_size``, a large JPEG is decoded at a reduced scale (1/2 to 1/8) that
    still covers ``draft_size`` pixels: several times faster than a full decode.
    ``formats`` (Pillow's names: "JPEG", "PNG", ...) limits the decoders Pillow tries, so
    untrusted bytes in any other format are refused before a decoder runs on them.
    Pillow's decompression-bomb limit stays on: an image over it is refused from its
    header, before its pixels are allocated.
    """
    if isinstance(source, Image.Image):
        img = source
    else:
        name = "<bytes>" if isinstance(source, bytes) else log.quoted(source)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source,
                                 formats=list(formats) if formats else None)
                img.seek(0)
                if draft_size and img.format == "JPEG" and min(img.size) >= 2 * draft_size:
                    scale = min(img.size) / (1.5 * draft_size)
                    img.draft("RGB" if img.mode not in ("L", "RGB") else img.mode,
                              (int(img.size[0] / scale), int(img.size[1] / scale)))
                img.load()
        except FileNotFoundError:
            raise
        except UnidentifiedImageError as exc:
            why = f"not one of {', '.join(formats)}" if formats else str(exc)
            raise UnsupportedFormatError(f"{name}: cannot decode image ({why})") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageTooLargeError(f"{name}: refused, too many pixels ({exc})") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise CorruptImageError(f"{name}: cannot decode image ({exc})") from None
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not lose an otherwise good image
        return img


def to_mode(img: Image.Image, channels: int) -> Image.Image:
    """Convert any Pillow mode to 'L' (channels=1) or 'RGB' (channels=3)."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr / _full_scale(img.mode, arr) * 255.0 + 0.5, 0, 255)
                              .astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        # Transparent pixels are shown on white, as a viewer or browser shows them.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("L" if channels == 1 else "RGB")


def _full_scale(mode: str, arr: np.ndarray) -> float:
    """The value that means white: 65535 for 16-bit data, whatever its brightest pixel.

    A 16-bit image is scaled by its bit depth, not by its content: a dark one (every
    value below 256) stays dark. 32-bit integer and float images carry no depth, so
    their range is guessed from the values (1.0, 255, 65535 or their maximum).
    """
    if mode.startswith("I;16"):
        return 65535.0
    top = float(arr.max(initial=0))
    for limit in ((1.0,) if mode == "F" else ()) + (255.0, 65535.0):
        if top <= limit:
            return limit
    return top


def resize_square(img: Image.Image, size: int, interpolation: str = "bilinear") -> Image.Image:
    """Resize the shorter side to ``size`` and centre-crop to ``size`` x ``size``."""
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), RESAMPLE[interpolation], reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    if (new_w, new_h) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    return img


def decode(
    source: str | os.PathLike | bytes | Image.Image,
    channels: int = 3,
    size: int | None = None,
    interpolation: str = "bilinear",
    formats: tuple[str, ...] | None = None,
) -> np.ndarray:
    """Decode to a uint8 ``(H, W, C)`` array; with ``size``, resized and centre-cropped square.

    ``formats`` limits the accepted image formats (see :func:`open_image`).
    """
    img = open_image(source, draft_size=size, formats=formats)
    img = to_mode(img, channels)
    if size is not None:
        img = resize_square(img, size, interpolation)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr
