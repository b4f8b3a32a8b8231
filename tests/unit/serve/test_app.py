"""The real server (uvicorn in a thread, on an ephemeral 127.0.0.1 port) with the tiny model."""

from __future__ import annotations

import http.client
import io
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.data.mask_io import encode_index_png
from isaseg_cli.engine.infer.segmenter import Segmenter
from isaseg_cli.serve.app import build_app, serving_in_thread
from isaseg_cli.serve.settings import ServeSettings
from tests.helpers import huge_png_header

Answer = tuple[int, dict[str, str], bytes]


def png_bytes(image_bgr: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image_bgr)
    assert ok
    return encoded.tobytes()


class Client:
    """One keep-alive HTTP/1.1 connection (stdlib only)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        self.connection.request(method, path, body=body, headers=headers or {})
        response = self.connection.getresponse()
        data = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data

    def segment(self, body: bytes, query: str = "", content_type: str = "image/png") -> Answer:
        return self.request("POST", f"/v1/segment{query}", body, {"Content-Type": content_type})

    def close(self) -> None:
        self.connection.close()


def wait_ready(url: str) -> None:
    client = Client(url)
    for _ in range(2000):
        if client.request("GET", "/v1/ready")[0] == 200:
            client.close()
            return
        time.sleep(0.01)
    raise AssertionError("the server never became ready")


@pytest.fixture(scope="module")
def segmenter(tiny_checkpoint: Path) -> Segmenter:
    return Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """Eight distinct 48x64 images (all the same size, so they can share a forward)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(8)]


@pytest.fixture(scope="module")
def server(segmenter: Segmenter) -> Iterator[str]:
    settings = ServeSettings(max_batch=4, max_wait_ms=10, max_queue=64, max_image_bytes=200_000)
    with serving_in_thread(build_app(segmenter, settings)) as url:
        wait_ready(url)
        yield url


def mask_of(body: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(body)) as image:
        assert image.mode == "P"
        return np.asarray(image)


def test_64_concurrent_requests_over_8_connections_get_their_own_masks(
    server: str, segmenter: Segmenter, images: list[np.ndarray]
) -> None:
    bodies = [png_bytes(image) for image in images]
    # The exact PNG bytes isaseg predict would write for each image.
    expected = [encode_index_png(segmenter(image), segmenter.palette) for image in images]

    def connection(worker: int) -> list[tuple[int, Answer]]:
        client = Client(server)
        answers = []
        for step in range(8):
            index = (worker + step) % len(images)
            answers.append((index, client.segment(bodies[index])))
        client.close()
        return answers

    with ThreadPoolExecutor(8) as pool:
        results = [answer for answers in pool.map(connection, range(8)) for answer in answers]
    assert len(results) == 64
    batch_sizes = set()
    for index, (status, headers, body) in results:
        assert status == 200, body
        assert headers["x-isaseg-model"] == "tiny-test"
        batch_sizes.add(int(headers["x-isaseg-batch-size"]))
        np.testing.assert_array_equal(mask_of(body), mask_of(expected[index]))
    assert max(batch_sizes) > 1, "8 connections at once should have been batched"
    assert max(batch_sizes) <= 4


