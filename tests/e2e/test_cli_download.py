"""`isaseg download` end to end: real CLI processes against a throttled, Range-aware HTTP server
on 127.0.0.1, hostile URLs, read-only and full caches, offline failures and local imports."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from typer.testing import CliRunner

from isaseg_cli.cli import app
from tests.hostile import tmpfs

runner = CliRunner()
PAYLOAD = random.Random(1).randbytes(1 << 20)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()
HASHED = f"tiny_20240101_000000-{DIGEST[:8]}.pth"
R101_CITY_FILE = "isanet_r101-d8_769x769_80k_cityscapes_20210903_111319-24f71dfa.pth"
REPO = Path(__file__).resolve().parents[2]


class Files(ThreadingHTTPServer):
    """Serves ``files`` (name -> bytes) by name; after the first 64 KB chunk of a body it waits
    for the file's event in ``gates`` (if a test holds it open), then ``delay`` s per chunk."""

    files: dict[str, bytes]
    delay: float
    gets: list[str]
    ranges: list[str | None]
    gates: dict[str, threading.Event]

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that gives up mid-body (a full disk, a kill) is what tests do here


class Handler(BaseHTTPRequestHandler):
    server: Files

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.server.gets.append(self.path)
        self.server.ranges.append(self.headers.get("Range"))
        name = unquote(urlsplit(self.path).path.rsplit("/", 1)[-1])
        body = self.server.files.get(name)
        if body is None:
            self.send_error(404)
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        for offset in range(start, len(body), 1 << 16):
            self.wfile.write(body[offset : offset + (1 << 16)])
            if name in self.server.gates:
                self.server.gates[name].wait(30)
            time.sleep(self.server.delay)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Files]:
    httpd = Files(("127.0.0.1", 0), Handler)
    httpd.files, httpd.delay, httpd.gets, httpd.ranges = {}, 0.0, [], []
    httpd.gates = {}
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def base(server: Files) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ISASEG_MIRROR", raising=False)
    return tmp_path / "home"


