"""Where a pretrained model's weights come from, whether they are here, and fetching them.

A registered model names its weights' source as ``ModelInfo.weights_from``:

* ``package:MODULE``: they ship in an installed Python package (bundled, offline);
* ``hf-hub:REPO``: the Hugging Face hub (timm's weights), cached by ``huggingface_hub``;
* ``url:URL``: a plain download (torchvision's), cached under ``torch.hub``'s folder.

Before a download, one short connection attempt tells an unreachable host (no network,
a firewall) from a reachable one, and ``HF_HUB_OFFLINE`` is honoured, so that offline
the answer is one line within seconds rather than a minute of hub retries.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from cnnkit.base.errors import CnnkitError

BUNDLED, CACHED, DOWNLOAD = "bundled", "cached", "download"
CONNECT_TIMEOUT_S = 3.0
HF_ENDPOINT_DEFAULT = "https://huggingface.co"
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

OFFLINE_CHOICES = ("without a network, use efficientnet_lite0 (its weights ship with "
                   "cnnkit), pass --weights FILE, or --mode scratch")


def hf_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no hub access."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in ("1", "on", "yes", "true")


def hf_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", HF_ENDPOINT_DEFAULT).rstrip("/")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment variables ``huggingface_hub``
    reads (``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``, ``XDG_CACHE_HOME``),
    without importing it (a few tenths of a second that ``cnnkit models`` need not pay)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(os.environ.get("HF_HOME") or os.path.join(cache, "huggingface")).expanduser() \
        / "hub"


def hf_cached_file(repo: str) -> Path | None:
    """The weights file of hub repo ``repo`` in the local hub cache, if it is there: the
    cache's documented layout (``models--ORG--NAME/refs/main`` names the snapshot), as
    ``huggingface_hub.try_to_load_from_cache`` reads it."""
    folder = hf_cache_dir() / f"models--{repo.replace('/', '--')}"
    ref = folder / "refs" / "main"
    try:
        commit = ref.read_text().strip() if ref.is_file() else "main"
    except OSError:
        return None
    for filename in HF_WEIGHT_FILES:
        found = folder / "snapshots" / commit / filename
        if found.is_file():
            return found
    return None


def torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch (same environment variables)."""
    if os.environ.get("TORCH_HOME"):
        return Path(os.environ["TORCH_HOME"]).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache).expanduser() / "torch" / "hub"


def url_cached_file(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps ``url``'s file."""
    return torch_hub_dir() / "checkpoints" / Path(urlsplit(url).path).name


def local_weights_file(weights_from: str | None) -> Path | None:
    """The local file a source's weights are read from (for a package, its module file),
    or None when they are not here yet."""
    if not weights_from:
        return None
    kind, _, where = weights_from.partition(":")
    if kind == "package":
        spec = importlib.util.find_spec(where)
        return Path(spec.origin) if spec is not None and spec.origin else None
    if kind == "hf-hub":
        return hf_cached_file(where)
    if kind == "url":
        path = url_cached_file(where)
        return path if path.is_file() else None
    return None


def weights_status(weights_from: str | None) -> str | None:
    """``bundled``, ``cached`` or ``download`` for a source; None when there is none."""
    if not weights_from:
        return None
    kind = weights_from.partition(":")[0]
    if kind not in ("package", "hf-hub", "url"):
        raise ValueError(f"unknown weights source {weights_from!r}")
    if local_weights_file(weights_from) is None:
        return DOWNLOAD
    return BUNDLED if kind == "package" else CACHED


# Hosts found unreachable in this process, why, and when: asked again within
# UNREACHABLE_TTL_S (the command's quick check, then the plan, then the model's builder)
# the answer is at once, not one more timeout each; later (a notebook that has been
# reconnected) the host is tried again.
UNREACHABLE_TTL_S = 60.0
_UNREACHABLE: dict[tuple[str, int], tuple[str, float]] = {}


def unreachable(url: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why a TCP connection to ``url``'s host (or its proxy) cannot open; None if it can.

    The attempt, name lookup included, runs in a daemon thread so that a resolver that
    hangs cannot hold the caller beyond ``timeout``; a host that failed in the last
    :data:`UNREACHABLE_TTL_S` seconds is not tried again.
    """
    import urllib.request

    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxied = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = proxied.hostname or "", proxied.port or 80
    known = _UNREACHABLE.get((host, port))
    if known is not None and time.monotonic() - known[1] < UNREACHABLE_TTL_S:
        return known[0]
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except socket.gaierror:
            outcome.append(f"cannot resolve {host}")
        except TimeoutError:
            outcome.append(f"no answer from {host} within {timeout:g} s")
        except OSError as exc:
            outcome.append(f"{host}: {exc.strerror or type(exc).__name__}")

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    reason = outcome[0] if outcome else f"no answer from {host} within {timeout:g} s"
    if reason is not None:
        _UNREACHABLE[host, port] = (reason, time.monotonic())
    return reason


def check_can_download(name: str, weights_from: str) -> None:
    """Raise one clear :class:`CnnkitError` unless ``name``'s weights can be fetched now."""
    kind, _, where = weights_from.partition(":")
    if kind == "hf-hub":
        if hf_offline():
            raise CnnkitError(f"The pretrained weights of {name} are not in the Hugging Face "
                              f"cache and HF_HUB_OFFLINE is set, so they cannot be downloaded. "
                              f"Unset HF_HUB_OFFLINE to download them once, or "
                              f"{OFFLINE_CHOICES}.")
        url = hf_endpoint()
    elif kind == "url":
        url = where
    else:
        return
    reason = unreachable(url)
    if reason is not None:
        raise CnnkitError(f"The pretrained weights of {name} are not cached and must be "
                          f"downloaded once from {urlsplit(url).hostname}, which cannot be "
                          f"reached ({reason}). Connect and run again or, {OFFLINE_CHOICES}.")


def hf_timm_cached(name: str) -> bool:
    """Whether the hub cache holds any of timm's weights for architecture ``name`` (any
    tag: ``timm/NAME`` or ``timm/NAME.TAG``), without importing timm."""
    prefix = f"models--timm--{name.partition('.')[0]}"
    try:
        return any(p.name == prefix or p.name.startswith(prefix + ".")
                   for p in hf_cache_dir().iterdir())
    except OSError:
        return False


def check_timm_name_reachable(name: str, unknown: str) -> None:
    """For a name that is not one of cnnkit's models (``unknown``: the registry's message,
    with close matches) and whose timm weights are not in the hub cache: one line at
    once when they cannot be downloaded now (:func:`check_can_download`), before timm is
    imported to look the name up (seconds offline)."""
    if hf_timm_cached(name):
        return
    try:
        check_can_download(name, f"hf-hub:timm/{name}")
    except CnnkitError as exc:
        raise CnnkitError(f"{unknown} If {name} is a timm architecture: {exc}") from None


def check_weights(name: str, weights_from: str | None) -> None:
    """Raise one clear :class:`CnnkitError` unless ``name``'s pretrained weights are here
    (bundled or cached) or can be downloaded now: a run checks this before loading data."""
    if weights_status(weights_from) == DOWNLOAD:
        assert weights_from is not None
        check_can_download(f"{name} ({weights_from.partition(':')[2]})", weights_from)


def one_line(exc: BaseException) -> str:
    """An exception's message as one whole line (its lines joined, never cut)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__
