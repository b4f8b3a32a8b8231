"""hub.fetch against a local HTTP server on 127.0.0.1: resume, retries, checksums, atomicity."""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from filelock import FileLock

from isaseg_cli.errors import ChecksumError, DownloadError
from isaseg_cli.hub import fetch, record
from isaseg_cli.hub.cache import cache_dir, cached_path, is_cached
from isaseg_cli.hub.fetch import ensure_weights, expected_sha256_prefix, fetch_url
from isaseg_cli.zoo.spec import WeightsSpec

PAYLOAD = random.Random(0).randbytes(300_000)  # several CHUNK_BYTES chunks
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
NAME = f"model_20210903_111319-{DIGEST[:8]}.pth"


@dataclass
class Behaviour:
    """How the server answers; ``requests`` records the Range header of every GET."""

    honour_range: bool = True
    cut_first: int = 0  # this many responses stop half way through the body
    fail_first: int = 0  # this many responses are HTTP 500
    requests: list[str | None] = field(default_factory=list)


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        how = self.server.behaviour
        how.requests.append(self.headers.get("Range"))
        if not self.path.endswith(NAME):
            self.send_error(404)
            return
        if how.fail_first > 0:
            how.fail_first -= 1
            self.send_error(500)
            return
        start = 0
        if how.honour_range and self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if how.cut_first > 0:
            how.cut_first -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    behaviour: Behaviour


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.behaviour = Behaviour()
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def url_of(server: Server, name: str = NAME) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/files/{name}"