def visible(folder: Path) -> list[str]:
    """What a user sees in the cache folder (the lock files live in the hidden ``.locks``)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def isaseg(*args: str, home: Path, **env: str) -> subprocess.Popen[str]:
    """A real ``python -m isaseg_cli`` process (this checkout first on the path)."""
    environ = {**os.environ, "PYTHONPATH": str(REPO), "ISASEG_HOME": str(home), **env}
    environ.pop("ISASEG_MIRROR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "isaseg_cli", *args],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_four_concurrent_downloads_leave_one_intact_file(server: Files, tmp_path: Path) -> None:
    names = [HASHED, "plain_weights.pth"]  # with and without a hash to check against
    for name in names:
        server.files[name] = PAYLOAD
        server.gates[name] = threading.Event()  # a transfer stays open until all runs wait
    home = tmp_path / "home"
    urls = [f"{base(server)}/files/{name}" for name in names]
    runs = [isaseg("download", *urls, home=home) for _ in range(4)]  # each fetches both
    errs: list[list[str]] = [[] for _ in runs]
    readers = [
        threading.Thread(target=lambda run=run, lines=lines: lines.extend(run.stderr), daemon=True)
        for run, lines in zip(runs, errs, strict=True)
    ]
    for reader in readers:
        reader.start()

    def waiting(name: str) -> int:
        line = f"waiting for another download of {name}"
        return sum(any(line in text for text in lines) for lines in errs)

    def asked(name: str) -> int:
        return sum(path.endswith(name) for path in server.gets)

    deadline = time.monotonic() + 60
    for name in names:  # each run either waits for the lock or (unlocked) asks the server
        while waiting(name) + asked(name) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.gates[name].set()
    for run in runs:  # stdout is a few lines: it fits the pipe, so waiting cannot block
        run.wait(timeout=60)
    for reader in readers:  # before the pipes close, so no reader meets a closed file
        reader.join(10)
    outs = []
    for run in runs:
        outs.append(run.stdout.read())
        run.stdout.close()
        run.stderr.close()
    for run, lines in zip(runs, errs, strict=True):
        assert run.returncode == 0, "".join(lines)
        assert not any("Traceback" in line for line in lines)
    folder = home / "checkpoints"
    assert visible(folder) == sorted([*names, *(f"{name}.sha256" for name in names)])
    for name in names:
        assert (asked(name), waiting(name)) == (1, 3), name  # one writer, three waiters
        assert (folder / name).read_bytes() == PAYLOAD
        assert sum(f"{name}  (downloaded," in out for out in outs) == 1
        assert sum(f"{name}  (already cached," in out for out in outs) == 3
    again = isaseg("download", *urls, home=home)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0 and out.count("already cached") == 2, err


def test_unhashed_file_that_changed_size_is_fetched_again(server: Files, home: Path) -> None:
    server.files["plain.pth"] = PAYLOAD
    url = f"{base(server)}/plain.pth"
    assert runner.invoke(app, ["download", url]).exit_code == 0
    cached = home / "checkpoints" / "plain.pth"
    with cached.open("ab") as grown:  # what a second, unlocked writer used to do
        grown.write(b"more bytes")
    result = runner.invoke(app, ["download", url])
    assert result.exit_code == 0, result.output
    assert "(downloaded," in result.output and cached.read_bytes() == PAYLOAD
    assert len(server.gets) == 2


@pytest.mark.parametrize(
    ("path", "safe_name"),
    [
        ("/.", None),
        ("/x/%2e", None),
        ("/%2e%2e", None),
        ("/x/%2E%2e", None),
        ("/", None),
        ("/dir/", None),
        ("/evil%00.pth", None),
        ("/a%2Fb.pth", None),
        ("/a%5Cb.pth", None),
        ("/..%2F..%2Fescape.pth", None),
        ("/%ff%fe.pth", None),
        ("/.hidden.pth", None),
        ("/w.pth.part", None),
        ("/w.pth.sha256", None),
        ("/new%0Aline.pth", None),
        ("/" + "n" * 300 + ".pth", None),
        ("/ok%20name.pth", "ok name.pth"),
        ("/caf%C3%A9.pth?x=1#frag", "café.pth"),
    ],
)
def test_hostile_url_names_are_refused_or_made_safe(
    server: Files, home: Path, path: str, safe_name: str | None
) -> None:
    server.files.update({"good.pth": PAYLOAD, (safe_name or "-"): PAYLOAD})
    url = base(server) + path
    result = runner.invoke(app, ["download", url])
    assert "Traceback" not in result.output
    if safe_name is None:
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and url in lines[0]
        assert server.gets == []  # refused before any request
    else:
        assert result.exit_code == 0, result.output
        assert (home / "checkpoints" / safe_name).read_bytes() == PAYLOAD
    assert [p.name for p in home.parent.iterdir()] in ([], ["home"])  # nothing escaped
    folder = home / "checkpoints"
    assert all(p.parent in (folder, folder / ".locks") for p in home.rglob("*") if p.is_file())
    after = runner.invoke(app, ["download", f"{base(server)}/good.pth"])
    assert after.exit_code == 0, after.output
    assert (home / "checkpoints" / "good.pth").read_bytes() == PAYLOAD


def test_offline_fails_fast_with_the_next_steps(home: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/files/{HASHED}"
    started = time.monotonic()
    result = runner.invoke(app, ["download", url])
    assert time.monotonic() - started < 5  # one retry for a refused connection, not 20 s
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "retry 2/2 in 1 s: connection refused" in result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1
    assert "giving up after 2 attempts (connection refused)" in error[0]
    assert str(home / "checkpoints" / HASHED) in error[0]
    assert "isaseg download FILE" in error[0]


def test_zoo_download_failure_names_the_mirror(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    monkeypatch.setenv("ISASEG_MIRROR", f"http://127.0.0.1:{port}")
    result = runner.invoke(app, ["download", "isanet_r101_cityscapes"])
    assert result.exit_code == 2
    assert f"set ISASEG_MIRROR (now http://127.0.0.1:{port})" in result.output
    assert str(home / "checkpoints" / R101_CITY_FILE) in result.output


def closed_port() -> int:
    """A local port nothing listens on (bound, then closed again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_local_file_is_imported_and_verified(home: Path, tmp_path: Path) -> None:
    source = tmp_path / "from-a-browser" / HASHED
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    result = runner.invoke(app, ["download", str(source)])
    assert result.exit_code == 0, result.output
    assert "imported from" in result.output and "sha256 verified" in result.output
    assert (home / "checkpoints" / HASHED).read_bytes() == PAYLOAD
    wrong = tmp_path / "from-a-browser" / "tiny_20240101_000000-00000000.pth"
    wrong.write_bytes(PAYLOAD)
    bad = runner.invoke(app, ["download", str(wrong)])
    assert bad.exit_code == 2 and "not copied into the cache" in bad.output
    assert wrong.read_bytes() == PAYLOAD and not (home / "checkpoints" / wrong.name).exists()


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "terminal"])
def test_progress_bar_fits_80_columns(server: Files, tmp_path: Path, terminal: bool) -> None:
    name = "isanet_r101-d8_769x769_80k_cityscapes_20210903_111319-" + DIGEST[:8] + ".pth"
    server.files[name] = PAYLOAD
    server.delay = 0.02  # several frames of the live bar
    env = {"COLUMNS": "80", **({"FORCE_COLOR": "1"} if terminal else {})}
    run = isaseg("download", f"{base(server)}/{name}", home=tmp_path / "home", **env)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    plain = re.sub(r"\x1b\[[0-9;]*m", "", err)  # colours; cursor moves end a frame's line
    frames = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "\n", plain).replace("\r", "\n").splitlines()
    frames = [line for line in frames if line.strip()]
    assert frames and all(len(line) <= 80 for line in frames), frames
    assert ("\x1b[" in err) is terminal  # the live bar redraws itself only on a terminal
    bars = [line for line in frames if "/1.0 MB" in line]
    assert any("1.0/1.0 MB" in line for line in bars)
    assert all(line.startswith("isanet_r101") for line in bars)  # label, bar, figures: one line
    assert name in out  # the full path is printed once the bar is done


