"""The server's limits and batching parameters, decided once at start."""

from __future__ import annotations

from dataclasses import dataclass

from isaseg_cli.errors import InputError


@dataclass(frozen=True, kw_only=True, slots=True)
class ServeSettings:
    """What the server accepts and how it batches.

    Args:
        max_batch: images per forward pass at most.
        max_wait_ms: how long the first image of a batch waits for others.
        max_queue: requests waiting for the model at most; more get 503.
        max_image_bytes: the largest request body; larger get 413.
        max_pixels: the largest image (width x height, from its header); larger get 413.
        timeout_s: a request that has no answer after this long gets 504.
        api_key: when set, every request but health and ready must carry it.
    """

    max_batch: int = 4
    max_wait_ms: float = 5.0
    max_queue: int = 64
    max_image_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    timeout_s: float = 60.0
    api_key: str | None = None

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_image_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1")
        if self.max_wait_ms < 0 or self.timeout_s <= 0:
            raise InputError("--max-wait-ms must be >= 0 and --timeout positive")
