"""Fixtures of the data tests: one small synthetic dataset in each real layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from isaseg_cli.data.synthetic import write_synthetic_dataset
from tests.helpers import DATASET_SPECS


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three image/label pairs per split of each layout (module-scoped: some tests add files)."""
    base = tmp_path_factory.mktemp("datasets")
    return {
        kind: write_synthetic_dataset(kind, base / kind, num_images=3) for kind in DATASET_SPECS
    }
