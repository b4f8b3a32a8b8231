"""Where downloads live: ``$ISASEG_HOME``, else the user cache (``~/.cache/isaseg``)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from isaseg_cli.errors import DownloadError


def cache_dir() -> Path:
    """The isaseg cache root, read from the environment on every call (it is not created here).

    ``$ISASEG_HOME`` wins, then ``$XDG_CACHE_HOME/isaseg``, then ``~/.cache/isaseg``.
    """
    home = os.environ.get("ISASEG_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "isaseg"
    return Path.home() / ".cache" / "isaseg"


def url_filename(url: str) -> str:
    """The file name at the end of a URL or local path (query and fragment dropped)."""
    if "://" in url:
        return unquote(urlparse(url).path).rsplit("/", 1)[-1]
    return Path(url).name


def cached_path(url: str) -> Path:
    """Where the file behind ``url`` is (or would be) cached: ``<cache_dir>/checkpoints/<name>``.

    Raises:
        DownloadError: if the URL does not end in a file name.
    """
    name = url_filename(url)
    if not name:
        raise DownloadError(f"{url}: the URL does not end in a file name")
    return cache_dir() / "checkpoints" / name


def is_cached(url: str) -> bool:
    """Whether the file behind ``url`` is in the cache (a finished download, not a ``.part``)."""
    return cached_path(url).is_file()
