"""What a folder's or a CSV's images are, from their headers: grey or colour, and how big.

Pillow reads a file's mode and size from its header without decoding the pixels, so a
run can choose its input (grey stays grey, small images keep their size) before
anything is decoded. A large listing is probed through an even sample of its files.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from cnnkit.data.decode import CorruptImageError, read_header, refusal

# Pillow modes that hold one channel of intensity (with or without alpha).
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
SAMPLE = 1000  # at most this many headers are read (about 0.1 ms each)


@dataclass(frozen=True)
class ImageFacts:
    """The probed images: whether all are grey, their typical side and its spread."""

    channels: int  # 1 when every probed image is grey, else 3
    side: int  # the median of the images' shorter sides, in pixels
    smallest: int
    largest: int
    probed: int  # headers read
    total: int  # files listed

    @property
    def uniform(self) -> bool:
        return self.smallest == self.largest

    def size_text(self) -> str:
        if self.uniform:
            return f"{self.side}x{self.side}" if self.side else "unknown size"
        return f"{self.smallest}-{self.largest} px (median {self.side})"


def probe_images(paths: Sequence[str], sample: int = SAMPLE) -> ImageFacts | None:
    """Facts of ``paths`` from an even sample of their headers; None if none is readable
    (the decoder then reports the files)."""
    if not paths:
        return None
    step = max(1, len(paths) // sample)
    chosen = paths[::step][:sample]
    grey, sides = True, []
    for path in chosen:
        try:
            w, h, mode = read_header(path)
        except (OSError, CorruptImageError):  # the decoder reports these files
            continue
        if refusal(w, h) is not None:
            continue
        grey = grey and mode in GREY_MODES
        sides.append(min(w, h))
    if not sides:
        return None
    return ImageFacts(1 if grey else 3, int(statistics.median_low(sides)), min(sides),
                      max(sides), len(sides), len(paths))


@dataclass(frozen=True)
class Peek:
    """What a source shows before decoding: its class names and, for files, their facts."""

    classes: tuple[str, ...]
    facts: ImageFacts | None = None


_NUMBER_WORDS = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                 "nine", "ten"}
_SIDED = {"left", "right", "cw", "ccw", "clockwise", "anticlockwise", "counterclockwise"}


def default_augment(classes: Sequence[str], builtin_augment: str | None = None, *,
                    fine_tune: bool = False) -> str:
    """The augmentation ``--augment auto`` trains with: random crops and flips (as timm
    fine-tunes), or a built-in set's own, without the flip where :func:`mirror_reason`
    says a mirror changes the class."""
    augment = "flip+crop" if fine_tune or not builtin_augment else builtin_augment
    if mirror_reason(classes):
        augment = "+".join(t for t in augment.split("+") if t != "flip") or "none"
    return augment


def mirror_reason(classes: Sequence[str]) -> str | None:
    """Why a horizontal mirror would change what an image shows, judged by class names;
    None when mirroring keeps the class (cats, shoes, shapes).

    Characters (digits, letters, number words: a mirrored 2 or b is no longer one) and
    classes named for a side or a turn (left/right, clockwise) are not flipped.
    """
    names = [c.strip().lower() for c in classes]
    if names and all(len(n) == 1 and n.isalnum() for n in names):
        return "the classes are characters (" + ", ".join(names[:3]) + ", ...)"
    if names and all(n in _NUMBER_WORDS for n in names):
        return "the classes are numbers"
    sided = [c for c, n in zip(classes, names) if _SIDED & set(re.split(r"[^a-z]+", n))]
    if sided:
        return f"class {sided[0]!r} names a side or a turn"
    return None
