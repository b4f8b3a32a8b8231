"""docs/DEPLOY.md's plain-onnxruntime example runs as written and gives isaseg's masks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from tests.helpers import TINY

DOC = Path(__file__).parents[2] / "docs" / "DEPLOY.md"


def test_the_plain_onnxruntime_example_reproduces_the_fixture_masks(
    tiny_onnx, expected, tmp_path
) -> None:
    pytest.importorskip("onnxruntime")
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- plain-onnxruntime.*?-->\n```python\n(.*?)```", text, re.S)
    assert block is not None, "DEPLOY.md lost its plain-onnxruntime example"
    assert len(block.group(1).strip().splitlines()) <= 25
    script, mask = tmp_path / "plain.py", tmp_path / "mask.png"
    script.write_text(block.group(1), encoding="utf-8")
    args = [sys.executable, str(script), str(tiny_onnx["path"]), str(TINY / "image.png")]
    subprocess.run([*args, str(mask)], check=True, capture_output=True, timeout=120)
    ours = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
    assert ours.shape == expected["whole_pred"][0].shape
    assert (ours == expected["whole_pred"][0]).mean() > 0.999
