"""Prometheus metrics of one server, in their own registry (several apps can share a process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


class ServeMetrics:
    """Requests by path, errors by status code, queue length, latency and batch sizes."""

    def __init__(self, queue_length: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "isaseg_requests", "HTTP requests by path", ["path"], registry=self.registry
        )
        self.errors = Counter(
            "isaseg_errors", "Answers with status >= 400, by code", ["code"], registry=self.registry
        )
        self.latency = Histogram(
            "isaseg_request_seconds",
            "Time from request to response for /v1/segment",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "isaseg_batch_size",
            "Images per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        queue = Gauge(
            "isaseg_queue_length", "Requests waiting for the model", registry=self.registry
        )
        queue.set_function(queue_length)

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
