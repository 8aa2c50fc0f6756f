"""Several processes with PyTorch's own ``torch.distributed``, started by ``torchrun``.

``torchrun --nproc-per-node 2 -m engramlab.cli run …`` sets the environment read here; the
training loop wraps the model in DistributedDataParallel (gloo on CPU, NCCL on GPU), each rank
draws its own share of the batch, and rank 0 alone writes the run directory.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def init_from_env() -> None:
    """Join the process group described by torchrun's environment (no-op for one process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_true(flag: bool) -> bool:
    """True on every rank iff ``flag`` is true on every rank."""
    if not is_distributed():
        return flag
    t = torch.tensor([1 if flag else 0], device=device())
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def device() -> torch.device:
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shutdown() -> None:
    """Leave together, then tear down: a rank that destroys its gloo group while the other still
    talks to it can abort ("terminate called without an active exception", seen once in CI)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()
