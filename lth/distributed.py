"""Data-parallel training over the processes `torchrun --nproc_per_node=N -m lth run ...` starts.

Every rank runs the whole driver on the same config: the same seeded data order, the same initialisation, the
same masks. Each rank trains on its slice of every global batch (`train.batch_size` examples split across the
ranks) and the gradients are summed across ranks after backward, before masking, so the update is the one a
single process would make with the whole batch. Only rank 0 writes files and prints; the others wait at a
barrier for what it wrote (θ0, each published round) and read it from disk, as a resumed run would.

Without torchrun (no WORLD_SIZE > 1 in the environment) every helper is a no-op for a world of one process.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import Tensor, nn

Function = TypeVar("Function", bound=Callable[..., Any])


def init() -> None:
    """Join torchrun's process group (rank, world size and rendezvous come from its environment variables).

    Gloo reduces CPU tensors and NCCL CUDA ones. When the node has a GPU for each of its ranks, each rank takes the
    GPU of its LOCAL_RANK; otherwise no rank uses NCCL (all must agree) and the ranks train with `device=cpu`.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _group() is not None:
        return
    import torch
    import torch.distributed as dist

    if torch.cuda.device_count() >= int(os.environ.get("LOCAL_WORLD_SIZE", "1")):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group("gloo")


def _group() -> Any:
    """torch.distributed when this process has joined a process group, else None. A group exists only after
    torch.distributed was imported, so the read side (`lth report`) never has to import torch to ask."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_initialized() else None


def world_size() -> int:
    return group.get_world_size() if (group := _group()) is not None else 1


def rank() -> int:
    return group.get_rank() if (group := _group()) is not None else 0


def is_main() -> bool:
    """Whether this process writes files and prints: rank 0, or the only process."""
    return rank() == 0


def main_only(function: Function) -> Function:
    """A writer that only rank 0 runs; on the other ranks it does nothing and returns None."""

    @functools.wraps(function)
    def on_main(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **kwargs) if is_main() else None

    return on_main  # type: ignore[return-value]


def barrier() -> None:
    """Wait until every rank gets here (so the others read only what rank 0 has finished writing)."""
    if world_size() > 1:
        _group().barrier()


def shard(batch: Tensor) -> Tensor:
    """This rank's contiguous slice of a global batch (sizes differ by at most one when it does not divide)."""
    return batch if world_size() == 1 else batch.tensor_split(world_size())[rank()]


def sum_gradients(model: nn.Module, share: float) -> None:
    """Make every rank's gradients those of the whole global batch.

    Each rank's loss is the mean over its slice, so its gradients are weighted by `share` (its slice's fraction of
    the global batch) and summed across ranks: the mean over the global batch, however unevenly it was split.
    One flat all-reduce instead of one per tensor.
    """
    if world_size() == 1:
        return
    import torch

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads]).mul_(share)
    _group().all_reduce(flat)
    for grad, reduced in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
        grad.copy_(reduced.view_as(grad))


def shared_output_dirs(overrides: Iterable[str]) -> list[str]:
    """Hydra overrides that put every rank in rank 0's run (or sweep) directory.

    Hydra names directories after the time it starts, which differs between ranks by a second now and then;
    rank 0's time is sent to all. Ranks other than 0 also leave Hydra's `.hydra/` record and log lines to rank 0.
    """
    stamp = [datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")]  # the folder name of lth/conf/config.yaml
    _group().broadcast_object_list(stamp, src=0)
    given = {override.partition("=")[0] for override in overrides}
    defaults = {"hydra.run.dir": "outputs", "hydra.sweep.dir": "multirun"}  # Hydra's, with rank 0's time
    extra = [f"{key}={base}/{stamp[0]}" for key, base in defaults.items() if key not in given]
    return extra if is_main() else [*extra, "hydra.output_subdir=null", "hydra/hydra_logging=disabled"]
