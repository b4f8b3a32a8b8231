"""`isaseg --help`, every `isaseg CMD --help` and shell completion run without importing torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import COMMANDS

ROOT = Path(__file__).parents[2]

# Runs inside one fresh interpreter: every help page, then a completion request, then reports
# whether torch (or the engine, which needs it) was ever imported.
PROBE = """
import os, sys
from isaseg_cli.cli import app
for args in {helps!r}:
    try:
        app(args, prog_name="isaseg")
    except SystemExit as exc:
        assert exc.code == 0, (args, exc.code)
os.environ.update(_ISASEG_COMPLETE="complete_bash", COMP_WORDS="isaseg eval isanet_r50_c",
                  COMP_CWORD="2")
try:
    app([], prog_name="isaseg")
except SystemExit:
    pass
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] == "torch"
               or m.startswith(("isaseg_cli.engine", "isaseg_cli.bench")))
print("IMPORTED", heavy, file=sys.stderr)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120"}


def test_help_and_completion_never_import_torch() -> None:
    helps = [["--help"]] + [[name, "--help"] for name in COMMANDS]
    probe = subprocess.run(
        [sys.executable, "-c", PROBE.format(helps=helps)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert "IMPORTED []" in probe.stderr, probe.stderr
    assert "isanet_r50_cityscapes" in probe.stdout.split()  # the completion did answer
    for name in COMMANDS:
        assert f"isaseg {name} [OPTIONS]" in probe.stdout, name


def test_the_real_entry_point_help_imports_no_torch() -> None:
    """``python -X importtime`` lists every module the process imported, ours included."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "isaseg_cli", "--help"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines()]
    assert "isaseg_cli.cli" in imported and "typer" in imported
    assert not [name for name in imported if name.split(".")[0] == "torch"]
