"""Helpers shared by tests (imported as ``tests.helpers``; conftest.py holds fixtures only).

The tolerance rule for comparing with mmsegmentation's reference arrays: the same mmseg gives
slightly different float32 results on AVX2, AVX-512 and ARM CPUs (oneDNN picks other kernels, and
large inputs accumulate more rounding; tests/fixtures/mmseg_tiny/README.md gives the measured
figures, up to 1.1e-3 on logits of magnitude 17.5). So a tolerance scales with the reference: a
fraction ``rel`` of its largest absolute value, never below ``floor``. A wrong resize, padding or
permute moves logits by 1e-2 or more, far beyond it.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import torch

REL = 1e-4
FLOOR = 1e-5


def reference_tolerance(reference: np.ndarray, rel: float = REL, floor: float = FLOOR) -> float:
    """``rel`` times the largest absolute value of ``reference``, at least ``floor``."""
    return max(rel * float(np.abs(reference).max(initial=0.0)), floor)


def assert_close_to_reference(
    ours: torch.Tensor | np.ndarray,
    reference: np.ndarray,
    rel: float = REL,
    floor: float = FLOOR,
) -> float:
    """Asserts equal shapes and ``max |ours - reference| <= reference_tolerance``.

    Returns the largest difference, so a caller can record it.
    """
    ours_array = ours.detach().cpu().numpy() if isinstance(ours, torch.Tensor) else ours
    assert ours_array.shape == reference.shape, (ours_array.shape, reference.shape)
    difference = float(np.abs(ours_array.astype(np.float64) - reference).max(initial=0.0))
    tolerance = reference_tolerance(reference, rel, floor)
    assert difference <= tolerance, f"max |difference| {difference:.3g} > tolerance {tolerance:.3g}"
    return difference


def top2_margin(scores: np.ndarray, axis: int = 1) -> np.ndarray:
    """The best minus the second-best score along the class axis."""
    top2 = -np.partition(-scores, 1, axis=axis).take([0, 1], axis=axis)
    return np.abs(top2.take(0, axis=axis) - top2.take(1, axis=axis))


def assert_masks_match_except_ties(
    mask: torch.Tensor | np.ndarray,
    reference_mask: np.ndarray,
    reference_scores: np.ndarray,
    rel: float = REL,
    floor: float = FLOOR,
) -> int:
    """Asserts the masks are equal wherever the reference's top-2 margin exceeds the tolerance.

    ``reference_scores`` are the reference's (N, K, H, W) logits or probabilities, whose
    tolerance (as in ``assert_close_to_reference``) decides which pixels count as tied. Returns
    the number of pixels skipped as ties.
    """
    ours = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    assert ours.shape == reference_mask.shape, (ours.shape, reference_mask.shape)
    tolerance = reference_tolerance(reference_scores, rel, floor)
    tied = top2_margin(reference_scores, axis=1) <= tolerance
    wrong = (ours != reference_mask) & ~tied
    assert not wrong.any(), f"{int(wrong.sum())} pixel(s) differ where the reference is not tied"
    return int(tied.sum())


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` RGB, followed by a token IDAT: decoding it
    would need ``width * height * 3`` bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def run_measured(
    argv: list[str], env: dict[str, str] | None = None, timeout: float = 120
) -> tuple[int, str, float]:
    """Runs a command and returns its exit code, output (stdout and stderr) and peak RSS in MiB,
    as the kernel counted it for that process alone (``os.wait4``); killed after ``timeout``."""
    import os
    import subprocess
    import tempfile
    import threading

    with tempfile.TemporaryFile() as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        sink.seek(0)
        output = sink.read().decode(errors="replace")
    return process.returncode, output, usage.ru_maxrss / 1024  # Linux: KiB
