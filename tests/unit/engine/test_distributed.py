"""torchrun's environment variables -> DistInfo; no process group for a single process."""

from __future__ import annotations

import pytest
import torch

from isaseg_cli.engine.distributed import init_process_group, joined_info
from isaseg_cli.engine.ranks import DistInfo, dist_info
from isaseg_cli.errors import InputError


def test_single_process_without_torchrun_variables() -> None:
    info = dist_info({})
    assert info == DistInfo(rank=0, world_size=1, local_rank=0)
    assert info.is_main and not info.distributed
    assert init_process_group(info, torch.device("cpu")) is False


def test_reads_rank_world_size_and_local_rank() -> None:
    info = dist_info({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank) == (5, 8, 1)
    assert info.distributed and not info.is_main


@pytest.mark.parametrize(
    "environ", [{"RANK": "2", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "two"}, {"WORLD_SIZE": "0"}]
)
def test_inconsistent_variables_are_an_error(environ: dict[str, str]) -> None:
    with pytest.raises(InputError):
        dist_info(environ)


def test_joined_info_is_a_single_process_until_the_group_is_joined(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert dist_info() == DistInfo(rank=1, world_size=2, local_rank=1)
    assert joined_info() == DistInfo()  # no process group: nothing to shard with
