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
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from engramlab.config import Config
from engramlab.memory import build_memory, detach_state
from engramlab.tasks.sequence import SequenceBatch, masked_loss, masked_metrics

MemoryKind = Literal["lstm", "gru", "attention", "memn2n", "ntm", "knn", "xl"]


class MemoryModelConfig(Config):
    memory: MemoryKind = Field("attention", description="kind of memory in every layer (knn: in one layer)")
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
    # attention, knn, xl
    heads: int = Field(4, ge=1, description="attention heads (attention, knn, xl)")
    persistent: int = Field(0, ge=0, description="persistent memory vectors per head (attention)")
    # knn
    knn_layer: int = Field(-1, description="index of the layer with the kNN memory; the others are windowed attention")
    top_k: int = Field(32, ge=1, description="neighbours retrieved per query (knn)")
    memory_index: Literal["flat", "hnsw", "ivf", "torch"] = Field(
        "flat", description="index of the kNN memory: FAISS flat (exact), hnsw, ivf, or torch (exact, batched)"
    )
    memory_capacity: int | None = Field(None, ge=1, description="entries kept per sequence and head (knn); null: all")
    # xl
    mem_len: int | None = Field(None, ge=1, description="cached steps of the previous window (xl); null: window")
    # memn2n
    hops: int = Field(3, ge=1, le=16, description="memory hops (memn2n)")
    memory_size: int = Field(256, ge=1, description="earlier inputs a MemN2N layer can read")
    # ntm
    slots: int = Field(128, ge=1, description="memory rows (ntm; paper 128)")
    slot_width: int = Field(20, ge=1, description="memory columns (ntm; paper 20)")
    controller: Literal["lstm", "ff"] = Field("lstm", description="NTM controller")
    controller_size: int = Field(100, ge=1, description="NTM controller width")

    @model_validator(mode="after")
    def _check(self):
        if self.memory in ("attention", "knn", "xl") and self.d_model % self.heads:
            raise ValueError(f"model.d_model = {self.d_model} must be a multiple of model.heads = {self.heads}")
        if self.memory == "knn" and not -self.layers <= self.knn_layer < self.layers:
            raise ValueError(f"model.knn_layer = {self.knn_layer} must index one of the {self.layers} layers")
        return self


def memory_options(cfg: MemoryModelConfig, kind: str) -> dict[str, Any]:
    """The constructor arguments of one kind, taken from the flat config."""
    return {
        "lstm": {},
        "gru": {},
        "attention": {"heads": cfg.heads, "persistent": cfg.persistent},
        "knn": {
            "heads": cfg.heads,
            "top_k": cfg.top_k,
            "memory_index": cfg.memory_index,
            "memory_capacity": cfg.memory_capacity,
        },
        "xl": {"heads": cfg.heads, "mem_len": cfg.mem_len or cfg.window},
        "memn2n": {"hops": cfg.hops, "memory_size": cfg.memory_size},
        "ntm": {
            "slots": cfg.slots,
            "slot_width": cfg.slot_width,
            "controller": cfg.controller,
            "controller_size": cfg.controller_size,
        },
    }[kind]


def layer_kinds(cfg: MemoryModelConfig) -> list[str]:
    """Memorizing Transformers put the kNN memory in one layer (Wu et al. 2022, §3); the rest attend locally."""
    if cfg.memory != "knn":
        return [cfg.memory] * cfg.layers
    kinds = ["attention"] * cfg.layers
    kinds[cfg.knn_layer] = "knn"
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

    def __init__(self, cfg: MemoryModelConfig, input_size: int, output_size: int, tokens: bool):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.embed = nn.Embedding(input_size, d) if tokens else nn.Linear(input_size, d)
        positions = (
            cfg.positions
            if cfg.positions != "auto"
            else ("sinusoidal" if cfg.memory in ("attention", "knn") else "none")
        )
        self.use_positions = positions == "sinusoidal"
        self.blocks = nn.ModuleList(
            Block(build_memory(kind, d, **memory_options(cfg, kind)), d, cfg.ffn) for kind in layer_kinds(cfg)
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
