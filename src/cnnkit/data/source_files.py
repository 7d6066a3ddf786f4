"""What the sources of image files (folders and CSVs) share: their audit reads the
files they list (:meth:`~cnnkit.data.source.DataSource.listings`), and a peek reads the
first listing's headers."""

from __future__ import annotations

from cnnkit.data.audit import audit_files
from cnnkit.data.audit_result import Audit
from cnnkit.data.probe import Peek
from cnnkit.data.source import DataSource, peek_listing


class FileSource(DataSource):
    """A source whose images are files it lists."""

    def audit(self, *, img_size: int, decode: bool = True, progress: bool = True) -> Audit:
        return audit_files(self, img_size=img_size, decode=decode, progress=progress)

    def peek(self) -> Peek:
        return peek_listing(next(iter(self.listings().values())))
