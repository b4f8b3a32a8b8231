"""Fetches a URL (or local file) into the cache: streamed, resumable, retried, verified, atomic.

One process at a time writes a cache file: it holds ``.locks/<name>.lock`` beside it (a
``filelock`` lock, which works across processes; the empty lock files stay) while the bytes go
to ``<dest>.part``, are verified and renamed to ``<dest>``. A later call resumes a ``.part``
with an HTTP Range request. So ``<dest>`` only ever appears complete and verified, and it can be
read without the lock.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import requests

from isaseg_cli.errors import ChecksumError, DownloadError
from isaseg_cli.hub import record
from isaseg_cli.hub.cache import cached_path, url_filename
from isaseg_cli.hub.lock import exclusive
from isaseg_cli.zoo.spec import WeightsSpec

ProgressFn = Callable[[int, int | None], None]
StatusFn = Callable[[str], None]

OPENMMLAB_HOST = "https://download.openmmlab.com"
CHUNK_BYTES = 1 << 16
# torch hub convention: "<stem>-<hex prefix of the SHA-256>.<ext>"
# (docs/FAITHFULNESS.md#zoo-and-checkpoint-names).
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


def download_advice(url: str, dest: Path) -> str:
    """What a user can do when ``url`` cannot be fetched into ``dest``."""
    steps = [f"put a copy at {dest}", "import a copy you have with `isaseg download FILE`"]
    if url.startswith(OPENMMLAB_HOST + "/"):
        now = os.environ.get("ISASEG_MIRROR")
        steps.append(
            f"set ISASEG_MIRROR (now {now})"
            if now
            else f"set ISASEG_MIRROR to a mirror of {OPENMMLAB_HOST}"
        )
    return "to get it another way: " + ", or ".join(steps)


def ensure_weights(
    weights: WeightsSpec,
    *,
    force: bool = False,
    on_progress: ProgressFn | None = None,
    on_status: StatusFn | None = None,
) -> Path:
    """Returns the local, verified path of a published checkpoint, downloading it if needed.

    Works offline (and on a read-only cache) when the file is already cached.

    Raises:
        DownloadError: the file is not cached and cannot be fetched.
        ChecksumError: the fetched file does not match ``weights.sha256``.
    """
    dest = cached_path(weights.url)
    result = fetch_url(
        weights.url,
        dest,
        sha256_prefix=weights.sha256,
        force=force,
        on_progress=on_progress,
        on_status=on_status,
    )
    return result.path


def fetch_url(
    url: str,
    dest: Path,
    *,
    sha256_prefix: str | None,
    force: bool = False,
    on_progress: ProgressFn | None = None,
    on_status: StatusFn | None = None,
    timeout: tuple[float, float] = (10, 60),
    retries: int = 4,
    backoff: float = 1.0,
) -> FetchResult:
    """Fetches ``url`` (http(s), ``file://`` or a local path) to ``dest`` and verifies it.

    A verified file already at ``dest`` is returned without any network access unless ``force``;
    one that fails verification is fetched again. A file whose name carries no hash is checked
    against the digest recorded when it was fetched, so a later change (a size change, a
    rewrite) is caught. Several processes may call this for one ``dest`` at once: one fetches,
    the others wait for it (saying so through ``on_status``) and then use its file.

    Args:
        url: The source; an ``https://download.openmmlab.com`` URL honours ``$ISASEG_MIRROR``.
        dest: The final path. Bytes go to ``<dest>.part`` first and are resumed from there.
        sha256_prefix: Lower-case hex the file's SHA-256 must start with; None skips the check.
        force: Fetch again even if ``dest`` exists and verifies (a partial file is discarded).
        on_progress: Called as ``(bytes_done, bytes_total_or_None)`` while transferring.
        on_status: Called with a one-line message when waiting for another process or retrying.
        timeout: (connect, read) timeouts in seconds for each HTTP request.
        retries: Further attempts after a timeout, a dropped connection or a 5xx answer; an
            unreachable host (connection refused, DNS failure) gets one retry at most.
        backoff: Seconds before the first retry; doubled for each further one.

    Raises:
        DownloadError: a 4xx answer, retries used up, a missing local file, or a write error
            (naming ``dest`` and what to do, never the hidden ``.part``).
        ChecksumError: the complete file does not match ``sha256_prefix`` (it is deleted).
    """
    expected = sha256_prefix.lower() if sha256_prefix else None
    if not force and (found := _cached(dest, expected)) is not None:
        return found
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(dest, on_status) as waited:
            if waited or not force:  # another process may have just finished it
                if (found := _cached(dest, expected)) is not None:
                    return found
            return _fetch_locked(
                url, dest, expected, force, on_progress, on_status, timeout, retries, backoff
            )
    except OSError as exc:
        if exc.errno == errno.ENOSPC:  # a partial file would keep the disk full
            _part(dest).unlink(missing_ok=True)
        raise _write_error(exc, dest) from None


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _exclusive(dest: Path, on_status: StatusFn | None) -> AbstractContextManager[bool]:
    """Holds ``dest``'s lock; yields whether another process held it first."""
    locks = dest.parent / ".locks"
    locks.mkdir(exist_ok=True)
    message = f"waiting for another download of {dest.name}"
    return exclusive(
        locks / f"{dest.name}.lock", None if on_status is None else lambda: on_status(message)
    )


def _cached(dest: Path, expected: str | None) -> FetchResult | None:
    """The finished file at ``dest`` if its bytes are still the right ones, else None."""
    if not dest.is_file():
        return None
    known = record.read_record(dest)
    stat = dest.stat()
    if expected is None and known is not None and known.size != stat.st_size:
        return None  # changed since it was fetched: no need to hash to know
    digest = record.current_digest(dest, known)
    reference = expected or (known.sha256 if known is not None else digest)
    if not digest.startswith(reference):
        return None
    if known != record.DigestRecord(digest, stat.st_size, stat.st_mtime_ns):
        record.write_record(dest, digest)
    return FetchResult(dest, stat.st_size, digest, downloaded=False)


def _fetch_locked(
    url: str,
    dest: Path,
    expected: str | None,
    force: bool,
    on_progress: ProgressFn | None,
    on_status: StatusFn | None,
    timeout: tuple[float, float],
    retries: int,
    backoff: float,
) -> FetchResult:
    """The fetch itself, with ``dest``'s lock held; ``dest`` is missing, corrupt or forced."""
    part = _part(dest)
    if not force and dest.exists():  # a corrupt copy (a forced fetch keeps it until replaced)
        dest.unlink()
        record.record_path(dest).unlink(missing_ok=True)
    if force:
        part.unlink(missing_ok=True)
    source = mirrored(url)
    local = _local_path(source)
    if local is None:
        try:
            _download(source, part, on_progress, on_status, timeout, retries, backoff)
        except DownloadError as exc:
            raise DownloadError(f"{exc}; {download_advice(url, dest)}") from None
    else:
        _copy(local, part, on_progress)
    digest = record.sha256_of(part)
    if expected is not None and not digest.startswith(expected):
        part.unlink(missing_ok=True)
        kept = "not copied into the cache" if local is not None else "the file was deleted"
        raise ChecksumError(
            f"{local or url_filename(url)}: SHA-256 mismatch, expected a digest starting with "
            f"{expected}, got {digest}; {kept}"
        )
    size = part.stat().st_size
    os.replace(part, dest)
    record.write_record(dest, digest)
    return FetchResult(dest, size, digest, downloaded=True)


def _write_error(exc: OSError, dest: Path) -> DownloadError:
    """A one-line error naming the real target (not ``.part``/``.lock``) and what to do."""
    where = Path(exc.filename) if exc.filename else dest
    if where.parent in (dest.parent, dest.parent / ".locks") and where.name.startswith(dest.name):
        where = dest
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC:
        advice = "free some space, or set ISASEG_HOME to a folder on another disk"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = f"make {dest.parent} writable, or set ISASEG_HOME to a writable folder"
    else:
        advice = "check the cache folder, or set ISASEG_HOME to another folder"
    return DownloadError(f"cannot write {where}: {reason}; {advice}")


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
    try:
        reader = source.open("rb")
    except OSError as exc:
        raise DownloadError(f"cannot read {source}: {exc.strerror or exc}") from None
    total = source.stat().st_size
    done = 0
    with reader, part.open("wb") as writer:
        while chunk := reader.read(CHUNK_BYTES):
            writer.write(chunk)
            done += len(chunk)
            if on_progress is not None:
                on_progress(done, total)


def _download(
    url: str,
    part: Path,
    on_progress: ProgressFn | None,
    on_status: StatusFn | None,
    timeout: tuple[float, float],
    retries: int,
    backoff: float,
) -> None:
    attempts = retries + 1
    with requests.Session() as session:
        # identity encoding: Content-Length then counts the bytes we write, which resume relies on
        session.headers.update({"User-Agent": "isaseg", "Accept-Encoding": "identity"})
        attempt = 1
        while True:
            try:
                _transfer(session, url, part, on_progress, timeout)
                return
            except (*_TRANSIENT, _Retryable) as exc:
                reason = _reason(exc)
                if reason in ("connection refused", "host not found"):
                    attempts = min(attempts, attempt + 1)  # offline: waiting rarely helps
                if attempt >= attempts:
                    tries = f"{attempts} attempts" if attempts > 1 else "1 attempt"
                    raise DownloadError(f"{url}: giving up after {tries} ({reason})") from None
                delay = backoff * 2 ** (attempt - 1)
                attempt += 1
                if on_status is not None:
                    on_status(f"retry {attempt}/{attempts} in {delay:g} s: {reason}")
                time.sleep(delay)
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
        causes = _causes(exc)
        if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
            return "connection refused"
        if any(isinstance(cause, socket.gaierror) for cause in causes):
            return "host not found"
        return "connection failed"
    return str(exc) or type(exc).__name__


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: requests -> urllib3 -> the socket error."""
    seen: list[BaseException] = []
    pending: list[object] = [exc]
    while pending:
        current = pending.pop()
        if not isinstance(current, BaseException) or any(current is s for s in seen):
            continue
        seen.append(current)
        pending += [getattr(current, "reason", None), current.__cause__, current.__context__]
        pending += list(current.args)
    return seen
