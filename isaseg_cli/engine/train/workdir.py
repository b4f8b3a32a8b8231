"""The work dir of a training run: which files are the run's, so that two runs never mix, and
which checkpoints are kept."""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
from pathlib import Path

from isaseg_cli.engine.train.log import LOG_NAME, TENSORBOARD_DIR
from isaseg_cli.errors import InputError

LATEST = "latest.pth"
BEST = "best.pth"
_ITER = re.compile(r"iter_(\d+)\.pth")
# ``save_checkpoint`` writes ``.<name>.tmp`` beside its target; one left behind is from a process
# that died mid-write (SIGKILL, power loss) and is never a complete file.
_PARTIAL = re.compile(r"\.(iter_\d+|latest|best)\.pth\.tmp")
_PROBE = ".isaseg-write-test"


def iter_name(iteration: int) -> str:
    return f"iter_{iteration}.pth"


def iter_checkpoints(work_dir: Path) -> list[Path]:
    """The ``iter_<k>.pth`` files in ``work_dir``, oldest (smallest k) first."""
    if not work_dir.is_dir():
        return []
    numbered = [(_ITER.fullmatch(p.name), p) for p in work_dir.iterdir()]
    return [p for _, p in sorted((int(m.group(1)), p) for m, p in numbered if m)]


def run_files(work_dir: Path) -> list[Path]:
    """What a training run leaves in ``work_dir``: checkpoints, the log, TensorBoard events and
    partial checkpoint files; other files (the user's) are not the run's."""
    if not work_dir.is_dir():
        return []
    named = {LATEST, BEST, LOG_NAME, TENSORBOARD_DIR}
    return sorted(
        p
        for p in work_dir.iterdir()
        if p.name in named or _ITER.fullmatch(p.name) or _PARTIAL.fullmatch(p.name)
    )


def latest_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint that ``latest.pth`` points at (itself where it is a copy), or None before
    the run's first checkpoint."""
    latest = work_dir / LATEST
    return latest.resolve() if latest.is_file() else None


def stop_hint(work_dir: Path) -> str:
    """Where a stopped run left its files, and how to go on from there."""
    latest, log = latest_checkpoint(work_dir), work_dir / LOG_NAME
    if latest is None:
        if not run_files(work_dir):
            return "stopped before training began; nothing was written"
        return f"stopped before the first checkpoint (log: {log}); start again with --overwrite"
    command = f"isaseg train --resume --work-dir {shlex.quote(str(work_dir))}"
    return (
        f"stopped; checkpoints in {work_dir} (latest.pth -> {latest.name}), log {log}; "
        f"continue with: {command}"
    )


def check_unused(work_dir: Path, *, overwrite: bool) -> None:
    """Refuses to start a new run where an earlier one left its files, unless ``overwrite``.

    Raises:
        InputError: ``work_dir`` holds an earlier run and ``overwrite`` is off.
    """
    earlier = [p.name for p in run_files(work_dir) if not _PARTIAL.fullmatch(p.name)]
    if earlier and not overwrite:
        more = f" (+{len(earlier) - 4} more)" if len(earlier) > 4 else ""
        shown = ", ".join(earlier[:4]) + more
        raise InputError(
            f"{work_dir} holds an earlier run ({shown}): add --resume to continue it, "
            "--overwrite to delete it and start again, or choose another --work-dir"
        )


def clear_run(work_dir: Path) -> list[Path]:
    """Deletes the files of the earlier run in ``work_dir`` (``run_files``); returns them."""
    deleted = run_files(work_dir)
    for path in deleted:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return deleted


def remove_partial_files(work_dir: Path) -> list[Path]:
    """Deletes the hidden ``.<name>.pth.tmp`` files that a killed process left; returns them."""
    stale = [p for p in run_files(work_dir) if _PARTIAL.fullmatch(p.name)]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def prune_checkpoints(work_dir: Path, keep: int) -> list[Path]:
    """Deletes all but the newest ``keep`` ``iter_<k>.pth`` files (0: keeps all); returns them.

    ``best.pth`` and ``latest.pth`` are other files, so they always stay; ``latest.pth`` points
    at the newest ``iter_<k>.pth``, which is always kept.
    """
    if keep <= 0:
        return []
    old = iter_checkpoints(work_dir)[:-keep]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def check_writable(work_dir: Path) -> None:
    """Checks that ``work_dir`` can be written (or created), so a read-only disk fails before
    any training; a folder is not created yet, so a run that fails its checks leaves none.

    Raises:
        InputError: the folder (or the nearest existing one above it) cannot be written.
    """
    folder = work_dir.absolute()
    while not folder.exists() and not folder.is_symlink():
        folder = folder.parent
    try:
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", str(folder))
        if folder == work_dir.absolute():
            probe = work_dir / _PROBE
            probe.write_bytes(b"")
            probe.unlink()
        elif not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, _reason(folder), str(folder))
    except OSError as exc:
        raise _unwritable(work_dir, exc) from None


def create(work_dir: Path) -> None:
    """Creates ``work_dir`` (after ``check_writable``).

    Raises:
        InputError: it cannot be created.
    """
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(work_dir, exc) from None


def _reason(folder: Path) -> str:
    flags = os.statvfs(folder).f_flag
    return "read-only file system" if flags & os.ST_RDONLY else "permission denied"


def _unwritable(work_dir: Path, exc: OSError) -> InputError:
    reason = exc.strerror or type(exc).__name__
    shown = exc.filename and not str(exc.filename).endswith(_PROBE)  # the probe is ours, not theirs
    where = f" ({exc.filename})" if shown and exc.filename != str(work_dir) else ""
    return InputError(
        f"cannot write to the work dir {work_dir}: {reason}{where}; choose another --work-dir"
    )
