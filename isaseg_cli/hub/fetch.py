"""Fetches a URL (or local file) into the cache: streamed, resumable, retried, verified, atomic.

The final file appears (by ``os.replace``) only once complete and verified; until then the bytes
sit in ``<dest>.part``, which a later call resumes with an HTTP Range request.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import requests

from isaseg_cli.errors import ChecksumError, DownloadError
from isaseg_cli.hub.cache import cached_path, url_filename
from isaseg_cli.zoo.spec import WeightsSpec

ProgressFn = Callable[[int, int | None], None]

OPENMMLAB_HOST = "https://download.openmmlab.com"
CHUNK_BYTES = 1 << 16
# torch hub convention (ISANET.md §1.1): "<stem>-<hex prefix of the SHA-256>.<ext>".
_HASH_SUFFIX = re.compile(r"-([0-9a-f]{8,64})(?:\.[A-Za-z0-9]+)+$")


@dataclass(frozen=True, slots=True)
class FetchResult:
    """A verified local file; ``downloaded`` is False when it came from the cache."""

    path: Path
    bytes: int
    sha256: str
    downloaded: bool


_TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class _Retryable(Exception):
    """A transient failure (5xx, truncated body, bad resume) worth another attempt."""


def expected_sha256_prefix(filename: str) -> str | None:
    """The SHA-256 hex prefix a file name carries (``...-24f71dfa.pth`` -> ``24f71dfa``), if any."""
    match = _HASH_SUFFIX.search(Path(filename).name)
    return match.group(1) if match else None


def mirrored(url: str) -> str:
    """``url`` with ``https://download.openmmlab.com`` replaced by ``$ISASEG_MIRROR``, if set."""
    mirror = os.environ.get("ISASEG_MIRROR", "").rstrip("/")
    if mirror and url.startswith(OPENMMLAB_HOST + "/"):
        return mirror + url[len(OPENMMLAB_HOST) :]
    return url


def ensure_weights(
    weights: WeightsSpec, *, force: bool = False, on_progress: ProgressFn | None = None
) -> Path:
    """Returns the local, verified path of a published checkpoint, downloading it if needed.

    Works offline when the file is already cached.

    Raises:
        DownloadError: the file is not cached and cannot be fetched.
        ChecksumError: the fetched file does not match ``weights.sha256``.
    """
    dest = cached_path(weights.url)
    result = fetch_url(
        weights.url, dest, sha256_prefix=weights.sha256, force=force, on_progress=on_progress
    )
    return result.path


def fetch_url(
    url: str,
    dest: Path,
    *,
    sha256_prefix: str | None,
    force: bool = False,
    on_progress: ProgressFn | None = None,
    timeout: tuple[float, float] = (10, 60),
    retries: int = 4,
    backoff: float = 1.0,
) -> FetchResult:
    """Fetches ``url`` (http(s), ``file://`` or a local path) to ``dest`` and verifies it.

    A verified file already at ``dest`` is returned without any network access unless ``force``;
    one that fails verification is fetched again.

    Args:
        url: The source; an ``https://download.openmmlab.com`` URL honours ``$ISASEG_MIRROR``.
        dest: The final path. Bytes go to ``<dest>.part`` first and are resumed from there.
        sha256_prefix: Lower-case hex the file's SHA-256 must start with; None skips the check.
        force: Fetch again even if ``dest`` exists and verifies (a partial file is discarded).
        on_progress: Called as ``(bytes_done, bytes_total_or_None)`` while transferring.
        timeout: (connect, read) timeouts in seconds for each HTTP request.
        retries: Further attempts after a connection error, timeout or 5xx answer.
        backoff: Seconds before the first retry; doubled for each further one.

    Raises:
        DownloadError: a 4xx answer, retries used up, a missing local file, or a write error.
        ChecksumError: the complete file does not match ``sha256_prefix`` (it is deleted).
    """
    expected = sha256_prefix.lower() if sha256_prefix else None
    part = dest.with_name(dest.name + ".part")
    if dest.is_file() and not force:
        digest = _verified_digest(dest)
        if expected is None or digest.startswith(expected):
            return FetchResult(dest, dest.stat().st_size, digest, downloaded=False)
        dest.unlink()  # a corrupt cached copy: fetch it again
        _stamp_path(dest).unlink(missing_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if force:
        part.unlink(missing_ok=True)
    source = mirrored(url)
    try:
        local = _local_path(source)
        if local is None:
            _download(source, part, on_progress, timeout, retries, backoff)
        else:
            _copy(local, part, on_progress)
    except OSError as exc:
        raise DownloadError(f"cannot write {part}: {exc.strerror or exc}") from None
    digest = _sha256(part)
    if expected is not None and not digest.startswith(expected):
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"{url_filename(url)}: SHA-256 mismatch, expected a digest starting with {expected}, "
            f"got {digest}; the file was deleted"
        )
    size = part.stat().st_size
    os.replace(part, dest)
    _write_stamp(dest, digest)
    return FetchResult(dest, size, digest, downloaded=True)


