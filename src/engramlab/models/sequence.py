"""A sequence model built around any memory of the toolbox, chosen by config.

    inputs ─ embed (+ positions) ─┬─ [x + memory(norm x); x + ffn(norm x)] × layers ─ norm ─ head ─ logits
                                  └─ the same memory state carried from window to window

The blocks are pre-norm residual blocks (as in GPT-2); the feed-forward sublayer can be switched
off (``ffn=false``), e.g. for a bare recurrent or NTM model. Long inputs are read window by
window (``window``): each layer's memory state is handed from one window to the next, which is
the only way information crosses a window boundary. Recurrent kinds (LSTM, GRU, NTM, MemN2N's
earlier inputs) keep their gradient across windows unless ``truncate_gradient`` is set;
Transformer-XL and kNN memories never carry gradient (their papers' stop-gradient).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from copy import copy
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, create_model, model_validator
from torch import Tensor, nn

from engramlab.config import HeadsDivideWidth
from engramlab.memory import MEMORY_KINDS, MemoryKind, detach_state
from engramlab.tasks.sequence import SequenceBatch, masked_loss, masked_metrics


class MemoryModelFields(HeadsDivideWidth):
    """The keys every memory model has, whatever its kind; :func:`memory_model_config` adds the rest."""

    width_field: ClassVar[str] = "d_model"
    kinds: ClassVar[Mapping[str, MemoryKind]] = MEMORY_KINDS  # the registry the config was made from

    memory: str = Field("attention", description="kind of memory")  # made one of the kinds by memory_model_config
    d_model: int = Field(64, ge=4, le=65536, description="width of the model")
    layers: int = Field(2, ge=1, le=64, description="number of blocks")
    ffn: bool = Field(True, description="feed-forward sublayer (4x width, GELU) after each memory")
    window: int | None = Field(
        None, ge=1, description="read inputs in windows of this many steps, carrying memory state; null: one window"
    )
    truncate_gradient: bool = Field(False, description="cut the gradient of recurrent states between windows")
    positions: Literal["auto", "none", "sinusoidal"] = Field(
        "auto",
        description="absolute positions (within a window) added to the input; auto: sinusoidal for attention "
        "and knn, none for kinds that know order by themselves (recurrent, ntm, memn2n, xl)",
    )

    def kind(self) -> MemoryKind:
        return self.kinds[self.memory]

    def splits_width(self) -> bool:  # the heads check of HeadsDivideWidth
        return self.kind().splits_width

    @model_validator(mode="after")
    def _check_layer(self):
        option = self.kind().layer_option
        if option is not None and not -self.layers <= getattr(self, option) < self.layers:
            raise ValueError(f"model.{option} = {getattr(self, option)} must index one of the {self.layers} layers")
        return self


def memory_model_config(kinds: Mapping[str, MemoryKind]) -> type[MemoryModelFields]:
    """The flat model config of a registry of kinds: the keys of :class:`MemoryModelFields`,
    ``memory`` (one of the kinds) and every kind's options, each key once.

    The keys stay flat (``model.top_k``, not ``model.knn.top_k``), so that one config can switch
    kinds with ``--set model.memory=...`` and a run's ``config.yaml`` names each key once. Order
    (of ``--show-config`` and of ``config.yaml``): the kinds that split their width into heads
    first, so that the ``heads`` they share comes once before their own keys, then the others, each
    group in registry order. A key several kinds share names them in its description.
    """
    options: dict[str, Any] = {}
    for kind in sorted(kinds.values(), key=lambda kind: not kind.splits_width):
        for name, field in kind.options.model_fields.items():
            if name in options:
                continue
            field = copy(field)
            users = [other.name for other in kinds.values() if name in other.options.model_fields]
            if len(users) > 1:
                field.description = f"{field.description} ({', '.join(users)})"
            options[name] = (field.annotation, field)
    one_layer = "".join(f" ({kind.name}: in one layer)" for kind in kinds.values() if kind.layer_option)
    memory = Literal[tuple(kinds)]
    return create_model(
        "MemoryModelConfig",
        __base__=MemoryModelFields,
        __module__=__name__,
        __namespace__={"kinds": kinds},
        memory=(memory, Field("attention", description=f"kind of memory in every layer{one_layer}")),
        **options,
    )


MemoryModelConfig = memory_model_config(MEMORY_KINDS)


def memory_options(cfg: MemoryModelFields, kind: MemoryKind) -> dict[str, Any]:
    """The constructor arguments of one kind, taken from the flat config (a null window option: the window)."""
    options = {name: getattr(cfg, name) for name in kind.options.model_fields if name != kind.layer_option}
    if kind.window_option is not None and options[kind.window_option] is None:
        options[kind.window_option] = cfg.window
    return options


def layer_kinds(cfg: MemoryModelFields) -> list[MemoryKind]:
    """The kind of every layer: the configured one, or (a kind with ``layer_option``, the kNN memory) that kind in
    its one layer and ``other_layers`` in the rest (Memorizing Transformers, Wu et al. 2022, §3)."""
    kind = cfg.kind()
    if kind.layer_option is None:
        return [kind] * cfg.layers
    kinds = [cfg.kinds[kind.other_layers]] * cfg.layers
    kinds[getattr(cfg, kind.layer_option)] = kind
    return kinds


def sinusoidal_positions(length: int, d_model: int) -> Tensor:
    """Vaswani et al. 2017, §3.5."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(length, d_model)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: d_model // 2])
    return table


