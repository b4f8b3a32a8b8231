"""Every command's flags are the lower-case, kebab-case names the README and --help promise.

Typer 0.27 (found on a GPU machine) named an option whose metavar is its parameter's name in
capitals after the metavar (``--DEVICE``), so ``--device`` was refused there; such options
now declare their flag explicitly.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from isaseg_cli.cli import app
from isaseg_cli.cli._options import DEFAULT_MODEL, default_model
from tests.helpers import COMMANDS


def test_every_option_flag_is_lower_case_kebab() -> None:
    group = typer.main.get_command(app)  # a click group (Typer >= 0.29 vendors its own click)
    checked = 0
    for name, command in group.commands.items():
        for param in command.params:
            if param.param_type_name != "option":
                continue
            for flag in param.opts + param.secondary_opts:
                assert re.fullmatch(r"--[a-z0-9]+(-[a-z0-9]+)*|-[a-z]", flag), (name, flag)
                checked += 1
    assert checked > 50


def test_the_device_option_is_spelled_device() -> None:
    group = typer.main.get_command(app)
    for name in ("predict", "eval", "train", "benchmark"):
        flags = [flag for param in group.commands[name].params for flag in param.opts]
        assert "--device" in flags, name


# --- One set of conventions across commands (issue 14.6) ----------------------------------------

runner = CliRunner()
MODEL_COMMANDS = ("predict", "eval", "train", "benchmark")


def _help(*command: str) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_one_default_model_for_every_command(monkeypatch) -> None:
    monkeypatch.delenv("ISASEG_MODEL", raising=False)
    assert default_model() == DEFAULT_MODEL
    monkeypatch.setenv("ISASEG_MODEL", "isanet_r101_cityscapes")  # an alias: the full name
    assert default_model() == "isanet_r101-d8_4xb2-80k_cityscapes-769x769"
    for name in MODEL_COMMANDS:
        assert f"$ISASEG_MODEL, else {DEFAULT_MODEL}" in _help(name), name
    package = Path(__file__).parents[2] / "isaseg_cli" / "cli"
    defined = [p.name for p in package.glob("*.py") if "DEFAULT_MODEL =" in p.read_text()]
    assert defined == ["_options.py"]


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_a_bad_isaseg_model_is_one_line_naming_the_variable(command, tmp_path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(b"")  # exists: predict checks its inputs first
    args = {"predict": [str(image)], "eval": ["--data-root", str(tmp_path)]}.get(command, [])
    result = runner.invoke(app, [command, *args], env={"ISASEG_MODEL": "isanet_nope"})
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: $ISASEG_MODEL=isanet_nope: unknown")


def test_crop_size_is_the_one_spelling_and_crop_still_works(tmp_path) -> None:
    for name in ("predict", "eval", "train"):
        text = _help(name)
        assert re.search(r"--crop-size\s+HxW", text) and not re.search(r"--crop(?![\w-])", text)
    image = tmp_path / "a.png"
    image.write_bytes(b"")
    for spelling in (["--crop", "12"], ["--crop=12"], ["--crop-size", "12"]):
        result = runner.invoke(app, ["predict", str(image), *spelling])
        assert result.exit_code == 2 and "--crop-size takes HEIGHTxWIDTH" in result.output


def test_device_takes_the_same_values_everywhere() -> None:
    group = typer.main.get_command(app)
    helps = {
        name: next(p.help for p in group.commands[name].params if "--device" in p.opts)
        for name in MODEL_COMMANDS
    }
    assert len(set(helps.values())) == 1 and "cuda:N" in helps["train"], helps


@pytest.mark.parametrize("command", ("", *COMMANDS))
def test_help_has_no_type_labels_and_a_plain_usage_line(command) -> None:
    text = _help(*([command] if command else []))
    assert not re.search(r"<[\w|\[\].-]+>", text), text  # no <bool>, <str>, <list[str]>, <a|b>
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "...}" not in usage, usage


def test_usage_lines_read_like_the_readme() -> None:
    assert "predict [OPTIONS] INPUT..." in _help("predict")
    assert "eval [OPTIONS] [MODEL]" in _help("eval")
    assert "make-synthetic [OPTIONS] DIR" in _help("make-synthetic")


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "x.png", "--bogus"], "No such option: --bogus"),
        (["predcit"], "No such command 'predcit'"),
        (["predict", "x.png", "--batch-size", "0"], "--batch-size"),
        (["predict"], "Missing argument 'INPUT...'"),
        (["eval", "--precision", "fp64"], "--precision"),
    ],
)
def test_usage_errors_are_one_error_line_exit_2(args, message) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_the_readme_documents_the_exit_codes() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    table = readme[readme.index("### Exit codes") :]
    for code in ("0", "1", "2", "130"):
        assert re.search(rf"^\| {code} \| \w", table, re.M), code


def test_completion_is_on_and_completes_zoo_names() -> None:
    assert "--install-completion" in _help() and "--show-completion" in _help()
    env = {
        "_ISASEG_COMPLETE": "complete_bash",
        "COMP_WORDS": "isaseg predict --model isanet_r101",
        "COMP_CWORD": "3",
    }
    result = runner.invoke(app, [], env=env, prog_name="isaseg")
    names = result.output.split()
    assert "isanet_r101_cityscapes" in names
    assert "isanet_r101-d8_4xb2-80k_cityscapes-769x769" in names
    assert all(name.startswith("isanet_r101") for name in names) and len(names) > 8
    env["COMP_WORDS"], env["COMP_CWORD"] = "isaseg benchmark isanet_r50_a", "2"
    assert runner.invoke(app, [], env=env, prog_name="isaseg").output.split() == [
        "isanet_r50_ade20k"
    ]
    assert os.environ.get("_ISASEG_COMPLETE") is None  # the runner restored the environment
