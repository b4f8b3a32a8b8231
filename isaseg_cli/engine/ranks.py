"""The process layout torchrun describes in environment variables, read without torch (so a
command can ask for its rank before, or without, importing it)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from isaseg_cli.errors import InputError


@dataclass(frozen=True, slots=True)
class DistInfo:
    """This process's place in the job: global ``rank`` of ``world_size``, ``local_rank`` on its
    machine (the GPU index it uses)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and reports progress."""
        return self.rank == 0


def dist_info(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (set by torchrun); a single process
    without them.

    Raises:
        InputError: the variables are not integers or do not fit together.
    """
    env = os.environ if environ is None else environ
    try:
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise InputError(
            "RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)"
        ) from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise InputError(f"inconsistent torchrun variables: RANK={rank} WORLD_SIZE={world_size}")
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank)
