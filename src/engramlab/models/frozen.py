"""The language model that Frozen and Flamingo keep frozen: a small decoder-only transformer over
words, built from the generalist's pre-norm :class:`~engramlab.models.gato.Block` (nanoGPT's
layout), with learned absolute positions and an output layer tied to the token table.

Frozen (Tsimpoukelli et al. 2021, §3.1) feeds a *prefix* of visual embeddings in front of the
token embeddings; Flamingo (Alayrac et al. 2022, §2.2) inserts gated cross-attention blocks
*before* each frozen LM block. :meth:`LanguageModel.forward` serves both: ``prefix`` (B, P, width)
embeddings go first, and ``before_block(i, x)`` may change the residual stream in front of block
``i``. With neither, it is the plain LM.

:func:`fingerprint` hashes every parameter and buffer, so that a test can assert that the LM is
bit-identical after a stage that must not change it (Frozen's frozen LM; open_flamingo unfreezes
the input embeddings by default, a pitfall, ``../shared/reference/next-systems.md`` §1.6).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engramlab.config import HeadsDivideWidth
from engramlab.models.gato import Block, gpt2_init


class LMConfig(HeadsDivideWidth):
    """The shape of the small LM (``../shared/reference/next-systems.md`` §1.3: 4 layers, width
    128, 4 heads, context 128, a word vocabulary of about 3,000; nanoGPT's CPU recipe)."""

    width_field: ClassVar[str] = "width"

    layers: int = Field(4, ge=1, description="transformer blocks")
    width: int = Field(128, ge=8, description="embedding width")
    heads: int = Field(4, ge=1, description="attention heads; must divide width")
    mlp: int = Field(512, ge=1, description="MLP hidden width (4 x width, as GPT-2)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on attention and each residual branch")
    context: int = Field(128, ge=8, description="the longest sequence, prefix included (rows of the position table)")


class LanguageModel(nn.Module):
    """``forward(ids, prefix=None, before_block=None)``: ids (B, T) -> logits (B, P + T, vocab),
    where P is the prefix's length. Causal: position t sees positions ≤ t only."""

    def __init__(self, cfg: LMConfig, vocab: int):
        super().__init__()
        self.cfg = cfg
        self.tokens = nn.Embedding(vocab, cfg.width)
        self.positions = nn.Embedding(cfg.context, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)
        self.apply(gpt2_init)

    def forward(
        self, ids: Tensor, prefix: Tensor | None = None, before_block: Callable[[int, Tensor], Tensor] | None = None
    ) -> Tensor:
        x = self.tokens(ids)
        if prefix is not None:
            x = torch.cat([prefix, x], dim=1)
        if x.shape[1] > self.cfg.context:
            raise ValueError(f"sequence of {x.shape[1]} positions; the model's context is {self.cfg.context}")
        x = x + self.positions(torch.arange(x.shape[1], device=x.device))
        for i, block in enumerate(self.blocks):
            if before_block is not None:
                x = before_block(i, x)
            x, _ = block(x, None, None)
        # logits against the token table (weights tied, as GPT-2)
        return self.norm(x) @ self.tokens.weight.T

    def loss(self, ids: Tensor, targets: Tensor) -> Tensor:
        """Mean next-word cross-entropy; ``targets`` (B, T) equal to -100 are ignored."""
        return F.cross_entropy(self(ids).flatten(0, 1), targets.flatten(), ignore_index=-100)


def fingerprint(module: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes and bytes), in order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()
