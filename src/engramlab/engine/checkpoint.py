"""Checkpoints: ``checkpoint.safetensors`` written atomically (temp file + rename), the one before
it kept as ``checkpoint.previous.safetensors``.

One file holds everything needed to continue a run bit for bit: model weights (``model/…``),
optimizer state (``optim/…``) or an evolution strategy's state (``strategy/…``), the RNG states
(``rng/…``) and, in the safetensors metadata, the step and other plain values as JSON.

A checkpoint cannot lie:

- **atomic**: written to a temp file, synced, then renamed over the old one, so a ``kill -9`` at
  any moment leaves whole files only;
- **checksummed**: a BLAKE2 digest of every tensor and of the metadata is stored in it and
  checked on load, so a file changed afterwards (or truncated) is refused, not trusted; a model
  that holds NaN or inf is refused too (and never written: see :func:`save_checkpoint`);
- **two kept**: the previous checkpoint survives the writing of the next, and
  :func:`load_latest` falls back to it, with a one-line warning, when the newer one is missing,
  unreadable or fails its checks.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from engramlab.errors import NonFiniteLossError, RunDirError

FORMAT = "engramlab-checkpoint/2"  # /2 adds the checksums; /1 files (no checksums) still load
FORMATS = ("engramlab-checkpoint/1", FORMAT)
CHECKPOINT_NAME = "checkpoint.safetensors"
PREVIOUS_NAME = "checkpoint.previous.safetensors"


@dataclass
class Checkpoint:
    step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None = None
    rng: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    strategy: dict[str, torch.Tensor] = field(default_factory=dict)  # an evolution strategy's state
    # the model tensors that must be finite (its parameters); None: every floating-point one. Buffers
    # may hold NaN on purpose (the bacteria's history marks the windows of a dead world with NaN)
    finite: list[str] | None = None


def save_checkpoint(path: Path, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` atomically at ``path``, keeping the checkpoint it replaces as the previous one.
    A model holding NaN or inf is refused (:class:`NonFiniteLossError`): a checkpoint is always a
    state worth going back to."""
    if bad := non_finite(ckpt.model, ckpt.finite):
        raise NonFiniteLossError(f"the model's {bad} holds NaN or inf; not written to {path}")
    tensors = {f"model/{k}": v for k, v in ckpt.model.items()}
    tensors.update({f"rng/{k}": v for k, v in ckpt.rng.items()})
    tensors.update({f"strategy/{k}": v for k, v in ckpt.strategy.items()})
    metadata = {"format": FORMAT, "step": str(ckpt.step), "extra": json.dumps(ckpt.extra)}
    if ckpt.finite is not None:
        metadata["finite"] = json.dumps(ckpt.finite)
    if ckpt.optimizer is not None:
        optim_tensors, optim_meta = flatten_optimizer_state(ckpt.optimizer)
        tensors.update(optim_tensors)
        metadata["optimizer"] = json.dumps(optim_meta)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    metadata["model_checksum"] = checksum(tensors, {}, only="model/")
    metadata["checksum"] = checksum(tensors, metadata)
    path = Path(path)
    atomic_write(
        path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), previous=path.with_name(PREVIOUS_NAME)
    )


def load_checkpoint(path: Path, with_state: bool = True) -> Checkpoint:
    """Read and verify a checkpoint; ``with_state=False`` reads (and verifies) the model weights only.
    A missing, unreadable, altered or non-finite checkpoint raises :class:`RunDirError`."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"{path}: no checkpoint here")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") not in FORMATS:
                raise RunDirError(f"{path}: not an engramlab checkpoint (format {metadata.get('format')!r})")
            names = list(f.keys())
            wanted = names if with_state else [k for k in names if k.startswith("model/")]
            tensors = {k: f.get_tensor(k) for k in wanted}
    except RunDirError:
        raise
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        raise RunDirError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
    verify(path, tensors, metadata, with_state)
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


def load_latest(directory: Path, warn=None) -> Checkpoint | None:
    """The newest good checkpoint in ``directory`` (None if it has none at all): the current one, or,
    when it is missing, unreadable or fails its checks, the previous one, saying so through
    ``warn(line)``. Raises :class:`RunDirError` when checkpoints exist but none is good."""
    directory = Path(directory)
    current, previous = directory / CHECKPOINT_NAME, directory / PREVIOUS_NAME
    if not current.exists() and not previous.exists():
        return None
    try:
        return load_checkpoint(current)
    except RunDirError as exc:
        problem = str(exc)
    try:
        ckpt = load_checkpoint(previous)
    except RunDirError as exc:
        raise RunDirError(f"no usable checkpoint in {directory}: {problem}; {exc}") from None
    if warn is not None:
        warn(f"{problem}; resuming from the previous checkpoint (step {ckpt.step})")
    return ckpt


def good_checkpoint(directory: Path) -> str:
    """Words for the newest checkpoint in ``directory`` that passes every check (for a stop message)."""
    for path in (Path(directory) / CHECKPOINT_NAME, Path(directory) / PREVIOUS_NAME):
        try:
            return f"last good checkpoint kept: {path} (step {load_checkpoint(path).step})"
        except RunDirError:
            continue
    return "no good checkpoint yet"


def checksum(tensors: dict[str, torch.Tensor], metadata: dict[str, str], only: str = "") -> str:
    """BLAKE2b of the tensors whose names start with ``only`` (name, dtype, shape and bytes, in name
    order) and of the metadata (every field but the checksums themselves)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(n for n in tensors if n.startswith(only)):
        tensor = tensors[name]
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for key in sorted(k for k in metadata if not k.endswith("checksum")):
        digest.update(f"{key}={metadata[key]}|".encode())
    return digest.hexdigest()


def verify(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str], with_state: bool) -> None:
    """Refuse a checkpoint whose tensors or metadata changed since it was written, or whose model is not finite."""
    if metadata.get("format") != "engramlab-checkpoint/1":  # older files carry no checksum
        expected, actual = (
            (metadata.get("checksum"), checksum(tensors, metadata))
            if with_state
            else (metadata.get("model_checksum"), checksum(tensors, {}, only="model/"))
        )
        if expected != actual:
            raise RunDirError(f"{path}: checksum mismatch, the checkpoint was changed or damaged after it was written")
    finite = json.loads(metadata["finite"]) if "finite" in metadata else None
    if bad := non_finite(strip_prefix(tensors, "model/"), finite):
        raise RunDirError(f"{path}: the model's {bad} holds NaN or inf")


def non_finite(weights: dict[str, torch.Tensor], names: list[str] | None = None) -> str | None:
    """The name of the first floating-point tensor (of ``names``; None: of all) that holds NaN or inf, if any."""
    for name, tensor in weights.items():
        checked = names is None or name in names
        if checked and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return name
    return None


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


def atomic_write(path: Path, write, previous: Path | None = None) -> None:
    """Call ``write(tmp)`` then move ``tmp`` onto ``path`` in one rename (after an fsync); with
    ``previous``, the file at ``path`` is first moved there. The file gets the mode of any other
    file written in this process (``0o666`` less the umask)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        if previous is not None and path.exists():
            os.replace(path, previous)  # killed here: no current file, and load_latest takes this one
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text))
