"""The server's options, with their defaults in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass

from cnnkit.base.errors import CnnkitError
from cnnkit.runtime.backend_names import check_backend
from cnnkit.serve.hardening import HttpLimits

# Pillow's names for the formats the decoder reads (cnnkit.data.decode).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
API_KEY_ENV = "CNNKIT_API_KEY"


@dataclass(frozen=True)
class ServeConfig:
    """How ``cnnkit serve`` listens, batches and limits what it accepts."""

    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = "auto"
    device: str = "auto"
    threads: int | None = None      # the model's CPU threads; None: one less than the CPUs
    max_batch_size: int = 32        # images per forward pass
    max_wait_ms: float = 5.0        # how long the first image waits for others to join it
    max_queue: int = 256            # images waiting for the model; beyond: 503
    max_request_mb: float = 20.0    # request body; beyond: 413
    max_files: int = 32             # images in one request
    top_k: int = 5                  # when a request names none
    formats: tuple[str, ...] = IMAGE_FORMATS
    api_key: str | None = None      # a bearer token every route but /health then needs
    shutdown_timeout_s: float = 30.0  # on SIGTERM, how long in-flight requests may take
    max_connections: int = HttpLimits.max_connections  # open at once; slowest closed first
    header_timeout_s: float = HttpLimits.header_timeout_s  # to send a request's headers
    body_timeout_s: float = HttpLimits.body_timeout_s  # longest pause within a request body
    allowed_hosts: tuple[str, ...] = ()  # Host names answered beyond the bind address's

    def __post_init__(self) -> None:
        check_backend(self.backend)
        for name in ("max_batch_size", "max_queue", "max_files", "top_k", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise CnnkitError(f"--{name.replace('_', '-')} must be at least 1. "
                                  f"Received: {getattr(self, name)}")
        if self.max_queue < self.max_files:
            raise CnnkitError(f"--max-queue ({self.max_queue}) must be at least --max-files "
                              f"({self.max_files}), or a full request could never be queued.")
        if self.max_wait_ms < 0 or self.max_request_mb <= 0:
            raise CnnkitError("--max-wait-ms must be 0 or more and --max-request-mb more "
                              f"than 0. Received: {self.max_wait_ms}, {self.max_request_mb}")
        if not 0 <= self.port <= 65535:
            raise CnnkitError(f"--port must be between 0 and 65535. Received: {self.port}")
        unknown = [f for f in self.formats if f not in IMAGE_FORMATS]
        if unknown or not self.formats:
            raise CnnkitError(f"--formats takes some of {', '.join(IMAGE_FORMATS)}. "
                              f"Received: {', '.join(self.formats) or 'none'}")
        if self.api_key is not None and not self.api_key.strip():
            raise CnnkitError("The API key is empty; pass a non-empty --api-key or unset "
                              f"{API_KEY_ENV}.")
        self.http_limits  # noqa: B018 (checks the HTTP limits now, before models load)

    @property
    def http_limits(self) -> HttpLimits:
        """What one client may take: headers, time, connections, and the hosts answered."""
        return HttpLimits(header_timeout_s=self.header_timeout_s,
                          body_timeout_s=self.body_timeout_s,
                          max_connections=self.max_connections,
                          allowed_hosts=self.allowed_hosts)

    @property
    def model_threads(self) -> int:
        """CPU threads for the forward pass: the rest of the machine decodes and talks HTTP."""
        if self.threads is not None:
            return self.threads
        return max(1, (os.cpu_count() or 1) - 1)

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 1024 * 1024)
