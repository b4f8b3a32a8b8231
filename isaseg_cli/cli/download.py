"""`isaseg download`: fetch zoo checkpoints, pretrained backbones or URLs into the cache."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from isaseg_cli.cli import _render
from isaseg_cli.errors import InputError


def download_cli(
    targets: Annotated[
        list[str],
        typer.Argument(
            help="Zoo names, aliases or prefixes, pretrained backbones (resnet50_v1c), URLs or "
            "local files.",
            metavar="NAME",
            show_default=False,
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Download again even if a verified copy is cached.")
    ] = False,
    pretrained_only: Annotated[
        bool,
        typer.Option(
            "--pretrained-only",
            help="For zoo names: fetch only the ImageNet backbone that training starts from.",
        ),
    ] = False,
) -> None:
    """Download checkpoints into the cache, verified by the SHA-256 prefix in their names.

    The cache is $ISASEG_HOME, else ~/.cache/isaseg. An interrupted download resumes on the next
    run; $ISASEG_MIRROR replaces https://download.openmmlab.com for users behind a mirror.
    """
    from isaseg_cli.hub.cache import cached_path, url_filename
    from isaseg_cli.hub.fetch import fetch_url

    jobs = list(dict.fromkeys(_resolve(target, pretrained_only) for target in targets))
    with _render.progress_bars(transfer=True) as update:
        for url, sha256_prefix in jobs:
            label = url_filename(url)
            result = fetch_url(
                url,
                cached_path(url),
                sha256_prefix=sha256_prefix,
                force=force,
                on_progress=lambda done, total, label=label: update(label, done, total),
            )
            how = "downloaded" if result.downloaded else "already cached"
            check = "sha256 verified" if sha256_prefix else f"sha256 {result.sha256}, unchecked"
            _render.info(f"{result.path}  ({how}, {result.bytes / 1e6:.1f} MB, {check})")


def _resolve(target: str, pretrained_only: bool) -> tuple[str, str | None]:
    """A command-line target -> (URL or path, expected SHA-256 prefix or None)."""
    from isaseg_cli.hub.fetch import expected_sha256_prefix
    from isaseg_cli.zoo.catalog import load_zoo

    if "://" in target or os.sep in target or Path(target).suffix == ".pth":
        if pretrained_only:
            raise InputError(f"--pretrained-only needs zoo names, not the file {target!r}")
        return target, expected_sha256_prefix(target)
    zoo = load_zoo()
    if target in zoo.pretrained:
        weights = zoo.pretrained[target]
    else:
        entry = zoo.resolve(target)
        if pretrained_only:
            if entry.train.pretrained is None:
                raise InputError(f"{entry.name} does not start from a pretrained backbone")
            weights = zoo.resolve_pretrained(entry.train.pretrained)
        elif entry.weights is None:
            raise InputError(f"{entry.name} has no published checkpoint")
        else:
            weights = entry.weights
    return weights.url, weights.sha256