class Block(nn.Module):
    def __init__(self, memory: nn.Module, d_model: int, ffn: bool):
        super().__init__()
        self.norm1, self.memory = nn.LayerNorm(d_model), memory
        self.ffn = (
            nn.Sequential(
                nn.LayerNorm(d_model), nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
            )
            if ffn
            else None
        )

    def forward(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        read, state = self.memory(self.norm1(x), state)
        x = x + read
        if self.ffn is not None:
            x = x + self.ffn(x)
        return x, state


class MemoryModel(nn.Module):
    """``MemoryModel(cfg, input_size, output_size, tokens)``; ``forward(batch) -> (loss, logs)``.

    ``tokens``: inputs are ids embedded by ``nn.Embedding``; otherwise float vectors (bits)
    projected by a linear layer.
    """

    def __init__(self, cfg: MemoryModelFields, input_size: int, output_size: int, tokens: bool):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(input_size, d) if tokens else nn.Linear(input_size, d)
        auto = "none" if cfg.kind().knows_order else "sinusoidal"
        self.use_positions = (auto if cfg.positions == "auto" else cfg.positions) == "sinusoidal"
        self.blocks = nn.ModuleList(
            Block(kind.build(d, **memory_options(cfg, kind)), d, cfg.ffn) for kind in layer_kinds(cfg)
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, output_size)

    def run_window(self, inputs: Tensor, states: list[Any]) -> tuple[Tensor, list[Any]]:
        x = self.embed(inputs)
        if self.use_positions:
            x = x + sinusoidal_positions(x.shape[1], x.shape[2]).to(x.device)
        new_states = []
        for block, state in zip(self.blocks, states):
            x, state = block(x, state)
            new_states.append(state)
        return self.norm(x), new_states

    def hidden(self, inputs: Tensor, states: list[Any] | None = None) -> tuple[Tensor, list[Any]]:
        """The last layer's states (batch, time, d_model), reading ``inputs`` window by window."""
        states = states if states is not None else [None] * len(self.blocks)
        window = self.cfg.window or inputs.shape[1]
        outputs = []
        for start in range(0, inputs.shape[1], window):
            out, states = self.run_window(inputs[:, start : start + window], states)
            outputs.append(out)
            if self.cfg.truncate_gradient:
                states = [detach_state(s) for s in states]
        return torch.cat(outputs, dim=1), states

    def logits(self, inputs: Tensor, states: list[Any] | None = None) -> tuple[Tensor, list[Any]]:
        """Logits for every position; returns the memory states after the last window too."""
        h, states = self.hidden(inputs, states)
        return self.head(h), states

    def masked_logits(self, batch: SequenceBatch) -> Tensor:
        """Logits of the positions that count only: with a large vocabulary (MQAR: 8,192) the output
        layer over every position would cost more than the rest of the model."""
        h, _ = self.hidden(batch.inputs)
        return self.head(h[batch.mask])

    def forward(self, batch: SequenceBatch) -> tuple[Tensor, dict[str, float]]:
        logits = self.masked_logits(batch)
        loss = masked_loss(logits, batch)
        with torch.no_grad():
            metrics = masked_metrics(logits, batch)
        logs = {"accuracy": metrics["correct"].mean().item()}
        if "bit_errors" in metrics:
            logs["bit_errors"] = metrics["bit_errors"].mean().item()
        return loss, logs

    @torch.no_grad()
    def evaluate(self, batch: SequenceBatch) -> dict[str, Tensor]:
        """Per-sequence metrics (see :func:`masked_metrics`)."""
        return masked_metrics(self.masked_logits(batch), batch)
