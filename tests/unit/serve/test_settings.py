"""The server's limits are checked once, with the flag's name in the message."""

from __future__ import annotations

import pytest

from isaseg_cli.errors import InputError
from isaseg_cli.serve.settings import ServeSettings


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_batch": 0}, "--max-batch must be at least 1"),
        ({"max_queue": 0}, "--max-queue must be at least 1"),
        ({"max_image_bytes": 0}, "--max-image-bytes must be at least 1"),
        ({"max_pixels": -1}, "--max-pixels must be at least 1"),
        ({"max_wait_ms": -0.1}, "--max-wait-ms must be >= 0"),
        ({"timeout_s": 0}, "--timeout positive"),
    ],
)
def test_out_of_range_limits_name_their_flag(changes: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ServeSettings(**changes)


def test_defaults_and_edges_are_accepted() -> None:
    settings = ServeSettings(max_batch=1, max_wait_ms=0.0, max_queue=1)
    assert (settings.max_batch, settings.max_wait_ms, settings.api_key) == (1, 0.0, None)
    assert ServeSettings().max_pixels == 4096 * 4096
