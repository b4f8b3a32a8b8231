"""`isaseg serve` as a user runs it: a subprocess that answers its request in flight on SIGTERM."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.data.mask_io import encode_index_png
from isaseg_cli.engine.infer.segmenter import Segmenter


def _get(url: str, path: str) -> tuple[int, bytes]:
    return _request(url, "GET", path)


def _segment(url: str, png: bytes) -> tuple[int, bytes]:
    return _request(url, "POST", "/v1/segment", png, {"Content-Type": "image/png"})


def _request(
    url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    connection.request(method, path, body, headers or {})
    response = connection.getresponse()
    answer = response.status, response.read()
    connection.close()
    return answer


def _start(checkpoint: Path, *extra: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "isaseg_cli", "serve", "--checkpoint", str(checkpoint)]
    return subprocess.Popen(
        [*command, "--port", "0", "--device", "cpu", "--max-wait-ms", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )


def _address(process: subprocess.Popen[str]) -> str:
    """The URL the server prints once it listens."""
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if match is None:
        process.kill()
        raise AssertionError(f"no address in {line!r}; stderr: {process.stderr.read()}")  # type: ignore[union-attr]
    return match.group(0)


def test_sigterm_during_a_request_still_answers_it_and_exits_0(
    tiny_checkpoint: Path, tmp_path: Path
) -> None:
    process = _start(tiny_checkpoint)
    try:
        image = np.random.default_rng(3).integers(0, 256, (192, 256, 3), dtype=np.uint8)
        image_path = tmp_path / "image.png"
        cv2.imwrite(str(image_path), image)
        segmenter = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")
        expected = encode_index_png(segmenter(image), segmenter.palette)
        url = _address(process)
        answers: list[tuple[int, bytes, float]] = []

        def post() -> None:
            answers.append((*_segment(url, image_path.read_bytes()), time.perf_counter()))

        while _get(url, "/v1/ready")[0] != 200:
            time.sleep(0.02)
        client = threading.Thread(target=post)
        client.start()
        while b'isaseg_requests_total{path="/v1/segment"} 1.0' not in _get(url, "/metrics")[1]:
            time.sleep(0.005)
        signalled = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        client.join(timeout=60)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "Server stopped" in stdout
    status, body, answered = answers[0]
    assert status == 200, body
    assert answered > signalled, "the request finished before the signal: nothing was tested"
    assert body == expected


def test_an_exported_file_serves_the_masks_predict_writes_from_it(tiny_onnx, tmp_path) -> None:
    """``--checkpoint model.onnx`` (the onnxruntime backend): the served PNG is the file
    ``isaseg predict --checkpoint model.onnx`` writes for the same image, byte for byte."""
    image = np.random.default_rng(4).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    image_path, written = tmp_path / "image.png", tmp_path / "mask.png"
    cv2.imwrite(str(image_path), image)
    args = ["predict", str(image_path), "--checkpoint", str(tiny_onnx["path"])]
    result = CliRunner().invoke(app, [*args, "--out", str(written)])
    assert result.exit_code == 0, result.output
    process = _start(tiny_onnx["path"])
    try:
        url = _address(process)
        while _get(url, "/v1/ready")[0] != 200:
            time.sleep(0.02)
        status, body = _segment(url, image_path.read_bytes())
    finally:
        process.terminate()
        process.communicate(timeout=60)
    assert status == 200, body
    assert body == written.read_bytes()


def _answers_ready(url: str) -> bool:
    try:
        return _get(url, "/v1/ready")[0] == 200
    except ConnectionRefusedError:
        return False


def _workers_of(pid: int) -> int:
    """How many multiprocessing workers (spawned children) the process ``pid`` has."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        count += int(fields[1]) == pid and b"spawn_main" in command
    return count


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts workers through /proc")
def test_workers_serve_every_request_right_and_stop_on_sigterm(tiny_checkpoint, tmp_path) -> None:
    image = np.random.default_rng(5).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    body = cv2.imencode(".png", image)[1].tobytes()
    segmenter = Segmenter.from_checkpoint(tiny_checkpoint, device="cpu")
    expected = encode_index_png(segmenter(image), segmenter.palette)
    process = _start(tiny_checkpoint, "--workers", "2")
    try:
        url = _address(process)
        deadline = time.monotonic() + 60
        while _workers_of(process.pid) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _workers_of(process.pid) == 2
        while not _answers_ready(url):  # the socket accepts once a worker has warmed up
            time.sleep(0.05)
        answers: list[tuple[int, bytes]] = []

        def post() -> None:
            answers.append(_segment(url, body))

        clients = [threading.Thread(target=post) for _ in range(8)]
        for client in clients:
            client.start()
        for client in clients:
            client.join(timeout=60)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "Server stopped" in stdout
    assert [status for status, _ in answers] == [200] * 8
    assert all(answer == expected for _, answer in answers)


def test_serve_refuses_an_empty_api_key_variable(tiny_checkpoint: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["serve", "--checkpoint", str(tiny_checkpoint), "--api-key-env", "ISASEG_TEST_NO_KEY"],
        env={"ISASEG_TEST_NO_KEY": ""},
    )
    assert result.exit_code == 2
    assert "ISASEG_TEST_NO_KEY" in result.output and "Traceback" not in result.output


def test_serve_without_the_extra_names_it(
    tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # makes `import uvicorn` fail
    result = CliRunner().invoke(app, ["serve", "--checkpoint", str(tiny_checkpoint)])
    assert result.exit_code == 2
    assert "pip install 'isaseg[serve]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
