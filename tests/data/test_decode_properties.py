"""Property: whatever bytes arrive, the decoder and the check's file reader either give an
image or cnnkit's own error; never another exception, never a hang."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cnnkit.data.decode import CorruptImageError, decode
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
        assert str(exc).startswith(("<bytes>: cannot decode image", "<bytes>: refused, too many"))
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
