"""What every kind of data source is: a DATA argument, described before anything is
decoded, that can load its train/val/test images and a set to evaluate on.

A kind is one class in one module (``source_builtin``, ``source_csv``,
``source_folder``) registered in :data:`cnnkit.data.sources.KINDS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch

from cnnkit.base import log
from cnnkit.base.errors import CnnkitError
from cnnkit.data.builtin import BuiltinSet
from cnnkit.data.cache import decode_files
from cnnkit.data.folders import Listing
from cnnkit.data.imageset import ImageSet, stratified_split
from cnnkit.data.labelsets import multi_hot
from cnnkit.data.pipeline import Preprocess
from cnnkit.data.probe import Peek, probe_images

if TYPE_CHECKING:
    from cnnkit.data.audit_result import Audit
    from cnnkit.data.scan import Scan

Parts = tuple[ImageSet, ImageSet | None, ImageSet | None]  # train, val, test


@dataclass(frozen=True)
class DataSource:
    """A DATA argument and what kind of data it names."""

    kind: ClassVar[str]  # what `cnnkit data info` calls it
    # whether the data comes divided into train/val/test: the kind's, or a property where
    # the data decides (a CSV's split column)
    presplit: ClassVar[bool]

    name: str  # short name for run folders
    spec: str  # the DATA argument as given
    root: Path | None = None
    builtin: BuiltinSet | None = None
    options: tuple[tuple[str, int], ...] = ()  # a built-in set's options

    @classmethod
    def recognise(cls, data: str) -> DataSource | None:
        """This kind's source for ``data``, None when ``data`` names another kind, or
        a CnnkitError when it is this kind but unusable."""
        raise NotImplementedError

    def load(self, pre: Preprocess, *, val_fraction: float | None,
             test_fraction: float | None, seed: int) -> Parts:
        """Decode and split: the training images, and validation and test images if any.
        A fraction of None holds nothing out and was not asked for (see :func:`own_split`)."""
        raise NotImplementedError

    def eval_set(self, pre: Preprocess, classes: tuple[str, ...]) -> ImageSet:
        """Images to evaluate a trained model on, labelled with its class indices."""
        raise NotImplementedError

    def audit(self, *, img_size: int, decode: bool = True, progress: bool = True) -> Audit:
        """What ``cnnkit check`` finds in this source (:mod:`cnnkit.data.audit`);
        ``decode=False`` reads hashes and headers only."""
        raise NotImplementedError

    def listings(self, report: Scan | None = None) -> dict[str, Listing]:
        """The listed files with their labels by split (``all`` for data that comes
        whole); ``report`` collects what a folder scan passed over. Only sources of files
        have them."""
        raise NotImplementedError

    def same_data(self, other: DataSource) -> bool:
        """Whether ``other`` names the same images (the same folder or file)."""
        return (self.root is not None and other.root is not None
                and self.root.resolve() == other.root.resolve())

    def run_spec(self) -> str:
        """DATA as a run's config.json records it, so that --resume and evaluate find the
        data from any working directory."""
        return os.path.abspath(self.root) if self.root is not None else self.spec

    def peek(self) -> Peek:
        """The class names and, where files are listed, what their headers say (nothing
        known by default: such a source trains RGB at the default size)."""
        return Peek(())

    @property
    def task(self) -> str:
        """The name of the task its labels pose (:mod:`cnnkit.tasks.registry`): one class
        per image unless a kind of source says otherwise."""
        return "single-label"

    @property
    def native_size(self) -> int | None:
        """The images' own side in pixels, when the source fixes one."""
        return None


def peek_listing(listing: Listing) -> Peek:
    return Peek(listing.classes, probe_images(listing.paths))


def decode_listing(listing: Listing, pre: Preprocess, progress: bool = True) -> ImageSet:
    """Decode listed files at ``pre``'s decode size (cached); unreadable files are skipped."""
    images, ok, _errors = decode_files(listing.paths, pre.decode_channels, pre.decode_size,
                                       pre.interpolation, progress=progress)
    if listing.multilabel:
        labels = multi_hot([listing.labels[i] for i in ok], len(listing.classes))
    else:
        labels = torch.tensor([listing.labels[i] for i in ok], dtype=torch.long)
    paths = tuple(listing.paths[i] for i in ok)
    if len(ok) == 0:
        raise CnnkitError("None of the images could be decoded; see the warnings above.")
    return ImageSet(images, labels, listing.classes, paths,
                    crop_fraction=pre.img_size / pre.decode_size)


def own_split(flag: str, fraction: float | None, spec: str, name: str, part: ImageSet
              ) -> ImageSet:
    """``part``, DATA's own ``name`` split, with a warning when ``flag`` (--val-fraction or
    --test-fraction) was set to another share than the default: it draws nothing here.
    None: no share was asked for (a command that reads every image), nothing to say."""
    from cnnkit.base.config import TrainConfig

    default = TrainConfig.__dataclass_fields__[flag[2:].replace("-", "_")].default
    if fraction is not None and fraction != default:
        log.warn(f"{flag} {fraction:g} is not used: {spec} brings its own {name} split "
                 f"({len(part):,} images)")
    return part


def split_off(part: ImageSet, fraction: float | None, seed: int
              ) -> tuple[ImageSet, ImageSet | None]:
    """A stratified ``fraction`` of ``part`` held out (none when the fraction is 0 or None)."""
    if not fraction or fraction <= 0:
        return part, None
    keep, held = stratified_split(part.labels, [fraction], seed)
    return part.subset(keep), part.subset(held)