def _local_path(url: str) -> Path | None:
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        path = Path(url2pathname(parsed.path))
    elif "://" in url:
        raise DownloadError(f"{url}: unsupported URL scheme {parsed.scheme!r}")
    else:
        path = Path(url).expanduser()
    if not path.is_file():
        raise DownloadError(f"{url}: no such file")
    return path


def _copy(source: Path, part: Path, on_progress: ProgressFn | None) -> None:
    total = source.stat().st_size
    done = 0
    with source.open("rb") as reader, part.open("wb") as writer:
        while chunk := reader.read(CHUNK_BYTES):
            writer.write(chunk)
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, total)
    shutil.copystat(source, part)


def _download(
    url: str,
    part: Path,
    on_progress: ProgressFn | None,
    timeout: tuple[float, float],
    retries: int,
    backoff: float,
) -> None:
    with requests.Session() as session:
        # identity encoding: Content-Length then counts the bytes we write, which resume relies on
        session.headers.update({"User-Agent": "isaseg", "Accept-Encoding": "identity"})
        for attempt in range(retries + 1):
            try:
                _transfer(session, url, part, on_progress, timeout)
                return
            except (*_TRANSIENT, _Retryable) as exc:
                if attempt == retries:
                    tries = f"{retries + 1} attempts" if retries else "1 attempt"
                    message = f"{url}: giving up after {tries} ({_reason(exc)})"
                    raise DownloadError(message) from None
                time.sleep(backoff * 2**attempt)
            except requests.RequestException as exc:  # a malformed URL, too many redirects, ...
                raise DownloadError(f"{url}: {exc}") from None


def _transfer(
    session: requests.Session,
    url: str,
    part: Path,
    on_progress: ProgressFn | None,
    timeout: tuple[float, float],
) -> None:
    """One HTTP attempt that appends to ``part`` (or restarts it) until the body ends."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        status = response.status_code
        if status == 416:  # nothing left after offset: done if the .part is exactly the file
            if _range_total(response) == offset:
                return
            part.unlink()
            raise _Retryable("HTTP 416 for a partial file of the wrong size")
        if status >= 500:
            raise _Retryable(f"HTTP {status} {response.reason}")
        if status >= 400:
            raise DownloadError(f"{url}: HTTP {status} {response.reason}")
        if status == 206 and _range_start(response) != offset:
            part.unlink()
            raise _Retryable("the server resumed at the wrong offset")
        if status != 206:
            offset = 0  # the server ignored Range (or none was sent): start over
        length = response.headers.get("Content-Length", "")
        total = offset + int(length) if length.isdigit() else None
        done = offset
        with part.open("ab" if offset else "wb") as writer:
            if on_progress is not None:
                on_progress(done, total)
            for chunk in response.iter_content(CHUNK_BYTES):
                writer.write(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, total)
        if total is not None and done < total:
            raise _Retryable(f"connection closed after {done} of {total} bytes")


def _range_start(response: requests.Response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _range_total(response: requests.Response) -> int | None:
    match = re.match(r"bytes [^/]*/(\d+)", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError):
        return "connection failed"
    return str(exc) or type(exc).__name__


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp_key(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}"


def _write_stamp(path: Path, digest: str) -> None:
    """Remembers the digest of a verified file beside it, keyed by its size and mtime."""
    stamp = _stamp_path(path)
    tmp = stamp.with_name(stamp.name + ".tmp")
    try:
        tmp.write_text(f"{digest} {_stamp_key(path)}\n")
        os.replace(tmp, stamp)
    except OSError:  # a read-only cache still works, it just hashes again next time
        tmp.unlink(missing_ok=True)


def _verified_digest(path: Path) -> str:
    """The file's SHA-256, from its stamp when size and mtime are unchanged (hashing a 200 MB
    checkpoint costs about half a second at every start), else computed and stamped."""
    try:
        digest, key = _stamp_path(path).read_text().strip().split(" ", 1)
        if key == _stamp_key(path):
            return digest
    except (OSError, ValueError):
        pass
    digest = _sha256(path)
    _write_stamp(path, digest)
    return digest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
