"""Lets ``python -m isaseg_cli`` and ``torchrun ... -m isaseg_cli train ...`` run the CLI."""

from isaseg_cli.cli import main

if __name__ == "__main__":
    main()