@pytest.mark.parametrize("fmt", ["index", "color", "overlay"])
def test_served_pngs_are_the_bytes_isaseg_predict_writes(
    server: str, tiny_checkpoint: Path, tiny_image_path: Path, tmp_path: Path, fmt: str
) -> None:
    written = tmp_path / "predicted.png"
    result = CliRunner().invoke(
        app,
        ["predict", str(tiny_image_path), "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]
        + ["--format", fmt, "--out", str(written)],
    )
    assert result.exit_code == 0, result.output
    client = Client(server)
    status, _, body = client.segment(tiny_image_path.read_bytes(), f"?format={fmt}")
    client.close()
    assert status == 200
    assert body == written.read_bytes()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b"\x13\x37" * 500, "application/octet-stream", 415, "not an image"),
        (b"", "image/png", 400, "empty body"),
        (None, "image/png", 400, "truncated"),  # the fixture image cut in half
        (huge_png_header(60_000, 60_000), "image/png", 413, "pixels"),
        (b"a,b\n1,2\n", "text/csv", 415, "content type"),
        (b"\0" * 200_001, "image/png", 413, "limit"),
    ],
    ids=["random-bytes", "empty", "truncated-png", "60000x60000-header", "wrong-type", "too-big"],
)
def test_a_bad_input_gets_its_4xx_and_the_next_request_succeeds(
    server: str,
    tiny_image_path: Path,
    body: bytes | None,
    content_type: str,
    status: int,
    words: str,
) -> None:
    good = tiny_image_path.read_bytes()
    if body is None:
        body = good[: len(good) // 2]
    client = Client(server)
    answer_status, headers, answer = client.segment(body, content_type=content_type)
    assert answer_status == status, answer
    assert headers["content-type"] == "application/json"
    assert words in json.loads(answer)["error"]
    client.close()
    client = Client(server)
    assert client.segment(good)[0] == 200
    client.close()


def test_multipart_upload_formats_and_json_summary(
    server: str, segmenter: Segmenter, tiny_image_path: Path
) -> None:
    image = cv2.imread(str(tiny_image_path), cv2.IMREAD_COLOR)
    boundary = "isasegboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + tiny_image_path.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    client = Client(server)
    status, _, answer = client.segment(
        body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert status == 200
    mask = segmenter(image)
    np.testing.assert_array_equal(mask_of(answer), mask)

    status, headers, answer = client.segment(tiny_image_path.read_bytes(), "?format=json")
    summary = json.loads(answer)
    assert status == 200 and headers["content-type"] == "application/json"
    counts = {row["index"]: row["pixels"] for row in summary["classes"]}
    values, numbers = np.unique(mask, return_counts=True)
    assert counts == {int(k): int(v) for k, v in zip(values, numbers, strict=True)}
    assert 0 < summary["mean_confidence"] <= 1

    status, _, answer = client.segment(tiny_image_path.read_bytes(), "?format=color")
    color = cv2.imdecode(np.frombuffer(answer, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(color[..., ::-1], np.asarray(segmenter.palette)[mask])

    assert client.segment(tiny_image_path.read_bytes(), "?format=labelids")[0] == 400
    assert client.segment(tiny_image_path.read_bytes(), "?format=nope")[0] == 422
    client.close()


def test_health_ready_models_and_metrics(server: str) -> None:
    client = Client(server)
    assert client.request("GET", "/v1/health")[:1] == (200,)
    assert json.loads(client.request("GET", "/v1/ready")[2]) == {"ready": True}
    models = json.loads(client.request("GET", "/v1/models")[2])["models"][0]
    assert models["name"] == "tiny-test" and models["classes"] == ["c0", "c1", "c2", "c3", "c4"]
    assert models["test"]["mode"] == "whole"
    client.segment(b"", content_type="image/png")
    status, headers, text = client.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    metrics = text.decode()
    assert 'isaseg_errors_total{code="400"}' in metrics
    assert "isaseg_request_seconds_bucket" in metrics
    assert "isaseg_batch_size_count" in metrics
    assert "isaseg_queue_length 0.0" in metrics
    client.close()


def test_a_full_queue_answers_503_with_retry_after_then_recovers(segmenter: Segmenter) -> None:
    settings = ServeSettings(max_batch=1, max_wait_ms=0, max_queue=1)
    big = png_bytes(np.random.default_rng(1).integers(0, 256, (384, 384, 3), dtype=np.uint8))
    with serving_in_thread(build_app(segmenter, settings)) as url:
        wait_ready(url)

        def one(_: int) -> Answer:
            client = Client(url)
            try:
                return client.segment(big)
            finally:
                client.close()

        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(one, range(12)))
        statuses = sorted(status for status, _, _ in answers)
        assert 200 in statuses and 503 in statuses and set(statuses) == {200, 503}
        refused = next(headers for status, headers, _ in answers if status == 503)
        assert refused["retry-after"] == "1"
        assert one(0)[0] == 200


def test_the_api_key_is_required_except_for_health(
    segmenter: Segmenter, tiny_image_path: Path
) -> None:
    settings = ServeSettings(api_key="s3cret")
    with serving_in_thread(build_app(segmenter, settings)) as url:
        client = Client(url)
        assert client.request("GET", "/v1/health")[0] == 200
        assert client.segment(tiny_image_path.read_bytes())[0] == 401
        assert client.request("GET", "/v1/models", headers={"X-API-Key": "wrong"})[0] == 401
        bearer = {"Authorization": "Bearer s3cret"}
        assert client.request("GET", "/v1/models", headers=bearer)[0] == 200
        client.close()


def test_a_request_past_its_timeout_gets_504_and_the_server_lives_on(
    segmenter: Segmenter, tiny_image_path: Path
) -> None:
    settings = ServeSettings(timeout_s=0.001, max_wait_ms=0)
    with serving_in_thread(build_app(segmenter, settings)) as url:
        wait_ready(url)
        client = Client(url)
        status, _, body = client.segment(tiny_image_path.read_bytes())
        assert status == 504 and "no answer within" in json.loads(body)["error"]
        assert client.request("GET", "/v1/health")[0] == 200
        client.close()


def test_a_malformed_multipart_body_and_an_unknown_path_get_json_errors(server: str) -> None:
    client = Client(server)
    boundary = "b0undary"
    parts = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{i}.png"\r\n\r\n'
        f"x\r\n"
        for i in range(3)
    )
    body = (parts + f"--{boundary}--\r\n").encode()
    status, _, answer = client.segment(
        body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert status == 400 and "error" in json.loads(answer)
    status, _, answer = client.request("GET", "/v1/nothing")
    assert status == 404 and json.loads(answer)["status"] == 404
    assert client.request("GET", "/v1/health")[0] == 200
    client.close()


@pytest.mark.parametrize("query", ["?ms_flip=true", "?mode=slide"])
def test_request_options_override_the_servers_test_settings(
    server: str, tiny_checkpoint: Path, tiny_image_path: Path, query: str
) -> None:
    options = {"ms_flip": True} if "ms_flip" in query else {"mode": "slide"}
    reference = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu", **options)
    default = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")
    expected = reference(tiny_image_path)
    assert (expected != default(tiny_image_path)).any(), "the option should change the mask"
    client = Client(server)
    status, _, body = client.segment(tiny_image_path.read_bytes(), query)
    client.close()
    assert status == 200
    np.testing.assert_array_equal(mask_of(body), expected)
