"""Segment-level recurrence with relative positions: Transformer-XL (Dai et al. 2019, arXiv 1901.02860).

A windowed transformer forgets everything at a window boundary. Transformer-XL keeps the
previous segment's layer inputs as a cache and lets the current segment attend to
``[cache; current]`` (§3.2)::

    h̃ = [SG(h_prev) ∘ h]          SG: stop-gradient, ∘: concatenation along time
    q = h W_q,   k = h̃ W_{k,E},   v = h̃ W_v

The cache is never trained through (stop-gradient), so the cost of a step does not grow with
the history, yet information can travel one segment further back per layer.

Absolute positions would collide (position 0 of this segment and of the cached one), so the
score between query i and key j uses only their distance i − j (§3.3)::

    A_ij = q_iᵀ k_j                (a) content
         + q_iᵀ W_{k,R} R_{i−j}    (b) content-dependent position bias
         + uᵀ k_j                  (c) global content bias
         + vᵀ W_{k,R} R_{i−j}      (d) global position bias

with ``R`` the sinusoid table of Vaswani et al. (§3.5) evaluated at distances, and ``u``, ``v``
learned per head. We compute (a)+(c) as ``(q + u)·k`` and (b)+(d) as ``(q + v)·W_{k,R} R``.

The state is ``{"inputs": (B, M, d_model), "valid": (B, M) bool}``: the cached layer inputs,
detached, and which of them exist (all, except after :meth:`Memory.reset` cleared a finished
sequence, whose zeroed rows become unreadable). ``M = mem_len`` (default: the segment length).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engramlab.memory.base import HeadsOptions, Memory, MemoryKind, extend_input_cache


def sinusoid_table(distances: Tensor, d_model: int) -> Tensor:
    """``R`` of §3.3: the sinusoids of Vaswani et al. 2017 (§3.5) at the given distances, (L, d_model)."""
    inverse_frequency = torch.exp(
        torch.arange(0, d_model, 2, dtype=torch.float32, device=distances.device) * (-math.log(10000.0) / d_model)
    )
    angles = distances.float()[:, None] * inverse_frequency[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)[:, :d_model]


def relative_shift(scores: Tensor) -> Tensor:
    """Turn scores indexed by (query, distance) into scores indexed by (query, key) (Appendix B).

    ``scores[..., i, c]`` (T queries, L = M + T keys) is the position score of query i with the
    distance ``L − 1 − c`` (column 0 is the farthest distance, the last column distance 0),
    computed for every query and every distance with one matrix product. Query i sits at
    position ``M + i`` of ``[cache; current]``, so its score with key j is at distance
    ``M + i − j``, i.e. column ``T − 1 − i + j``: row i has to move left by ``T − 1 − i``.

    Instead of a gather, the pad-and-reshape trick does it with views: prepend a zero column
    (rows of length L + 1), reread the flat buffer as rows of length T, drop the first row and
    reread as (T, L). Element (i, j) of the result is then the flat element ``T + iL + j`` of
    the padded matrix, which is row i, column ``T + j − i``, i.e. original column
    ``T − 1 − i + j``: exactly the shift wanted. This holds while ``j ≤ M + i``, the causal
    keys; the entries beyond wrap into the next row and are garbage that the causal mask hides.
    """
    *batch, length_q, length_k = scores.shape
    padded = F.pad(scores, (1, 0))  # (..., T, L + 1), a zero column in front
    padded = padded.view(*batch, length_k + 1, length_q)
    return padded[..., 1:, :].reshape(*batch, length_q, length_k)


class XLAttention(Memory):
    """``XLAttention(d_model, heads=4, mem_len=None, dropout=0.0)``: Transformer-XL attention.

    ``forward(x, state)`` attends causally from the segment ``x`` to ``[cache; x]`` and returns
    the new cache: the last ``mem_len`` (default ``x.shape[1]``) layer inputs, detached. With
    ``state=None`` the cache is empty: causal attention with relative positions over the segment.
    ``dropout`` is applied to the attention weights during training.
    """

    def __init__(self, d_model: int, heads: int = 4, mem_len: int | None = None, dropout: float = 0.0):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model = {d_model} must be a multiple of heads = {heads}")
        self.d_model, self.heads, self.mem_len, self.dropout = d_model, heads, mem_len, dropout
        self.d_head = d_model // heads
        self.query = nn.Linear(d_model, d_model, bias=False)  # W_q
        self.key_value = nn.Linear(d_model, 2 * d_model, bias=False)  # W_{k,E} and W_v
        self.position_key = nn.Linear(d_model, d_model, bias=False)  # W_{k,R}
        self.content_bias = nn.Parameter(torch.zeros(heads, self.d_head))  # u
        self.position_bias = nn.Parameter(torch.zeros(heads, self.d_head))  # v
        self.out = nn.Linear(d_model, d_model)

    def split_heads(self, x: Tensor) -> Tensor:
        """(..., L, d_model) -> (..., H, L, d_head)."""
        return x.unflatten(-1, (self.heads, self.d_head)).transpose(-3, -2)

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        batch, length, _ = x.shape
        cached = 0 if state is None else state["inputs"].shape[1]
        # h̃ = [SG(h_prev) ∘ h] (§3.2); the cache was detached when it was stored
        context, valid = extend_input_cache(state, x)  # (B, L, d_model), L = cached + T

        q = self.split_heads(self.query(x))  # (B, H, T, d_head)
        k, v = (self.split_heads(t) for t in self.key_value(context).chunk(2, dim=-1))  # (B, H, L, d_head)
        distances = torch.arange(context.shape[1] - 1, -1, -1, device=x.device)  # L − 1, ..., 0
        r = self.split_heads(self.position_key(sinusoid_table(distances, self.d_model).to(x.dtype)))  # (H, L, d_head)

        # terms (b) + (d) for every (query, distance), then moved to (query, key)
        position_scores = relative_shift((q + self.position_bias[:, None].to(q.dtype)) @ r.transpose(-2, -1))
        # query i (position cached + i) reads key j iff j ≤ cached + i and key j exists
        readable = torch.ones(length, context.shape[1], dtype=torch.bool, device=x.device).tril(diagonal=cached)
        readable = readable & valid[:, None, None, :]
        position_scores = (position_scores / math.sqrt(self.d_head)).masked_fill(~readable, float("-inf"))
        # terms (a) + (c) are the content product (q + u)·k; SDPA scales it by 1/√d_head and adds
        # the (already scaled) position scores before the softmax
        y = F.scaled_dot_product_attention(
            q + self.content_bias[:, None].to(q.dtype),
            k,
            v,
            attn_mask=position_scores,
            dropout_p=self.dropout if self.training else 0.0,
        )
        y = self.out(y.transpose(1, 2).reshape(batch, length, self.d_model))

        keep = self.mem_len or length
        new_state = {"inputs": context[:, -keep:].detach(), "valid": valid[:, -keep:]}
        return y, new_state


class XLOptions(HeadsOptions):
    mem_len: int | None = Field(None, ge=1, description="cached steps of the previous window (xl); null: window")


# relative positions (§3.3) give it order; the cache is as long as the segment unless set, and can be
# lengthened at evaluation (§3.2)
XL_KIND = MemoryKind(
    "xl", XLAttention, color="tab:cyan", options=XLOptions, window_option="mem_len", eval_options=("mem_len",)
)
MEMORY_KINDS = (XL_KIND,)  # what this module adds to engramlab.memory.MEMORY_KINDS