@pytest.fixture
def mounts() -> Iterator[Callable[[Path, str], Path]]:
    """Mounts small tmpfs file systems (``tests.hostile.tmpfs``), unmounted after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda folder, options: stack.enter_context(tmpfs(folder, options))


def test_read_only_cache_is_a_one_line_error(
    server: Files,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mounts: Callable[[Path, str], Path],
) -> None:
    server.files[HASHED] = PAYLOAD
    ro = tmp_path / "ro"
    mounts(ro, "ro,size=1m")
    monkeypatch.setenv("ISASEG_HOME", str(ro / "home"))
    result = runner.invoke(app, ["download", f"{base(server)}/{HASHED}"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot write {ro / 'home'}")
    assert "ISASEG_HOME" in lines[0] and server.gets == []


def test_full_disk_is_a_one_line_error_naming_the_file(
    server: Files,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mounts: Callable[[Path, str], Path],
) -> None:
    server.files[HASHED] = PAYLOAD  # 1 MB into a 256 KB file system
    small = tmp_path / "small"
    mounts(small, "size=256k")
    monkeypatch.setenv("ISASEG_HOME", str(small))
    result = runner.invoke(app, ["download", f"{base(server)}/{HASHED}"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert error == [
        f"error: cannot write {small / 'checkpoints' / HASHED}: No space left on device; "
        "free some space, or set ISASEG_HOME to a folder on another disk"
    ]
    assert visible(small / "checkpoints") == []  # the partial file is removed, freeing the disk
    monkeypatch.setenv("ISASEG_HOME", str(tmp_path / "roomy"))
    assert runner.invoke(app, ["download", f"{base(server)}/{HASHED}"]).exit_code == 0


def test_download_zoo_name_uses_the_mirror_and_verifies(
    server: Files, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISASEG_MIRROR", base(server))
    server.files[R101_CITY_FILE] = PAYLOAD  # not the real file: its hash cannot match
    result = runner.invoke(app, ["download", "isanet_r101_cityscapes"])
    assert result.exit_code == 2
    assert "expected a digest starting with 24f71dfa" in result.output
    assert "the file was deleted" in result.output
    assert visible(home / "checkpoints") == []
    assert server.gets == ["/mmsegmentation/v0.5/isanet/isanet_r101-d8_769x769_80k_cityscapes/"
                           + R101_CITY_FILE]  # fmt: skip


def test_download_pretrained_only_fetches_the_backbone(
    server: Files, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ISASEG_MIRROR", base(server))
    server.files["resnet50_v1c-2cccc1ad.pth"] = PAYLOAD
    result = runner.invoke(app, ["download", "isanet_r50_ade20k", "--pretrained-only"])
    assert result.exit_code == 2  # served and checked against the backbone's own hash
    assert "resnet50_v1c-2cccc1ad.pth" in result.output and "2cccc1ad" in result.output
    assert server.gets == ["/pretrain/third_party/resnet50_v1c-2cccc1ad.pth"]


def test_download_url_into_the_cache(server: Files, home: Path) -> None:
    server.files[HASHED] = PAYLOAD
    result = runner.invoke(app, ["download", f"{base(server)}/{HASHED}"])
    assert result.exit_code == 0, result.output
    assert (home / "checkpoints" / HASHED).read_bytes() == PAYLOAD
    assert "downloaded" in result.output and "sha256 verified" in result.output
    server.files.clear()  # the second run must not need the server
    again = runner.invoke(app, ["download", f"{base(server)}/{HASHED}"])
    assert again.exit_code == 0 and "already cached" in again.output


def test_predict_offline_says_how_to_use_a_local_checkpoint(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_image_path: Path
) -> None:
    monkeypatch.setenv("ISASEG_MIRROR", f"http://127.0.0.1:{closed_port()}")
    args = ["predict", str(tiny_image_path), "--model", "isanet_r50_cityscapes"]
    result = runner.invoke(app, [*args, "--device", "cpu", "--out", str(tmp_path / "m.png")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    error = " ".join(result.output.split())  # rich may wrap the one long line
    assert "connection refused" in error and "isaseg download FILE" in error
    assert "--checkpoint FILE --model isanet_r50-d8_4xb2-80k_cityscapes-769x769" in error
    assert "retry 2/2 in 1 s: connection refused" in error  # not silence while it retries
    assert not (tmp_path / "m.png").exists()


def test_train_offline_says_how_to_start_without_the_backbone(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, city_root: Path
) -> None:
    from tests.helpers import TINY_TRAIN_OPTIONS

    monkeypatch.setenv("ISASEG_MIRROR", f"http://127.0.0.1:{closed_port()}")
    args = ["train", "--data-root", str(city_root), "--work-dir", str(tmp_path / "w")]
    args += TINY_TRAIN_OPTIONS
    result = runner.invoke(app, [*args, "--max-iters", "1", "--batch-size", "2"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    error = " ".join(result.output.split())
    assert str(home / "checkpoints" / "resnet50_v1c-2cccc1ad.pth") in error
    assert "--pretrained FILE or --pretrained none" in error
    assert "retry 2/2 in 1 s: connection refused" in error


def test_a_killed_download_releases_its_lock_and_resumes(server: Files, tmp_path: Path) -> None:
    server.files[HASHED] = PAYLOAD
    server.gates[HASHED] = threading.Event()  # the transfer stalls after its first chunk
    home = tmp_path / "home"
    url = f"{base(server)}/{HASHED}"
    first = isaseg("download", url, home=home)
    part = home / "checkpoints" / f"{HASHED}.part"
    deadline = time.monotonic() + 30
    while not (part.exists() and part.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    first.kill()  # SIGKILL: no cleanup runs, the OS drops the lock
    first.communicate(timeout=30)
    server.gates[HASHED].set()
    again = isaseg("download", url, home=home)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert "waiting" not in err and "(downloaded," in out
    assert server.ranges[0] is None and server.ranges[1] == "bytes=65536-"  # resumed
    assert (home / "checkpoints" / HASHED).read_bytes() == PAYLOAD and not part.exists()


def test_a_cached_file_on_a_read_only_cache_still_works(
    server: Files,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    mounts: Callable[[Path, str], Path],
) -> None:
    server.files[HASHED] = PAYLOAD
    cache = tmp_path / "cache"
    mounts(cache, "size=4m")
    monkeypatch.setenv("ISASEG_HOME", str(cache))
    url = f"{base(server)}/{HASHED}"
    assert runner.invoke(app, ["download", url]).exit_code == 0
    remount = subprocess.run(["mount", "-o", "remount,ro", str(cache)], capture_output=True)
    if remount.returncode != 0:
        pytest.skip(f"cannot remount read-only: {remount.stderr.decode().strip()}")
    server.files.clear()
    result = runner.invoke(app, ["download", url])
    assert result.exit_code == 0 and "already cached" in result.output, result.output
