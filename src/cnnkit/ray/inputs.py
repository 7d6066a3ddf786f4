"""The images to predict on a cluster: local files, folders and globs (listed as
``cnnkit predict`` lists them), and fsspec/pyarrow URLs (``s3://bucket/photos/``,
``gs://...``, ``file:///...``), listed here and read by the workers."""

from __future__ import annotations

from collections.abc import Sequence

from cnnkit.base.errors import CnnkitError
from cnnkit.data.decode import is_image_file
from cnnkit.data.scan import is_hidden
from cnnkit.ray.predictor import is_url
from cnnkit.runtime.inputs import expand_inputs


def list_inputs(items: str | Sequence[str]) -> list[str]:
    """Image paths and URLs, in the order given (folders sorted within)."""
    items = [items] if isinstance(items, str) else list(items)
    out: list[str] = []
    local: list[str] = []
    for item in items:
        if is_url(item):
            out += expand_inputs(local)
            local = []
            out += _list_url(item)
        else:
            local.append(item)
    return out + expand_inputs(local)


def _list_url(url: str) -> list[str]:
    try:
        import fsspec
    except ImportError:  # pragma: no cover - fsspec comes with the [ray] extra
        raise CnnkitError(f"Reading {url} needs fsspec: pip install 'cnnkit[ray]'") from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise CnnkitError(f"Cannot read {url}: {exc}. Install the filesystem's fsspec "
                          f"package (s3fs for s3://, gcsfs for gs://).") from None
    try:
        if any(ch in path for ch in "*?["):
            found = [p for p in fs.glob(path) if fs.isfile(p)]
        elif fs.isdir(path):
            found = fs.find(path)
        elif fs.isfile(path):
            return [url]
        else:
            raise CnnkitError(f"Image not found: {url}.")
    except OSError as exc:
        raise CnnkitError(f"Cannot list {url}: {exc}.") from None
    wild = min((path.index(ch) for ch in "*?[" if ch in path), default=len(path))
    root = path[:wild].rsplit("/", 1)[0] if wild < len(path) else path.rstrip("/")
    keep = sorted(p for p in found if is_image_file(p)
                  and not any(is_hidden(part) for part in p[len(root):].split("/") if part))
    if not keep:
        raise CnnkitError(f"No images found at {url}.")
    return [fs.unstrip_protocol(p) for p in keep]
