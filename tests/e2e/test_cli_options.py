"""Every command's flags are the lower-case, kebab-case names the README and --help promise.

Typer 0.27 (found on a GPU machine) named an option whose metavar is its parameter's name in
capitals after the metavar (``--DEVICE``), so ``--device`` was refused there; such options
now declare their flag explicitly.
"""

from __future__ import annotations

import re

import typer

from isaseg_cli.cli import app


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
