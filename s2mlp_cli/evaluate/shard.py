"""This process's slice of the images under torchrun, and the sums and gathers that make every process
return the whole set's numbers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shard:
    """Rank r of w takes images r, r + w, ... (one process: all of them)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, device: str) -> Shard:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if device == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def indices(self, n: int) -> list[int]:
        return list(range(self.rank, n, self.world))

    def sum(self, t: Any) -> Any:
        """All-reduce a tensor (sum) across the processes; itself when there is one."""
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(t)
        return t

    def gather(self, items: list) -> list:
        """Every process's list, concatenated in rank order (to every process)."""
        if self.world == 1:
            return items
        import torch.distributed as dist

        parts: list[list] = [[] for _ in range(self.world)]
        dist.all_gather_object(parts, items)
        return [x for part in parts for x in part]
