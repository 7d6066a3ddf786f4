"""Names from the page become folder and file names only when they cannot escape."""

from __future__ import annotations

import pytest

from cnnkit.base.errors import CnnkitError
from cnnkit.studio.names import class_name, file_stem


@pytest.mark.parametrize("bad", [
    "../up", "a/b", "a\\b", "/etc", ".hidden", "..", "name.", "con", "LPT1.txt", "",
    "   ", "a\u202eb", "zero\u200bwidth", "a\x00b", "tab\there", "x" * 65, "train",
    "Validation", "a\uff0fb", "\uff0e\uff0e", 3, None,
])
def test_class_names_that_would_escape_or_mislead_are_refused(bad: object) -> None:
    with pytest.raises(CnnkitError):
        class_name(bad)


@pytest.mark.parametrize(("given", "kept"), [
    ("muffin", "muffin"), ("  Chihuahua 2 ", "Chihuahua 2"), ("café", "café"),
    ("cafe\u0301", "café"),  # one spelling (NFC) for what looks the same
])
def test_plain_class_names_are_kept(given: str, kept: str) -> None:
    assert class_name(given) == kept


@pytest.mark.parametrize(("given", "stem"), [
    ("photo.jpg", "photo"), ("../../etc/passwd", "passwd"), ("C:\\x\\y.png", "y"),
    (".bashrc", "bashrc"), ("a b?.jpeg", "a_b"), ("", "image"), (None, "image"),
    ("con.png", "image"), ("\u202egnp.exe", "gnp"),
])
def test_upload_file_names_become_safe_stems(given: object, stem: str) -> None:
    assert file_stem(given) == stem
