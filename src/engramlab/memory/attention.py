"""Associative memory: causal softmax attention over the window, read as a "soft RAM".

A RAM stores values at addresses and a read returns the value whose address matches the query
exactly. Attention (Vaswani et al. 2017, §3.2.1, eq. 1) makes that read differentiable: every
stored value ``v_i`` is returned in proportion to how well its key ``k_i`` matches the query::

    read(q) = Σ_i softmax_i(k_iᵀ q / √d_head) v_i        i.e.  Attention(Q, K, V) = softmax(QKᵀ/√d) V

The softmax weights are a soft one-hot address: with a sharp match the read is a RAM lookup,
with several matches it is a weighted blend, and either way gradients reach the query, the keys
and the values. Here the stored pairs are the window's earlier positions (causal self-attention),
so :class:`Attention` is the windowed transformer: it remembers nothing between calls.

Persistent memory (Sukhbaatar et al. 2019, "Augmenting self-attention with persistent memory",
arXiv 1907.01470, §3–4) adds ``P`` learned key/value pairs per head to the stored pairs at every
position. They belong to no position, so they are never masked: every query sees
``P`` persistent slots then its causal slots, an attention matrix of shape ``(T, P + T)``. They
hold knowledge that does not depend on the context (the paper uses them to replace the
feed-forward sublayer).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engramlab.memory.base import HeadsOptions, Memory, MemoryKind


def soft_ram_weights(q: Tensor, k: Tensor, mask: Tensor | None = None) -> Tensor:
    """The read addresses ``softmax(q kᵀ / √d)`` of eq. 1 (Vaswani et al. 2017), spelled out.

    ``q`` (..., T_q, d), ``k`` (..., T_k, d); ``mask`` (T_q, T_k) or broadcastable, True where a
    query may read a slot (the convention of ``scaled_dot_product_attention``'s boolean mask).
    Returns (..., T_q, T_k), rows summing to one over the readable slots.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1)


def soft_ram_read(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """``Y = Σ_i softmax(Kᵀq)_i V_i`` (scaled by 1/√d): eq. 1 of Vaswani et al. 2017 computed explicitly.

    The reference the fused ``scaled_dot_product_attention`` path of :class:`Attention` is
    tested against. ``v`` (..., T_k, d_v); returns (..., T_q, d_v).
    """
    return soft_ram_weights(q, k, mask) @ v


def causal_mask_with_persistent(length: int, persistent: int, device: torch.device | None = None) -> Tensor:
    """Boolean (T, P + T) mask: query t reads the P persistent slots and the positions s ≤ t.

    Slot c is readable by query t iff c ≤ t + P: the first P columns are always readable, and
    column P + s is readable iff s ≤ t. That is a lower-triangular matrix shifted right by P.
    """
    return torch.ones(length, persistent + length, dtype=torch.bool, device=device).tril(diagonal=persistent)


class Attention(Memory):
    """``Attention(d_model, heads=4, persistent=0, dropout=0.0)``: multi-head causal attention.

    ``forward(x, state)`` reads only the current window ``x`` and returns ``state=None``: the
    windowed transformer keeps nothing from one window to the next. ``dropout`` is applied to the
    attention weights during training.
    """

    def __init__(self, d_model: int, heads: int = 4, persistent: int = 0, dropout: float = 0.0):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model = {d_model} must be a multiple of heads = {heads}")
        self.d_model, self.heads, self.persistent, self.dropout = d_model, heads, persistent, dropout
        self.d_head = d_model // heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        if persistent:
            # std 1/√d_head for keys and 1/√P for values, so that persistent scores start on the
            # scale of ordinary ones and a uniform read of the P values has unit scale
            self.persistent_keys = nn.Parameter(torch.randn(heads, persistent, self.d_head) / math.sqrt(self.d_head))
            self.persistent_values = nn.Parameter(torch.randn(heads, persistent, self.d_head) / math.sqrt(persistent))

    def queries_keys_values(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head ``q`` (B, H, T, d_head) and the stored ``k, v`` (B, H, P + T, d_head), persistent slots first."""
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, self.d_head).permute(2, 0, 3, 1, 4)
        if self.persistent:
            k = torch.cat([self.persistent_keys.expand(batch, -1, -1, -1), k], dim=2)
            v = torch.cat([self.persistent_values.expand(batch, -1, -1, -1), v], dim=2)
        return q, k, v

    def mask(self, length: int, device: torch.device | None = None) -> Tensor:
        return causal_mask_with_persistent(length, self.persistent, device)

    def merge_heads(self, y: Tensor) -> Tensor:
        """(B, H, T, d_head) -> (B, T, d_model), then the output projection W^O (§3.2.2)."""
        batch, _, length, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(batch, length, self.d_model))

    def forward(self, x: Tensor, state=None) -> tuple[Tensor, None]:
        q, k, v = self.queries_keys_values(x)
        dropout = self.dropout if self.training else 0.0
        if self.persistent:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask(x.shape[1], x.device), dropout_p=dropout)
        else:
            # the fused kernels have a dedicated causal path, faster than an explicit mask
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        return self.merge_heads(y), None

    @torch.no_grad()
    def attention_weights(self, x: Tensor) -> Tensor:
        """The read addresses (B, H, T, P + T) for inspection and plots (persistent columns first)."""
        q, k, _ = self.queries_keys_values(x)
        return soft_ram_weights(q, k, self.mask(x.shape[1], x.device))


class AttentionOptions(HeadsOptions):
    persistent: int = Field(0, ge=0, description="persistent memory vectors per head (attention)")


# attention has no notion of order: it needs positions added to its input
ATTENTION_KIND = MemoryKind("attention", Attention, color="tab:blue", options=AttentionOptions, knows_order=False)
MEMORY_KINDS = (ATTENTION_KIND,)  # what this module adds to engramlab.memory.MEMORY_KINDS
