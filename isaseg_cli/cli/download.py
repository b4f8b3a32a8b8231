"""`isaseg download`: fetch zoo checkpoints, pretrained backbones or URLs into the cache."""

from __future__ import annotations

import os
from collections.abc import Callable
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
    run; $ISASEG_MIRROR replaces https://download.openmmlab.com for users behind a mirror. A
    local FILE (a copy fetched another way) is copied into the cache under its published name.
    """
    from isaseg_cli.hub.cache import cached_path, url_filename
    from isaseg_cli.hub.fetch import fetch_url

    jobs = list(dict.fromkeys(_resolve(target, pretrained_only) for target in targets))
    with _render.progress_bars(transfer=True) as update:
        for url, sha256_prefix in jobs:
            on_progress = _render.download_sink(update, label=url_filename(url))
            if _is_local(url):
                _import(Path(url).expanduser(), force, on_progress)
                continue
            result = fetch_url(
                url,
                cached_path(url),
                sha256_prefix=sha256_prefix,
                force=force,
                on_progress=on_progress,
                on_status=_render.status,
            )
            how = "downloaded" if result.downloaded else "already cached"
            check = "sha256 verified" if sha256_prefix else f"sha256 {result.sha256}, unchecked"
            _render.info(f"{result.path}  ({how}, {result.bytes / 1e6:.1f} MB, {check})")


def _is_local(target: str) -> bool:
    return "://" not in target


def _import(source: Path, force: bool, on_progress: Callable[[int, int | None], None]) -> None:
    """Copies a local file into the cache under the published name it turns out to have."""
    from isaseg_cli.hub.fetch import expected_sha256_prefix
    from isaseg_cli.hub.local import import_file
    from isaseg_cli.zoo.catalog import load_zoo

    zoo = load_zoo()
    known = [e.weights for e in zoo.entries if e.weights is not None]
    result, match = import_file(
        source,
        [*known, *zoo.pretrained.values()],
        force=force,
        on_progress=on_progress,
        on_status=_render.status,
    )
    how = f"imported from {source}" if result.downloaded else "already cached"
    verified = match is not None or expected_sha256_prefix(result.path.name) is not None
    check = "sha256 verified" if verified else f"sha256 {result.sha256}, unchecked"
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
