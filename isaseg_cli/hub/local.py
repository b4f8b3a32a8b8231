"""Imports a checkpoint the user already has (from a browser, a colleague, a USB stick) into the
cache, under the name a download would have given it, so later runs find it offline."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from isaseg_cli.errors import DownloadError
from isaseg_cli.hub import record
from isaseg_cli.hub.cache import cached_path
from isaseg_cli.hub.fetch import (
    FetchResult,
    ProgressFn,
    StatusFn,
    expected_sha256_prefix,
    fetch_url,
)
from isaseg_cli.zoo.spec import WeightsSpec


def import_file(
    source: Path,
    known: Iterable[WeightsSpec],
    *,
    force: bool = False,
    on_progress: ProgressFn | None = None,
    on_status: StatusFn | None = None,
) -> tuple[FetchResult, WeightsSpec | None]:
    """Copies ``source`` into the cache and verifies it; ``source`` itself is never changed.

    The cache name is that of the published file it is: the one with the same file name, else
    the one whose SHA-256 prefix the file's digest starts with (a renamed copy). A file that is
    none of ``known`` keeps its own name, verified by the hash in that name if it has one.

    Returns:
        The cached file, and the published weights it was recognised as (None if none).

    Raises:
        DownloadError: ``source`` is not a readable file, or its name cannot be cached.
        ChecksumError: its bytes do not match the hash of the name it is cached under.
    """
    if not source.is_file():
        raise DownloadError(f"{source}: no such file")
    candidates = list(known)
    match = next((w for w in candidates if w.filename == source.name), None)
    if match is None:
        try:
            digest = record.sha256_of(source)
        except OSError as exc:
            raise DownloadError(f"cannot read {source}: {exc.strerror or exc}") from None
        match = next((w for w in candidates if w.sha256 and digest.startswith(w.sha256)), None)
    if match is not None:
        dest, prefix = cached_path(match.url), match.sha256
    else:
        dest, prefix = cached_path(str(source)), expected_sha256_prefix(source.name)
    result = fetch_url(
        str(source),
        dest,
        sha256_prefix=prefix,
        force=force,
        on_progress=on_progress,
        on_status=on_status,
    )
    return result, match
