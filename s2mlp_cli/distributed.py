"""torchrun, in one place: `start(device)` joins the process group (NCCL on GPUs, bound to this process's
GPU; gloo on CPUs) and returns this process's `Shard`; `teardown()` leaves it, and eval and train call it
in a `finally`, so no process exits with a group open. Only the first process prints (`console.speak`,
set here and nowhere else); every process returns the same numbers.

A shard is this process's slice of the images, with the sums and gathers that make every process return
the whole set's numbers. Processes must see the same data (checked before any work), and one that stops
answering ends the others' wait after `S2MLP_DIST_TIMEOUT` seconds (default 600) with a message, instead
of gloo's and NCCL's default 30 minutes of silence."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from s2mlp_cli.console import speak
from s2mlp_cli.errors import S2MLPError

TIMEOUT_ENV = "S2MLP_DIST_TIMEOUT"


def _timeout_s() -> float:
    try:
        return max(1.0, float(os.environ.get(TIMEOUT_ENV, "600")))
    except ValueError:
        return 600.0


@dataclass(frozen=True)
class Shard:
    """Rank r of w takes images r, r + w, ... (one process: all of them)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    def agree(self, what: str, value: str) -> None:
        """Every process must hold the same `value` (e.g. the dataset's fingerprint); one line if not."""
        values = self.gather([value])
        if len(set(values)) > 1:
            differ = [r for r, v in enumerate(values) if v != values[0]]
            raise S2MLPError(
                f"the {self.world} processes see different {what}: rank {differ[0]} differs from rank 0 "
                "(each must read the same files and labels)"
            )

    def indices(self, n: int) -> list[int]:
        return list(range(self.rank, n, self.world))

    def sum(self, t: Any) -> Any:
        """All-reduce a tensor (sum) across the processes; itself when there is one."""
        if self.world > 1:
            import torch.distributed as dist

            _collective(lambda: dist.all_reduce(t))
        return t

    def gather(self, items: list) -> list:
        """Every process's list, concatenated in rank order (to every process)."""
        if self.world == 1:
            return items
        import torch.distributed as dist

        parts: list[list] = [[] for _ in range(self.world)]
        _collective(lambda: dist.all_gather_object(parts, items))
        return [x for part in parts for x in part]


_OWNED = {"group": False}  # whether `start` opened the process group (and so `teardown` closes it)


def start(device: str) -> Shard:
    """This process's shard under torchrun (`WORLD_SIZE` > 1), else the whole set. Under torchrun: the
    process group is joined (kept if the caller opened one), a CUDA process is bound to its GPU, and only
    rank 0 speaks from here on."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        speak(True)
        return Shard()
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device == "cuda" and local > torch.cuda.device_count():
        gpus = torch.cuda.device_count()
        raise S2MLPError(
            f"{local} processes on this machine but {gpus} GPU(s): each process needs a GPU of its own; "
            f"start at most {gpus} per machine"
        )
    if not dist.is_initialized():
        timeout = timedelta(seconds=_timeout_s())
        if device == "cuda":  # bound to its GPU from the start: NCCL knows the device, no guessing
            gpu = torch.device("cuda", local_rank)
            torch.cuda.set_device(gpu)
            dist.init_process_group("nccl", timeout=timeout, device_id=gpu)
        else:
            dist.init_process_group("gloo", timeout=timeout)
        _OWNED["group"] = True
    elif device == "cuda":
        torch.cuda.set_device(local_rank)
    shard = Shard(dist.get_rank(), dist.get_world_size(), local_rank)
    speak(shard.rank == 0)
    return shard


def teardown() -> None:
    """Leave the process group `start` opened (a caller's own group is the caller's to close)."""
    if not _OWNED["group"]:
        return
    import torch.distributed as dist

    _OWNED["group"] = False
    if dist.is_initialized():
        dist.destroy_process_group()


def _collective(call: Callable[[], Any]) -> Any:
    """A collective; a process that stopped (or never came) is one line, not a hang or a traceback."""
    try:
        return call()
    except RuntimeError as e:  # gloo's and NCCL's errors (DistBackendError, timeouts) are RuntimeErrors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise S2MLPError(
            f"another process stopped answering (waited at most {_timeout_s():.0f} s, {TIMEOUT_ENV}): {first}"
        ) from e
