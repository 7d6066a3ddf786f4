"""Properties: whatever bytes arrive, the decoder and the check's file reader either give an
image or cnnkit's own error, never another exception, never a hang; and whatever the width,
height, mode and format, an image is refused exactly when a limit says so, from its header."""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from cnnkit.data.decode import (
    MAX_ASPECT_RATIO,
    MAX_RESIZED_PIXELS,
    CorruptImageError,
    ImageTooLargeError,
    decode,
    refusal,
)
from cnnkit.data.file_index import _inspect

HEADERS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"RIFF\0\0\0\0WEBP",
           b"II*\0", b"MM\0*"]


def _real(fmt: str) -> bytes:
    buf = io.BytesIO()
    arr = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


REAL = [_real(f) for f in ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")]
SETTINGS = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _check(data: bytes) -> None:
    try:
        out = decode(data, 3, 16)
    except CorruptImageError as exc:
        # unreadable, or refused by a limit its header breaks (too many pixels, too
        # elongated: a flipped byte in a header can make either)
        assert str(exc).startswith(("<bytes>: cannot decode image", "<bytes>: refused, too many",
                                    "<bytes>: refused, too elongated"))
        assert "\n" not in str(exc)
    else:
        assert out.shape == (16, 16, 3) and out.dtype == np.uint8


@SETTINGS
@given(st.sampled_from(HEADERS), st.binary(max_size=3000))
def test_random_bytes_after_a_format_header(header: bytes, body: bytes) -> None:
    _check(header + body)


@SETTINGS
@given(st.sampled_from(REAL), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                        max_size=8), st.integers(0, 10**6))
def test_real_images_with_flipped_bytes_and_cut_short(image: bytes, flips, cut: int) -> None:
    data = bytearray(image)
    for where, value in flips:
        data[where % len(data)] = value
    _check(bytes(data[:max(1, cut % (len(data) + 1))]))


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(HEADERS), st.binary(max_size=2000))
def test_the_checks_file_reader_reports_instead_of_raising(header: bytes, body: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.png"
        path.write_bytes(header + body)
        facts = _inspect(str(path), path.stat().st_size, 0, decode=True, near=True)
    assert (facts.error is None) == (facts.dhash is not None)


MODES = {"PNG": ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"), "JPEG": ("L", "RGB", "CMYK"),
         "GIF": ("L", "P"), "BMP": ("1", "L", "P", "RGB"), "WEBP": ("RGB", "RGBA"),
         "TIFF": ("1", "L", "RGB", "RGBA", "CMYK", "I;16")}


@st.composite
def _shapes(draw: st.DrawFn) -> tuple[str, str, int, int, int | None, int | None]:
    """Format, mode, width, height (square to 200:1 either way), the size to resize to, and
    a lower pixel limit (with the small sizes only: Pillow checks its crops against it)."""
    fmt = draw(st.sampled_from(sorted(MODES)))
    mode = draw(st.sampled_from(MODES[fmt]))
    short = draw(st.integers(1, 48))
    long = draw(st.integers(short, short * (200 if short < 16 else 80)))
    width, height = (long, short) if draw(st.booleans()) else (short, long)
    size = draw(st.sampled_from([None, 8, 32, 224, 2048]))
    limit = draw(st.sampled_from([None, 20_000, 200_000])) if (size or 0) <= 32 else None
    return fmt, mode, width, height, size, limit


@contextlib.contextmanager
def _pixel_limit(limit: int | None) -> Iterator[None]:
    """A lower decompression-bomb limit, so that the images stay small."""
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit or before
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


@contextlib.contextmanager
def _loads() -> Iterator[list[tuple[int, int]]]:
    """The sizes of the images whose pixels were loaded meanwhile."""
    loaded: list[tuple[int, int]] = []
    load = ImageFile.ImageFile.load

    def counted(self, *args, **kwargs):
        loaded.append(self.size)
        return load(self, *args, **kwargs)

    ImageFile.ImageFile.load = counted
    try:
        yield loaded
    finally:
        ImageFile.ImageFile.load = load


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_shapes(), st.sampled_from([1, 3]))
def test_the_decoders_limits_hold_over_width_height_mode_and_format(
        shape: tuple[str, str, int, int, int | None, int | None], channels: int) -> None:
    fmt, mode, width, height, size, limit = shape
    buf = io.BytesIO()
    Image.new(mode, (width, height)).save(buf, format=fmt)
    with _pixel_limit(limit), _loads() as loaded:
        why = refusal(width, height, size)
        try:
            out = decode(buf.getvalue(), channels, size)
        except ImageTooLargeError as exc:
            assert why is not None, exc
            # Over twice the limit Pillow refuses first, in its own words.
            assert str(exc) == f"<bytes>: {why}" or (
                "too many pixels" in why and "too many pixels" in str(exc))
            assert not loaded  # refused from the header: no pixel was allocated
        else:
            assert why is None
            assert out.shape == (*((size, size) if size else (height, width)), channels)
            assert out.dtype == np.uint8
    long, short = max(width, height), min(width, height)
    if long > MAX_ASPECT_RATIO * short or (limit and width * height > limit):
        assert why is not None  # the limits themselves, restated
    elif size and round(long * size / short) * size > MAX_RESIZED_PIXELS:
        assert why is not None and "once resized" in why
    else:
        assert why is None
