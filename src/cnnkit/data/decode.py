"""The one place images are decoded: Pillow, read-only, every common format and mode.

Whatever arrives (JPEG, PNG, BMP, WebP, GIF, TIFF; grey, RGB, RGBA, palette, CMYK,
16-bit) leaves as a uint8 array of the requested channel count with its EXIF
orientation applied. Files are opened read-only and never written.

An image is refused from its header, before any pixel is allocated, when it has more
pixels than Pillow's limit (``PIL.Image.MAX_IMAGE_PIXELS``), when it is more elongated
than :data:`MAX_ASPECT_RATIO`, or when resizing its short side to the model's size would
make more than :data:`MAX_RESIZED_PIXELS` (a 1x100000 PNG of 277 bytes would otherwise
become 3.2 million x 32 pixels on its way to 32x32).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnkit.base import log

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}
# Longest side over shortest side: wider than any panorama or banner; the centre crop of
# anything longer shows the model a sliver of it.
MAX_ASPECT_RATIO = 64
# Pixels of an image once its short side is resized to the model's size, before the centre
# crop: a 4096 x 4096 square (48 MiB in RGB).
MAX_RESIZED_PIXELS = 4096 * 4096


class CorruptImageError(ValueError):
    """An image file that cannot be decoded; the message names the file and the cause."""


class UnsupportedFormatError(CorruptImageError):
    """Data that is not an image in one of the formats asked for (``formats=``)."""


class ImageTooLargeError(CorruptImageError):
    """An image refused from its header: too many pixels, too elongated, or too large once
    resized (the module's limits)."""


def is_image_file(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(IMAGE_SUFFIXES)


def refusal(width: int, height: int, size: int | None = None) -> str | None:
    """Why an image of ``width`` x ``height`` pixels is refused before decoding (resized to
    ``size`` on its short side, when given), or None when it is not."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and max(1, width) * max(1, height) > limit:
        return (f"refused, too many pixels ({width}x{height} = {width * height:,}; the "
                f"limit is {limit:,})")
    short, long = min(width, height), max(width, height)
    if long > MAX_ASPECT_RATIO * max(1, short):
        return (f"refused, too elongated ({width}x{height}: more than {MAX_ASPECT_RATIO}:1); "
                "crop it nearer to a square")
    if size is not None:
        new_long = round(long * size / max(1, short))
        if new_long * size > MAX_RESIZED_PIXELS:
            return (f"refused, too large once resized ({width}x{height} would become "
                    f"{new_long:,}x{size} at {size} px on its short side: more than "
                    f"{MAX_RESIZED_PIXELS:,} pixels)")
    return None


def read_header(path: str | os.PathLike | io.BytesIO) -> tuple[int, int, str]:
    """``(width, height, mode)`` from an image's header, without decoding its pixels or
    printing Pillow's decompression-bomb warning (:func:`refusal` judges the size).

    Raises :class:`CorruptImageError` for a file that is not an image, and its subclass
    :class:`ImageTooLargeError` for one Pillow itself refuses (twice its pixel limit).
    """
    name = "<bytes>" if isinstance(path, io.BytesIO) else log.quoted(path)
    try:
        with _quiet_bombs(), Image.open(path) as img:
            width, height, mode = img.size[0], img.size[1], img.mode
    except FileNotFoundError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{name}: refused, too many pixels ({exc})") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(f"{name}: cannot decode image ({exc})") from None
    return width, height, mode


@contextlib.contextmanager
def _quiet_bombs() -> Iterator[None]:
    """Pillow warns (to stderr) of an image between its pixel limit and twice it, and raises
    over twice; cnnkit refuses both itself (:func:`refusal`), so the warning is dropped."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
        yield


def open_image(
    source: str | os.PathLike | bytes | Image.Image, draft_size: int | None = None,
    formats: tuple[str, ...] | None = None, size: int | None = None,
) -> Image.Image:
    """Open and fully load an image (first frame of an animation), orientation applied.

    With ``draft_size``, a large JPEG is decoded at a reduced scale (1/2 to 1/8) that
    still covers ``draft_size`` pixels: several times faster than a full decode.
    ``formats`` (Pillow's names: "JPEG", "PNG", ...) limits the decoders Pillow tries, so
    untrusted bytes in any other format are refused before a decoder runs on them.
    The header is checked before the pixels are allocated (:func:`refusal`, with ``size``
    the side the caller will resize the short side to): an image over a limit raises
    :class:`ImageTooLargeError`.
    """
    if isinstance(source, Image.Image):
        img = source
    else:
        name = "<bytes>" if isinstance(source, bytes) else log.quoted(source)
        try:
            with _quiet_bombs():
                img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source,
                                 formats=list(formats) if formats else None)
                img.seek(0)
                reason = refusal(img.size[0], img.size[1], size)
                if reason is not None:
                    raise ImageTooLargeError(f"{name}: {reason}")
                if draft_size and img.format == "JPEG" and min(img.size) >= 2 * draft_size:
                    scale = min(img.size) / (1.5 * draft_size)
                    img.draft("RGB" if img.mode not in ("L", "RGB") else img.mode,
                              (int(img.size[0] / scale), int(img.size[1] / scale)))
                img.load()
        except (FileNotFoundError, ImageTooLargeError):
            raise
        except UnidentifiedImageError as exc:
            why = f"not one of {', '.join(formats)}" if formats else str(exc)
            raise UnsupportedFormatError(f"{name}: cannot decode image ({why})") from None
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"{name}: refused, too many pixels ({exc})") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise CorruptImageError(f"{name}: cannot decode image ({exc})") from None
    try:
        if img is source:  # the caller's image: a turned copy, never changed in place
            return ImageOps.exif_transpose(img)
        ImageOps.exif_transpose(img, in_place=True)  # ours: no copy when upright
    except Exception:  # a broken EXIF block must not lose an otherwise good image
        pass
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
    mode = "L" if channels == 1 else "RGB"
    return img if img.mode == mode else img.convert(mode)


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
    img = open_image(source, draft_size=size, formats=formats, size=size)
    img = to_mode(img, channels)
    if size is not None:
        img = resize_square(img, size, interpolation)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr
