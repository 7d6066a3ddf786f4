"""The one decode function: every format and colour mode arrives as uint8, asked channels."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from cnnkit.data.decode import (
    MAX_ASPECT_RATIO,
    CorruptImageError,
    ImageTooLargeError,
    UnsupportedFormatError,
    decode,
    is_image_file,
    read_header,
    refusal,
    resize_square,
)
from cnnkit.data.probe import probe_images

RED = (220, 30, 30)


def _rgb(size=(24, 16), colour=RED) -> Image.Image:
    return Image.new("RGB", size, colour)


@pytest.mark.parametrize("fmt, suffix", [
    ("JPEG", "jpg"), ("PNG", "png"), ("BMP", "bmp"), ("WEBP", "webp"), ("GIF", "gif"),
    ("TIFF", "tif"), ("TIFF", "tiff"), ("JPEG", "jpeg"),
])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_format_decodes_to_the_asked_channels(tmp_path: Path, fmt: str, suffix: str,
                                                    channels: int) -> None:
    path = tmp_path / f"img.{suffix.upper() if suffix == 'jpeg' else suffix}"
    _rgb().save(path, fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    assert is_image_file(path)
    arr = decode(path, channels)
    assert arr.dtype == np.uint8
    assert arr.shape == (16, 24, channels)
    if channels == 3:
        # lossy formats and the GIF palette move colours a little, never far
        assert np.abs(arr.reshape(-1, 3).mean(0) - np.array(RED)).max() < 12
    else:
        grey = 0.299 * RED[0] + 0.587 * RED[1] + 0.114 * RED[2]
        assert abs(float(arr.mean()) - grey) < 12


def test_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [_rgb(colour=(255, 0, 0)), _rgb(colour=(0, 0, 255)), _rgb(colour=(0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50,
                   loop=0)
    assert Image.open(tmp_path / "anim.gif").n_frames == 3
    arr = decode(tmp_path / "anim.gif", 3)
    assert arr[..., 0].min() > 200 and arr[..., 2].max() < 50


def _modes() -> dict[str, Image.Image]:
    grey = Image.new("L", (8, 8), 100)
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    rgba.paste((0, 0, 255, 0), (0, 0, 4, 8))  # left half fully transparent
    pal = Image.new("RGB", (8, 8), (0, 200, 0)).convert("P", palette=Image.Palette.ADAPTIVE)
    return {
        "1": Image.new("1", (8, 8), 1),
        "L": grey,
        "LA": Image.new("LA", (8, 8), (100, 255)),
        "RGB": Image.new("RGB", (8, 8), (10, 200, 30)),
        "RGBA": rgba,
        "P": pal,
        "CMYK": Image.new("CMYK", (8, 8), (0, 0, 0, 0)),
        "I;16": Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)),
        "I": Image.new("I", (8, 8), 200),
        "F": Image.new("F", (8, 8), 200.0),
    }


@pytest.mark.parametrize("mode", list(_modes()))
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_arrives_with_the_asked_channels(mode: str, channels: int) -> None:
    img = _modes()[mode]
    assert img.mode == mode
    arr = decode(img, channels)
    assert arr.dtype == np.uint8 and arr.shape == (8, 8, channels)


def test_mode_values_are_kept() -> None:
    modes = _modes()
    assert decode(modes["1"], 1).min() == 255
    assert decode(modes["L"], 3)[0, 0].tolist() == [100, 100, 100]
    assert decode(modes["RGB"], 3)[0, 0].tolist() == [10, 200, 30]
    assert decode(modes["P"], 3)[0, 0].tolist() == [0, 200, 0]
    assert decode(modes["CMYK"], 3).min() == 255  # no ink is white


def test_transparent_pixels_are_shown_on_white() -> None:
    arr = decode(_modes()["RGBA"], 3)
    assert arr[:, :4].reshape(-1, 3).tolist() == [[255, 255, 255]] * 32  # transparent: white
    assert arr[:, 4:].reshape(-1, 3).tolist() == [[255, 0, 0]] * 32  # opaque red stays red
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.info["transparency"] = 0
    assert decode(pal, 3).reshape(-1, 3).tolist() == [[255, 255, 255]] * 16


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16_bit_images_are_scaled_not_clipped(tmp_path: Path, suffix: str) -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)  # 0, 1, 128, 255 in 8 bits
    Image.fromarray(values).save(tmp_path / f"deep.{suffix}")
    assert Image.open(tmp_path / f"deep.{suffix}").mode.startswith("I;16")
    assert decode(tmp_path / f"deep.{suffix}", 1)[0, :, 0].tolist() == [0, 1, 128, 255]


def test_a_dark_16_bit_image_stays_dark(tmp_path: Path) -> None:
    # Every value below 256 out of 65535: nearly black, not a bright 8-bit image.
    Image.fromarray(np.full((4, 4), 200, dtype=np.uint16)).save(tmp_path / "dark.png")
    assert decode(tmp_path / "dark.png", 1).max() <= 1


def _png16(path: Path, arr: np.ndarray) -> None:
    """A 16-bit-per-channel PNG written by hand (Pillow cannot write 48-bit RGB)."""
    h, w, c = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", w, h, 16, {2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16_bit_colour_and_grey_alpha_pngs_are_scaled(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32896, 200
    _png16(tmp_path / "rgb48.png", rgb)
    assert decode(tmp_path / "rgb48.png", 3)[0, 0].tolist() == [255, 128, 0]
    la = np.zeros((4, 4, 2), np.uint16)
    la[..., 0], la[..., 1] = 32896, 65535
    _png16(tmp_path / "la32.png", la)
    assert decode(tmp_path / "la32.png", 1)[0, 0].tolist() == [128]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("L", (40, 20), 255)
    img.paste(0, (0, 0, 20, 20))  # left half black, right half white
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: rotate 90 degrees clockwise to show
    img.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    arr = decode(tmp_path / "turned.jpg", 1)[:, :, 0]
    assert arr.shape == (40, 20)  # portrait once turned
    assert arr[:18].mean() < 30 and arr[22:].mean() > 225  # the left half is now on top


def test_a_callers_image_is_decoded_turned_and_left_as_it_was(tmp_path: Path) -> None:
    img = Image.new("RGB", (40, 20), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "turned.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "turned.jpg") as given:
        given.load()
        before = np.asarray(given).copy()
        arr = decode(given, 3)
        assert arr.shape == (40, 20, 3) and arr[:18].mean() < 30  # turned, as from the file
        assert given.size == (40, 20) and given.getexif().get(0x0112) == 6  # not in place
        assert np.array_equal(np.asarray(given), before)
    assert np.array_equal(arr, decode(tmp_path / "turned.jpg", 3))


def test_resize_square_keeps_the_centre() -> None:
    img = Image.new("L", (60, 20), 0)
    img.paste(255, (20, 0, 40, 20))  # a white centre square
    out = np.asarray(resize_square(img, 10))
    assert out.shape == (10, 10) and out.min() > 200


def test_decode_to_a_size_is_square(tmp_path: Path) -> None:
    _rgb((50, 30)).save(tmp_path / "wide.png")
    assert decode(tmp_path / "wide.png", 3, size=12).shape == (12, 12, 3)


def test_bytes_decode_like_files(tmp_path: Path) -> None:
    buf = io.BytesIO()
    _rgb().save(buf, "PNG")
    _rgb().save(tmp_path / "x.png")
    assert np.array_equal(decode(buf.getvalue(), 3), decode(tmp_path / "x.png", 3))


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_corrupt_files_raise_an_error_naming_them(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(CorruptImageError, match=r"broken\.png"):
        decode(path, 3)
    assert path.read_bytes() == content


def test_a_truncated_jpeg_is_corrupt(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
                    ).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(CorruptImageError, match=r"cut\.jpg"):
        decode(path, 3)


def test_formats_refuse_other_formats_before_decoding() -> None:
    gif, png = io.BytesIO(), io.BytesIO()
    _rgb().save(gif, "GIF")
    _rgb().save(png, "PNG")
    with pytest.raises(UnsupportedFormatError, match=r"not one of PNG, JPEG"):
        decode(gif.getvalue(), 3, formats=("PNG", "JPEG"))
    assert decode(png.getvalue(), 3, formats=("PNG",)).shape[2] == 3
    assert decode(gif.getvalue(), 3).shape[2] == 3  # without formats=, every format


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", 30000, 30000)  # IHDR width, height: 900 Mpx
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    with pytest.raises(ImageTooLargeError, match="too many pixels"):
        decode(bytes(data), 3)


def _png(size: tuple[int, int], mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def no_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading any pixels fails the test: a refusal must come from the header alone."""
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"pixels of a {self.size} image were loaded")
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_a_bomb_by_aspect_ratio_is_refused_from_its_header(no_pixels) -> None:
    data = _png((1, 100_000))  # under 300 bytes; 3.2 million x 32 pixels once resized to 32
    assert len(data) < 400
    with pytest.raises(ImageTooLargeError, match=r"too elongated \(1x100000: more than 64:1\)"):
        decode(data, 3, 32)
    with pytest.raises(ImageTooLargeError, match="too elongated"):
        decode(_png((100_000, 1)), 1)  # without a size too, and lying down


def test_the_aspect_limit_is_inclusive() -> None:
    assert decode(_png((4, 4 * MAX_ASPECT_RATIO)), 1, 8).shape == (8, 8, 1)
    with pytest.raises(ImageTooLargeError, match="too elongated"):
        decode(_png((4, 4 * MAX_ASPECT_RATIO + 1)), 1, 8)


def test_an_image_too_large_once_resized_is_refused_from_its_header(no_pixels) -> None:
    data = _png((100, 6000))  # 60:1: fine at 32 px, 122,880 x 2,048 pixels at 2,048 px
    with pytest.raises(ImageTooLargeError, match=r"too large once resized \(100x6000 would "
                                                 r"become 122,880x2048"):
        decode(data, 3, 2048)


def test_an_elongated_image_within_the_limits_decodes() -> None:
    assert decode(_png((100, 6000)), 3, 32).shape == (32, 32, 3)
    assert refusal(100, 6000, 32) is None and refusal(100, 6000, 2048) is not None


def _claims(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (4, 4)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def test_pillows_bomb_warning_becomes_cnnkits_refusal(tmp_path: Path, capfd) -> None:
    data = _claims(10_000, 9_000)  # 90 Mpx: over Pillow's limit, under twice it (a warning)
    (tmp_path / "big.png").write_bytes(data)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ImageTooLargeError, match=r"too many pixels \(10000x9000"):
            decode(data, 3, 32)
        assert read_header(tmp_path / "big.png") == (10_000, 9_000, "L")
        assert probe_images([str(tmp_path / "big.png")]) is None
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]
    assert "DecompressionBomb" not in capfd.readouterr().err
