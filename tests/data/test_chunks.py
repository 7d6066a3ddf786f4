"""Decoding ahead in chunks: input order kept, failures reported per file, workers used."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnkit.data.chunks import decode_ahead
from cnnkit.data.decode import decode


def test_chunks_come_back_in_order_with_errors_per_file(shapes_tree: Path) -> None:
    files = sorted(str(p) for p in shapes_tree.rglob("*.png"))[:11]
    (shapes_tree / "broken.png").write_bytes(b"not a png")
    files.insert(4, str(shapes_tree / "broken.png"))
    files.insert(7, str(shapes_tree / "gone.png"))
    for workers in (1, 2):
        chunks = list(decode_ahead(files, 3, 16, "bilinear", chunk=3, workers=workers))
        assert [len(c.paths) for c in chunks] == [3, 3, 3, 3, 1]
        assert [p for c in chunks for p in c.paths] == files
        errors = {p: e for c in chunks for p, e in zip(c.paths, c.errors) if e}
        assert set(errors) == {files[4], files[7]}
        assert "cannot decode" in errors[files[4]] and errors[files[7]] == "file not found"
        first = chunks[0]
        np.testing.assert_array_equal(first.images[1],
                                      decode(files[1], 3, 16).transpose(2, 0, 1))
