"""Where downloads live: ``$ISASEG_HOME``, else the user cache (``~/.cache/isaseg``)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlparse

from isaseg_cli.errors import DownloadError

# Beside each cached file the hub keeps "<name>.part" and "<name>.sha256" (+ ".tmp"); a URL
# whose name ends like one of them would collide with another file's.
RESERVED_SUFFIXES = (".part", ".sha256", ".tmp")
# 255 bytes is the usual file-name limit; leave room for the longest suffix above.
MAX_NAME_BYTES = 255 - len(".sha256.tmp")  # ".lock" is shorter


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


def checkpoint_dir() -> Path:
    """The folder that holds every cached file (not created here)."""
    return cache_dir() / "checkpoints"


def url_filename(url: str) -> str:
    """The file name at the end of a URL or local path (query and fragment dropped)."""
    if "://" in url:
        return unquote(urlparse(url).path).rsplit("/", 1)[-1]
    return Path(url).name


def cached_path(url: str) -> Path:
    """Where the file behind ``url`` is (or would be) cached: ``<cache_dir>/checkpoints/<name>``.

    The name is the URL's last path segment, percent-decoded, used only if it is a plain file
    name; nothing a server or a URL says can point outside the cache folder.

    Raises:
        DownloadError: the URL does not end in a usable file name (the message says why).
    """
    if "://" in url:
        segment = urlparse(url).path.rsplit("/", 1)[-1]
        if not segment:
            raise DownloadError(f"{url}: the URL does not end in a file name")
        try:
            name = unquote(segment, errors="strict")
        except UnicodeDecodeError:
            raise DownloadError(f"{url}: the file name is not UTF-8 once %-decoded") from None
    else:
        name = Path(url).name
        if not name:
            raise DownloadError(f"{url}: the path does not end in a file name")
    problem = _name_problem(name)
    if problem:
        raise DownloadError(f"{url}: cannot cache a file named {name!r}: {problem}")
    return checkpoint_dir() / name


def is_cached(url: str) -> bool:
    """Whether the file behind ``url`` is in the cache (a finished download, not a ``.part``)."""
    return cached_path(url).is_file()


def _name_problem(name: str) -> str | None:
    """Why ``name`` is not a safe file name inside the cache folder, or None."""
    if name in (".", ".."):
        return "it names a folder, not a file"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if any(ord(char) < 32 or ord(char) == 127 for char in name):
        return "it contains a control character"
    if name.startswith("."):
        return "hidden names are reserved for the cache's own files (.locks)"
    if name.endswith(RESERVED_SUFFIXES):
        return f"names ending in {', '.join(RESERVED_SUFFIXES)} are reserved for the cache"
    if len(name.encode()) > MAX_NAME_BYTES:
        return f"it is {len(name.encode())} bytes long, at most {MAX_NAME_BYTES} fit"
    return None
