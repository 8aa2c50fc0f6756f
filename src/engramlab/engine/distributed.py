"""Several processes with PyTorch's own ``torch.distributed``, started by ``torchrun``.

``torchrun --nproc-per-node 2 -m engramlab.cli run …`` sets the environment read here; the
training loop wraps the model in DistributedDataParallel (gloo on CPU, NCCL on GPU), each rank
draws its own share of the batch, and rank 0 alone writes the run directory.
"""

from __future__ import annotations

import gc
import os
import sys
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


_left_a_group = False


def shutdown() -> None:
    """Leave together, then tear down: a rank that destroys its gloo group while the other still
    talks to it can abort ("terminate called without an active exception", seen in CI). The
    collection frees DDP wrappers caught in reference cycles while their group is still alive."""
    global _left_a_group
    if is_distributed():
        dist.barrier()
        gc.collect()
        dist.destroy_process_group()
        _left_a_group = True


def exit_after_group(code: int) -> int:
    """``code``, leaving at once if this process was one of several ranks.

    Gloo's C++ worker threads can still hold objects whose destruction during the interpreter's
    own teardown aborts the process (SIGABRT, "terminate called without an active exception";
    twice in CI, on a rank whose run had finished and been written). Every file is closed by the
    time this is called, so the rank flushes its streams and skips that teardown."""
    if not _left_a_group:
        return code
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
