"""The server's Prometheus metrics (serve/metrics.py; named test_serve_* beside engine's
test_metrics.py): counts in the text format, and one registry per server."""

from __future__ import annotations

import pytest

pytest.importorskip("prometheus_client")

from isaseg_cli.serve.metrics import ServeMetrics  # noqa: E402


def _samples(metrics: ServeMetrics) -> dict[str, float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    samples = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_counts_histograms_and_the_live_queue_length() -> None:
    waiting = [3]
    metrics = ServeMetrics(lambda: waiting[0])
    metrics.requests.labels(path="/v1/segment").inc(2)
    metrics.errors.labels(code="413").inc()
    metrics.batch_size.observe(4)
    metrics.latency.observe(0.02)
    samples = _samples(metrics)
    assert samples['isaseg_requests_total{path="/v1/segment"}'] == 2
    assert samples['isaseg_errors_total{code="413"}'] == 1
    assert samples['isaseg_batch_size_bucket{le="2.0"}'] == 0
    assert samples['isaseg_batch_size_bucket{le="4.0"}'] == 1
    assert samples['isaseg_request_seconds_bucket{le="0.025"}'] == 1
    assert samples["isaseg_queue_length"] == 3
    waiting[0] = 0
    assert _samples(metrics)["isaseg_queue_length"] == 0  # read at each scrape


def test_two_servers_in_one_process_count_apart() -> None:
    first, second = ServeMetrics(lambda: 0), ServeMetrics(lambda: 0)
    first.requests.labels(path="/health").inc()
    assert _samples(first)['isaseg_requests_total{path="/health"}'] == 1
    assert 'isaseg_requests_total{path="/health"}' not in _samples(second)
