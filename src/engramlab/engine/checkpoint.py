"""Checkpoints: one ``checkpoint.safetensors`` file written atomically (temp file + rename).

One file holds everything needed to continue a run bit for bit: model weights (``model/…``),
optimizer state (``optim/…``) or an evolution strategy's state (``strategy/…``), the RNG states
(``rng/…``) and, in the safetensors metadata, the step and other plain values as JSON. Because
it is a single file replaced with ``os.replace``, a ``kill -9`` at any moment leaves either the
previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from engramlab.errors import RunDirError

FORMAT = "engramlab-checkpoint/1"
CHECKPOINT_NAME = "checkpoint.safetensors"


@dataclass
class Checkpoint:
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    strategy: dict[str, torch.Tensor] = field(default_factory=dict)  # an evolution strategy's state


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    tensors = {f"model/{k}": v for k, v in ckpt.model.items()}
    tensors.update({f"rng/{k}": v for k, v in ckpt.rng.items()})
    tensors.update({f"strategy/{k}": v for k, v in ckpt.strategy.items()})
    metadata = {"format": FORMAT, "step": str(ckpt.step), "extra": json.dumps(ckpt.extra)}
    if ckpt.optimizer is not None:
        optim_tensors, optim_meta = flatten_optimizer_state(ckpt.optimizer)
        tensors.update(optim_tensors)
        metadata["optimizer"] = json.dumps(optim_meta)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_checkpoint(path: Path, with_state: bool = True) -> Checkpoint:
    """Read a checkpoint; ``with_state=False`` reads the model weights only."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: no checkpoint here")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise RunDirError(f"{path}: not an engramlab checkpoint (format {metadata.get('format')!r})")
            names = list(f.keys())
            wanted = names if with_state else [k for k in names if k.startswith("model/")]
            tensors = {k: f.get_tensor(k) for k in wanted}
    except RunDirError:
        raise
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        raise RunDirError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    ckpt = Checkpoint(
        step=int(metadata["step"]),
        model=strip_prefix(tensors, "model/"),
        rng=strip_prefix(tensors, "rng/"),
        extra=json.loads(metadata.get("extra", "{}")),
        strategy=strip_prefix(tensors, "strategy/"),
    )
    if with_state and "optimizer" in metadata:
        ckpt.optimizer = unflatten_optimizer_state(strip_prefix(tensors, "optim/"), json.loads(metadata["optimizer"]))
    return ckpt


def strip_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def flatten_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer ``state_dict`` -> (tensors named ``optim/<param>/<key>``, JSON-able rest)."""
    tensors, scalars = {}, {}
    for param_id, state in state_dict["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim/{param_id}/{key}"] = value
            else:
                scalars[f"{param_id}/{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        param_id, key = name.split("/", 1)
        state.setdefault(int(param_id), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or compiled) wrapper."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp)`` then move ``tmp`` onto ``path`` in one rename (after an fsync)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))
