"""A project folder edited as the page edits it: only inside it, never over a file."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.base.errors import CnnkitError
from cnnkit.studio.project import BadImage, Conflict, NotFound, Project


def jpeg(colour: tuple[int, int, int] = (200, 40, 40), size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size, 3), colour, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_classes_images_trash_and_undo(tmp_path: Path) -> None:
    project = Project.open(tmp_path / "p")
    project.add_class("muffin")
    project.add_class("dog")
    with pytest.raises(Conflict):
        project.add_class("Muffin")  # the same folder on macOS and Windows
    names = [project.add_image("muffin", jpeg(), "../../x.jpg") for _ in range(3)]
    assert names == ["x.jpg", "x-1.jpg", "x-2.jpg"]  # never over a file
    assert sorted(os.listdir(tmp_path / "p" / "muffin")) == sorted(names)
    assert [(c.name, c.images) for c in project.classes()] == [("dog", 0), ("muffin", 3)]
    entry = project.delete_image("muffin", "x-1.jpg")
    assert not (tmp_path / "p" / "muffin" / "x-1.jpg").exists()
    project.undo(entry)
    assert (tmp_path / "p" / "muffin" / "x-1.jpg").read_bytes() == jpeg()
    project.rename_class("muffin", "blueberry muffin")
    entry = project.delete_class("blueberry muffin")
    assert [c.name for c in project.classes()] == ["dog"]
    project.undo(entry)
    assert [(c.name, c.images) for c in project.classes()] == [("blueberry muffin", 3),
                                                               ("dog", 0)]
    assert project.move_image("blueberry muffin", "x.jpg", "dog") == "x.jpg"
    assert [c.images for c in project.classes()] == [2, 1]


def test_nothing_outside_the_project_is_read_or_written(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(jpeg())
    project = Project.open(tmp_path / "p")
    project.add_class("a")
    os.symlink(outside, tmp_path / "p" / "linked")
    os.symlink(outside / "secret.jpg", tmp_path / "p" / "a" / "leak.jpg")
    for image in ("../../outside/secret.jpg", "leak.jpg", "/etc/passwd", ".cnnkit/x"):
        with pytest.raises(NotFound):
            project.image_path("a", image)
    for name in ("..", ".cnnkit", "../outside", "a/../.."):
        with pytest.raises(NotFound):
            project.images(name)
    with pytest.raises(Conflict):
        project.add_image("linked", jpeg())  # no writing through a link
    with pytest.raises(CnnkitError):
        project.add_class("../evil")
    assert os.listdir(outside) == ["secret.jpg"]


def test_uploads_must_be_whole_images_within_the_limits(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    project = Project.open(tmp_path / "p")
    project.add_class("a")
    with pytest.raises(BadImage):
        project.add_image("a", b"GIF89a not really", "x.gif")
    with pytest.raises(BadImage) as bad:
        project.add_image("a", b"#!/bin/sh\nrm -rf /\n", "run.sh")
    assert bad.value.status == 415
    with pytest.raises(BadImage):
        project.add_image("a", jpeg()[:200], "cut.jpg")  # truncated
    monkeypatch.setattr("cnnkit.studio.project.MAX_IMAGE_BYTES", 100)
    with pytest.raises(BadImage) as bad:
        project.add_image("a", jpeg(), "big.jpg")
    assert bad.value.status == 413
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    monkeypatch.setattr("cnnkit.studio.project.MAX_IMAGE_BYTES", 10**6)
    assert project.add_image("a", png.getvalue(), "really-a-png.jpg") == "really-a-png.png"
    assert os.listdir(tmp_path / "p" / "a") == ["really-a-png.png"]  # no temporary files


def test_a_second_studio_on_the_same_project_stops_with_one_line(tmp_path: Path) -> None:
    first = Project.open(tmp_path / "p")
    first.hold()
    try:
        with pytest.raises(CnnkitError, match="in use by another cnnkit process"):
            Project.open(tmp_path / "p").hold()
    finally:
        first.release()
    Project.open(tmp_path / "p").hold()


def test_a_project_folder_that_cannot_be_written_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only folder (a mount, a CD, another user's) ended in OSError's traceback
    from Path.mkdir before the server started; an existing project on one did too."""
    import errno

    Project.open(tmp_path / "made")
    real_mkdir, real_touch = Path.mkdir, Path.touch

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.is_relative_to(tmp_path) and not self.exists():
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_mkdir(self, *args, **kwargs)

    def touch(self: Path, *args: object, **kwargs: object) -> None:
        if self.is_relative_to(tmp_path):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_touch(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    monkeypatch.setattr(Path, "touch", touch)
    for folder in (tmp_path / "new", tmp_path / "made"):
        with pytest.raises(CnnkitError, match=r"cannot be written \(Read-only file system\)"):
            Project.open(folder)


def test_moving_an_image_to_its_own_class_leaves_it_as_it_is(tmp_path: Path) -> None:
    """It was linked under a new name and the old one removed: x.jpg became x-1.jpg, and
    the analysis and the page lost the image they named."""
    project = Project.open(tmp_path / "p")
    project.add_class("a")
    project.add_image("a", jpeg(), "x.jpg")
    assert project.move_image("a", "x.jpg", "a") == "x.jpg"
    assert os.listdir(tmp_path / "p" / "a") == ["x.jpg"]
