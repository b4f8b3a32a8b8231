"""``DIR/manifest.jsonl``: what became of every input of a predict run, kept across reruns.

Each process appends its records to its own hidden part file as it goes, one fsynced line per
input, so processes never share a file (appends from several machines to one file on a network
filesystem can interleave). At the end of a run rank 0 folds every part file, this run's and
any that a killed run left, into the manifest: one line per input, the latest record of each.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from isaseg_cli.data.mask_io import atomic_write_bytes, os_error_reason
from isaseg_cli.engine.infer.predict_plan import Job, PredictPlan, job_outputs
from isaseg_cli.errors import OutputError


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    """One input's outcome.

    Attributes:
        input: the input file, as planned.
        outputs: the files written for it (for ``skipped``: the existing ones it would write).
        status: ``ok``, ``failed`` or ``skipped`` (its outputs existed, ``--skip-existing``).
        error: why it failed (the message the summary prints), else None.
        seconds: time spent on it: decoding, its share of its batch's forward, writing.
        rank: the process that did it.
        mean_confidence: mean over pixels of the top class probability, when computed.
        finished: when the record was made (Unix time); the latest record of an input wins.
    """

    input: str
    outputs: tuple[str, ...]
    status: str
    error: str | None = None
    seconds: float = 0.0
    rank: int = 0
    mean_confidence: float | None = None
    finished: float = field(default_factory=time.time)

    def to_json(self) -> str:
        record: dict[str, Any] = asdict(self)
        record["outputs"] = list(self.outputs)
        record["seconds"] = round(self.seconds, 4)
        if self.mean_confidence is None:
            del record["mean_confidence"]
        return json.dumps(record, ensure_ascii=False)


def part_path(manifest: Path, rank: int) -> Path:
    """The hidden file beside ``manifest`` where ``rank`` appends its records."""
    return manifest.with_name(f".{manifest.stem}.rank{rank}{manifest.suffix}")


def _part_files(manifest: Path) -> list[Path]:
    return sorted(manifest.parent.glob(f".{manifest.stem}.rank*{manifest.suffix}"))


class ManifestWriter:
    """Appends one rank's records to its part file: one ``write`` of a whole line, then fsync, so
    a killed process leaves at most its last line cut short (and ``merge_manifest`` drops it)."""

    def __init__(self, manifest: Path, rank: int) -> None:
        self.path = part_path(manifest, rank)
        self._fd: int | None = None

    def append(self, record: ManifestRecord) -> None:
        """Raises OutputError: the part file cannot be written."""
        line = (record.to_json() + "\n").encode()
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self._fd, line)
            os.fsync(self._fd)
        except OSError as exc:
            raise OutputError(f"cannot write {self.path}: {os_error_reason(exc)}") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_manifest(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a manifest or part file; a line a kill cut short is left out."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("input"), str):
            yield record


def _precedence(record: dict[str, Any]) -> tuple[bool, float]:
    """A ``skipped`` record says less than the run that wrote the outputs, so it counts only
    where an input has no other; otherwise the latest record wins."""
    return record.get("status") != "skipped", float(record.get("finished", 0))


def merge_manifest(manifest: Path) -> int:
    """Folds the part files into ``manifest`` (atomically), one line per input sorted by input,
    then removes them. Call it once every process has finished appending.

    Returns:
        The number of inputs the manifest holds.

    Raises:
        OutputError: the manifest cannot be written.
    """
    parts = _part_files(manifest)
    records = list(read_manifest(manifest))
    for part in parts:
        records += read_manifest(part)
    if not records and not manifest.exists():
        return 0
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        earlier = latest.get(record["input"])
        latest[record["input"]] = (
            record if earlier is None else max(earlier, record, key=_precedence)
        )
    lines = [json.dumps(latest[name], ensure_ascii=False) + "\n" for name in sorted(latest)]
    atomic_write_bytes(manifest, "".join(lines).encode())
    for part in parts:
        part.unlink(missing_ok=True)
    return len(latest)


def finish_skipped(plan: PredictPlan) -> None:
    """For a run with nothing left to do in any process: the skipped inputs go into the
    manifest, which rank 0 folds once every process has recorded its own.

    Raises:
        OutputError: the manifest cannot be written.
    """
    if plan.manifest is None:
        return
    writer = ManifestWriter(plan.manifest, plan.rank)
    try:
        for job in plan.done:
            writer.append(skipped_record(job, plan))
    finally:
        writer.close()
    if plan.world_size > 1:
        from isaseg_cli.engine.distributed import gather_objects  # torch: only under torchrun

        gather_objects(None)  # a barrier: every part file is complete
    if plan.rank == 0:
        merge_manifest(plan.manifest)


def skipped_record(job: Job, plan: PredictPlan) -> ManifestRecord:
    """The record of an input left out because its outputs exist."""
    outputs = tuple(str(path) for path in job_outputs(job))
    return ManifestRecord(str(job.source.path), outputs, "skipped", rank=plan.rank)
