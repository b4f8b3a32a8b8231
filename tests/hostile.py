"""Hostile conditions for tests: PNG decompression bombs, a server that counts requests, and
small tmpfs mounts (read-only, or full) where this process may mount them."""

from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_bomb(path: Path, width: int, height: int, rows_per_block: int = 500) -> Path:
    """A valid all-black 1-bit PNG of ``width`` x ``height``, a few hundred KB even at 60,000 x
    60,000: one deflate block of ``rows_per_block`` zero rows, made once and repeated (a full
    flush resets the compressor, so every repeat is the same bytes), with the true Adler-32."""
    if height % rows_per_block:
        raise ValueError("height must be a multiple of rows_per_block")
    block_rows = bytes(1 + (width + 7) // 8) * rows_per_block  # filter byte 0, then zero bits
    compressor = zlib.compressobj(9)
    first = compressor.compress(block_rows) + compressor.flush(zlib.Z_FULL_FLUSH)
    header, block = first[:2], first[2:]
    adler = 1
    for _ in range(height // rows_per_block):
        adler = zlib.adler32(block_rows, adler)
    final = zlib.compressobj(9).flush()[2:-4]  # an empty final block, without header or checksum
    stream = header + block * (height // rows_per_block) + final + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", stream)
        + _chunk(b"IEND", b"")
    )
    return path


class CountingServer(ThreadingHTTPServer):
    """Answers every request with 404 and counts them: proof that nothing was downloaded."""

    requests = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        self.server.requests += 1  # type: ignore[attr-defined]
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def counting_server() -> Iterator[CountingServer]:
    server = CountingServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at ``path`` (e.g. ``size=1m`` or ``ro``); skips the test where this
    process cannot mount (not root, or no CAP_SYS_ADMIN in the container)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
