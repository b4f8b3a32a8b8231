"""Optional dependencies: the module when installed, else an error naming the pip extra."""

from __future__ import annotations

import json

import pytest

from isaseg_cli.engine.extras import require
from isaseg_cli.errors import IsasegError, MissingExtraError


def test_an_installed_module_is_returned() -> None:
    assert require("json", "dev") is json


def test_a_missing_module_names_its_extra() -> None:
    with pytest.raises(MissingExtraError) as caught:
        require("isaseg_no_such_module", "onnx")
    assert str(caught.value) == (
        "isaseg_no_such_module is not installed: pip install 'isaseg[onnx]'"
    )
    assert isinstance(caught.value, IsasegError)  # the CLI turns it into one line, exit 2
    assert caught.value.__suppress_context__  # no ImportError traceback chained to it
