"""The README's examples run as written: the offline ones for real, the rest parse.

"Try it offline" runs top to bottom in a fresh folder, shell commands and Python block alike, with
the zoo replaced by a tiny test architecture (the default model is R-50; its commands were run as
written by hand). `isaseg zoo` lines run against the real zoo. Every other `isaseg` command (they
need downloads or datasets) is parsed by its real command: option names, values and types.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from isaseg_cli.cli import app

README = Path(__file__).parents[2] / "README.md"
OFFLINE = "Try it offline"
runner = CliRunner()


def _sections() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {"": parts[0], **dict(zip(parts[1::2], parts[2::2], strict=True))}


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.M | re.S)


def _isaseg_commands(block: str) -> list[list[str]]:
    """The ``isaseg ...`` commands of a shell block, as argument lists (``torchrun ... -m
    isaseg_cli CMD`` included, comments and ``pip ... &&`` prefixes dropped)."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():  # a trailing backslash continues the line
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words[:1] == ["isaseg"]:
                commands.append(words[1:])
            elif "isaseg_cli" in words and words[words.index("isaseg_cli") - 1] == "-m":
                commands.append(words[words.index("isaseg_cli") + 1 :])
    return commands


def _example_commands() -> list[list[str]]:
    return [
        command
        for title, text in _sections().items()
        if title != OFFLINE
        for block in _blocks(text, "bash")
        for command in _isaseg_commands(block)
    ]


def test_the_readme_has_the_examples_this_test_checks() -> None:
    sections = _sections()
    offline = _isaseg_commands(_blocks(sections[OFFLINE], "bash")[0])
    assert [command[0] for command in offline] == [
        "make-synthetic", "eval", "train", "eval", "predict",
    ]  # fmt: skip
    assert "Segmenter.from_checkpoint" in _blocks(sections[OFFLINE], "python")[0]
    assert len(_example_commands()) >= 20


def test_the_offline_examples_run_offline(tmp_path, monkeypatch, tiny_zoo, one_thread) -> None:
    tiny_zoo()  # the default model becomes a tiny architecture; nothing else changes
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "empty-cache"))  # nothing cached to use
    section = _sections()[OFFLINE]
    for command in _isaseg_commands(_blocks(section, "bash")[0]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, (command, result.output)
    assert (tmp_path / "demo" / "run" / "best.pth").is_file()
    assert len(list((tmp_path / "demo" / "masks").rglob("*.png"))) == 2
    namespace: dict[str, object] = {}
    exec(_blocks(section, "python")[0], namespace)  # noqa: S102 - the README's own example
    mask = namespace["mask"]
    assert mask.shape == (64, 128)  # type: ignore[attr-defined]
    assert not (tmp_path / "empty-cache").exists()


def test_the_zoo_examples_run() -> None:
    for command in _example_commands():
        if command[0] == "zoo":
            result = runner.invoke(app, command, env={"COLUMNS": "120"})
            assert result.exit_code == 0, (command, result.output)


@pytest.mark.parametrize("command", _example_commands(), ids=" ".join)
def test_every_other_example_parses(command, tmp_path, monkeypatch) -> None:
    """Parsing only (no download, no dataset): the real command checks every option and value;
    files that ``--checkpoint`` must find exist as empty placeholders."""
    monkeypatch.chdir(tmp_path)
    for flag, value in zip(command, command[1:], strict=False):
        if flag == "--checkpoint":
            Path(value).parent.mkdir(parents=True, exist_ok=True)
            Path(value).touch()
    group = typer.main.get_command(app)
    click_command = group.commands[command[0]]
    try:
        click_command.make_context(command[0], command[1:])
    except typer.Exit as exc:  # our commands print a usage error and exit 2
        pytest.fail(f"isaseg {shlex.join(command)} does not parse (exit {exc.exit_code})")