def visible(folder: Path) -> list[str]:
    """The names a user sees in a folder: not the hidden ``.locks`` the lock files live in."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def get(url: str, dest: Path, **kwargs: object) -> fetch.FetchResult:
    kwargs.setdefault("sha256_prefix", DIGEST[:8])
    return fetch_url(url, dest, backoff=0, timeout=(2, 5), **kwargs)  # type: ignore[arg-type]


def test_clean_download_reports_progress(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    seen: list[tuple[int, int | None]] = []
    result = get(url_of(server), dest, on_progress=lambda done, total: seen.append((done, total)))
    assert result.downloaded and result.path == dest and result.sha256 == DIGEST
    assert result.bytes == len(PAYLOAD) and dest.read_bytes() == PAYLOAD
    assert not dest.with_name(NAME + ".part").exists()
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert server.behaviour.requests == [None]


def test_cut_transfer_is_resumed_with_range(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    part = dest.with_name(NAME + ".part")
    server.behaviour.cut_first = 1
    with pytest.raises(DownloadError, match="giving up after 1 attempt "):
        get(url_of(server), dest, retries=0)
    kept = part.read_bytes()  # whole chunks received before the cut
    assert not dest.exists() and 0 < len(kept) <= len(PAYLOAD) // 2 and PAYLOAD.startswith(kept)
    result = get(url_of(server), dest)
    assert result.downloaded and dest.read_bytes() == PAYLOAD
    assert server.behaviour.requests == [None, f"bytes={len(kept)}-"]


def test_cut_transfer_is_resumed_within_one_call(server: Server, tmp_path: Path) -> None:
    server.behaviour.cut_first = 2
    result = get(url_of(server), tmp_path / NAME)
    assert result.sha256 == DIGEST
    first, second, third = server.behaviour.requests
    assert first is None
    offsets = [int(r.removeprefix("bytes=").rstrip("-")) for r in (second, third)]  # type: ignore[union-attr]
    assert 0 < offsets[0] < offsets[1] < len(PAYLOAD)


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    dest.with_name(NAME + ".part").write_bytes(b"stale bytes that must not survive")
    server.behaviour.honour_range = False
    result = get(url_of(server), dest)
    assert dest.read_bytes() == PAYLOAD and result.bytes == len(PAYLOAD)
    assert server.behaviour.requests == ["bytes=33-"]


def test_complete_part_file_gets_416_and_is_finished(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    dest.with_name(NAME + ".part").write_bytes(PAYLOAD)
    assert get(url_of(server), dest).sha256 == DIGEST
    assert server.behaviour.requests == [f"bytes={len(PAYLOAD)}-"]


def test_404_fails_at_once(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        get(url_of(server, "missing-0123abcd.pth"), tmp_path / "missing-0123abcd.pth")
    assert len(server.behaviour.requests) == 1  # no retries for a client error
    assert visible(tmp_path) == []


def test_500_is_retried_until_success(server: Server, tmp_path: Path) -> None:
    server.behaviour.fail_first = 2
    assert get(url_of(server), tmp_path / NAME, retries=2).sha256 == DIGEST
    assert len(server.behaviour.requests) == 3


def test_500_beyond_the_retries_is_an_error(server: Server, tmp_path: Path) -> None:
    server.behaviour.fail_first = 5
    with pytest.raises(DownloadError, match="giving up after 3 attempts.*HTTP 500"):
        get(url_of(server), tmp_path / NAME, retries=2)
    assert not (tmp_path / NAME).exists()


def test_hash_mismatch_deletes_the_file(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    message = f"expected a digest starting with 00000000, got {DIGEST}; the file was deleted"
    with pytest.raises(ChecksumError, match=message):
        get(url_of(server), dest, sha256_prefix="00000000")
    assert visible(tmp_path) == []


def test_cached_file_is_used_with_the_server_down(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    url = url_of(server)
    get(url, dest)
    server.shutdown()
    server.server_close()
    again = get(url, dest)
    assert not again.downloaded and again.sha256 == DIGEST
    with pytest.raises(DownloadError, match="connection refused"):
        get(url, dest, force=True, retries=1)
    assert dest.read_bytes() == PAYLOAD  # a failed forced download keeps the verified copy


def test_corrupt_cached_file_is_fetched_again(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    dest.write_bytes(b"truncated")
    result = get(url_of(server), dest)
    assert result.downloaded and dest.read_bytes() == PAYLOAD


def test_interrupt_leaves_only_a_resumable_part(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / NAME

    def interrupt(done: int, total: int | None) -> None:
        if done >= fetch.CHUNK_BYTES:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        get(url_of(server), dest, on_progress=interrupt)
    part = dest.with_name(NAME + ".part")
    assert not dest.exists() and 0 < part.stat().st_size < len(PAYLOAD)
    assert get(url_of(server), dest).sha256 == DIGEST
    assert server.behaviour.requests[-1] == f"bytes={fetch.CHUNK_BYTES}-"


def test_local_paths_and_file_urls_are_copied_and_verified(tmp_path: Path) -> None:
    source = tmp_path / "src" / NAME
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    assert get(str(source), tmp_path / "a" / NAME).sha256 == DIGEST
    assert get(source.as_uri(), tmp_path / "b" / NAME).path.read_bytes() == PAYLOAD
    with pytest.raises(ChecksumError):
        get(str(source), tmp_path / "c" / NAME, sha256_prefix="ffffffff")
    with pytest.raises(DownloadError, match="no such file"):
        get(str(tmp_path / "nothing.pth"), tmp_path / "d.pth")
    with pytest.raises(DownloadError, match="unsupported URL scheme 'ftp'"):
        get("ftp://example.org/x.pth", tmp_path / "e.pth")


def test_mirror_replaces_the_openmmlab_host(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISASEG_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/")
    result = get(f"https://download.openmmlab.com/files/{NAME}", tmp_path / NAME)
    assert result.sha256 == DIGEST


def test_ensure_weights_downloads_into_the_cache_once(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
    weights = WeightsSpec(url=url_of(server), sha256=DIGEST[:8])
    assert not is_cached(weights.url)
    path = ensure_weights(weights)
    assert path == tmp_path / "home" / "checkpoints" / NAME == cached_path(weights.url)
    assert is_cached(weights.url)
    assert ensure_weights(weights) == path
    assert len(server.behaviour.requests) == 1


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ISASEG_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "isaseg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "isaseg"
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home"
    with pytest.raises(DownloadError, match="does not end in a file name"):
        cached_path("https://example.org/dir/")


@pytest.mark.parametrize(
    ("filename", "prefix"),
    [
        ("isanet_r101-d8_769x769_80k_cityscapes_20210903_111319-24f71dfa.pth", "24f71dfa"),
        ("resnet50_v1c-2cccc1ad.pth", "2cccc1ad"),
        ("resnet18-f37072fd.tar.gz", "f37072fd"),
        ("isanet_r50-d8_512x1024_40k_cityscapes_20210901_054739.log.json", None),
        ("weights-abc.pth", None),  # fewer than 8 hex digits is not a hash
        ("plain.pth", None),
    ],
)
def test_expected_sha256_prefix(filename: str, prefix: str | None) -> None:
    assert expected_sha256_prefix(filename) == prefix


def test_verified_digest_is_stamped_and_a_changed_file_is_hashed_again(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / NAME
    get(url_of(server), dest)
    hashed: list[Path] = []
    real = record.sha256_of
    monkeypatch.setattr(record, "sha256_of", lambda path: hashed.append(path) or real(path))
    assert not get(url_of(server), dest).downloaded
    assert hashed == []  # the stamp beside the file vouches for it: no re-hash at start-up
    dest.write_bytes(b"x" * len(PAYLOAD))  # same size, new content and mtime
    result = get(url_of(server), dest)
    assert hashed and result.downloaded and dest.read_bytes() == PAYLOAD


def test_retries_are_announced_on_one_line_each(server: Server, tmp_path: Path) -> None:
    server.behaviour.fail_first = 2
    said: list[str] = []
    assert get(url_of(server), tmp_path / NAME, retries=3, on_status=said.append).sha256 == DIGEST
    assert said == [
        "retry 2/4 in 0 s: HTTP 500 Internal Server Error",
        "retry 3/4 in 0 s: HTTP 500 Internal Server Error",
    ]


def test_a_refused_connection_is_retried_once_only(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    said: list[str] = []
    dest = tmp_path / "cache" / NAME
    with pytest.raises(DownloadError) as caught:
        get(f"http://127.0.0.1:{port}/{NAME}", dest, retries=4, on_status=said.append)
    assert said == ["retry 2/2 in 0 s: connection refused"]
    message = str(caught.value)
    assert "giving up after 2 attempts (connection refused)" in message
    assert f"put a copy at {dest}" in message and "`isaseg download FILE`" in message
    assert "ISASEG_MIRROR" not in message  # not an openmmlab URL: a mirror would not help


def test_a_waiter_uses_the_file_the_lock_holder_finished(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / NAME
    (tmp_path / ".locks").mkdir()
    holder = FileLock(tmp_path / ".locks" / f"{NAME}.lock")
    holder.acquire()
    said: list[str] = []
    results: list[fetch.FetchResult] = []
    waiter = threading.Thread(
        target=lambda: results.append(get(url_of(server), dest, on_status=said.append))
    )
    waiter.start()
    deadline = time.monotonic() + 10
    while not said and time.monotonic() < deadline:
        time.sleep(0.01)
    assert said == [f"waiting for another download of {NAME}"]
    dest.write_bytes(PAYLOAD)  # what the holder does: the finished file appears, then unlock
    holder.release()
    waiter.join(10)
    assert results and not results[0].downloaded and results[0].sha256 == DIGEST
    assert server.behaviour.requests == []


def test_an_unhashed_file_is_checked_against_its_recorded_digest(
    server: Server, tmp_path: Path
) -> None:
    dest = tmp_path / "plain.pth"
    url = url_of(server)  # served under NAME, cached under a name without a hash
    assert get(url, dest, sha256_prefix=None).downloaded
    assert record.read_record(dest) == record.DigestRecord(
        DIGEST, len(PAYLOAD), dest.stat().st_mtime_ns
    )
    assert not get(url, dest, sha256_prefix=None).downloaded
    dest.write_bytes(bytes(len(PAYLOAD)))  # same size, other bytes
    assert get(url, dest, sha256_prefix=None).downloaded and dest.read_bytes() == PAYLOAD
    with dest.open("ab") as grown:
        grown.write(b"tail")
    assert get(url, dest, sha256_prefix=None).downloaded and dest.read_bytes() == PAYLOAD
    assert len(server.behaviour.requests) == 3
