"""One-line failure descriptions: isaseg's own messages as they are, others by type and reason."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from isaseg_cli.engine.failure import describe, failure_for
from isaseg_cli.errors import InputError


def test_isaseg_errors_keep_their_message() -> None:
    assert describe(InputError("a.png: not an image")) == "a.png: not an image"


def test_other_errors_give_their_type_and_last_line() -> None:
    assert describe(MemoryError()) == "MemoryError"
    error = RuntimeError("CUDA out of memory.\n  Tried to allocate 2 GiB\n\n")
    assert describe(error) == "RuntimeError: Tried to allocate 2 GiB"


def test_opencv_errors_lose_the_source_location() -> None:
    with pytest.raises(cv2.error) as caught:
        cv2.resize(np.zeros((0, 0, 3), np.uint8), (4, 4))
    text = describe(caught.value)
    assert text.startswith("cv2.error: (-215:Assertion failed)"), text
    assert ".cpp" not in text and "\n" not in text


def test_the_path_is_added_unless_named() -> None:
    assert failure_for("x/a.png", ValueError("bad")) == "x/a.png: ValueError: bad"
    assert failure_for("x/a.png", InputError("x/a.png is empty")) == "x/a.png is empty"
