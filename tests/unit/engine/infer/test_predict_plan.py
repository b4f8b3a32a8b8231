"""The predict plan under torchrun: inputs dealt round-robin, names chosen over the whole list,
finished outputs checked only in a process's own share."""

from __future__ import annotations

from pathlib import Path

import pytest

from isaseg_cli.engine.infer.predict_plan import plan_predict
from isaseg_cli.errors import InputError


def _inputs(tmp_path: Path) -> list[Path]:
    names = ["a/x.png", "b/x.png", "c.png", "d.png", "e.png"]  # the two x.png clash
    paths = [tmp_path / "in" / name for name in names]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"never decoded by the plan")
    return paths


def test_ranks_share_the_inputs_round_robin_with_the_same_names(tmp_path) -> None:
    inputs, out = _inputs(tmp_path), tmp_path / "out"
    whole = plan_predict(inputs, out=out)
    shares = [plan_predict(inputs, out=out, rank=rank, world_size=2) for rank in (0, 1)]
    assert [job.source.path for job in shares[0].jobs] == [inputs[0], inputs[2], inputs[4]]
    assert [job.source.path for job in shares[1].jobs] == [inputs[1], inputs[3]]
    assert sorted(job.mask for share in shares for job in share.jobs) == sorted(
        job.mask for job in whole.jobs
    )
    assert shares[1].jobs[0].mask == out / "x_2.png"  # numbered as in one process
    assert (shares[1].rank, shares[1].world_size, shares[1].manifest) == (1, 2, None)
    with pytest.raises(InputError, match="rank 2 is not one of 2"):
        plan_predict(inputs, out=out, rank=2, world_size=2)


def test_skip_existing_looks_at_the_own_share_only(tmp_path) -> None:
    inputs, out = _inputs(tmp_path), tmp_path / "out"
    out.mkdir()
    (out / "d.png").write_bytes(b"rank 1 wrote this")
    shares = [
        plan_predict(inputs, out=out, skip_existing=True, manifest=True, rank=rank, world_size=2)
        for rank in (0, 1)
    ]
    assert (len(shares[0].jobs), shares[0].skipped) == (3, 0)
    assert [job.source.path for job in shares[1].done] == [inputs[3]]
    assert [job.source.path for job in shares[1].jobs] == [inputs[1]]
    assert shares[0].manifest == shares[1].manifest == out / "manifest.jsonl"
    with pytest.raises(InputError, match="d.png already exists"):  # every rank refuses alike
        plan_predict(inputs, out=out, rank=0, world_size=2)
