"""Hostile image files for tests: PNG decompression bombs made in milliseconds."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path


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
