"""The language model that Frozen and Flamingo keep frozen: a small decoder-only transformer over
words, built from the generalist's pre-norm :class:`~engramlab.models.gato.Block` (nanoGPT's
layout), with rotary positions (or a learned table) and an output layer tied to the token table.

Frozen (Tsimpoukelli et al. 2021, §3.1) feeds visual embeddings where the image sits in the text;
Flamingo (Alayrac et al. 2022, §2.2) inserts gated cross-attention blocks *before* frozen LM
blocks. :meth:`LanguageModel.hidden` serves both: ``inject=(where, embeddings)`` replaces the
token embeddings at ``where``, and ``before_block(i, x)`` may change the residual stream in front
of block ``i``. With neither, it is the plain LM. The vision sides follow: :class:`VisualPrefix`
(Frozen) and :class:`Flamingo` (Perceiver Resampler, gated cross-attention).

:func:`fingerprint` hashes every parameter and buffer, so that a test can assert that the LM is
bit-identical after a stage that must not change it (Frozen's frozen LM; open_flamingo unfreezes
the input embeddings by default, a pitfall, ``../shared/reference/next-systems.md`` §1.6).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engramlab.config import HeadsDivideWidth
from engramlab.models.gato import Block, gpt2_init, rotary_angles


class LMConfig(HeadsDivideWidth):
    """The shape of the small LM (``../shared/reference/next-systems.md`` §1.3: 4 layers, width
    128, 4 heads, context 128, a word vocabulary of about 3,000; nanoGPT's CPU recipe)."""

    width_field: ClassVar[str] = "width"

    layers: int = Field(4, ge=1, description="transformer blocks")
    width: int = Field(128, ge=8, description="embedding width")
    heads: int = Field(4, ge=1, description="attention heads; must divide width")
    mlp: int = Field(512, ge=1, description="MLP hidden width (4 x width, as GPT-2)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on attention and each residual branch")
    context: int = Field(320, ge=8, description="the longest sequence with learned positions (rows of the table)")
    positions: Literal["rotary", "learned"] = Field(
        "rotary",
        description="rotary (RoFormer; relative, as SmolLM2 and most LMs since) or learned absolute (GPT-2)",
    )


class LanguageModel(nn.Module):
    """``forward(ids, prefix=None, before_block=None)``: ids (B, T) -> logits (B, P + T, vocab),
    where P is the prefix's length. Causal: position t sees positions ≤ t only."""

    def __init__(self, cfg: LMConfig, vocab: int):
        super().__init__()
        self.cfg = cfg
        self.tokens = nn.Embedding(vocab, cfg.width)
        self.positions = nn.Embedding(cfg.context, cfg.width) if cfg.positions == "learned" else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)
        self.apply(gpt2_init)

    def forward(
        self,
        ids: Tensor,
        inject: tuple[Tensor, Tensor] | None = None,
        before_block: Callable[[int, Tensor], Tensor] | None = None,
    ) -> Tensor:
        """ids (B, T) -> logits (B, T, vocab); see :meth:`hidden`."""
        return self.logits(self.hidden(ids, inject, before_block))

    def hidden(
        self,
        ids: Tensor,
        inject: tuple[Tensor, Tensor] | None = None,
        before_block: Callable[[int, Tensor], Tensor] | None = None,
    ) -> Tensor:
        """ids (B, T) -> the final normalised hidden states (B, T, width). ``inject = (where,
        embeddings)``: the embeddings (B, len(where), width) replace the token embeddings at
        positions ``where`` (Frozen's visual prefix, §3.1). ``before_block(i, x)`` may change the
        residual stream in front of block ``i`` (Flamingo's gated cross-attention, §2.2)."""
        x = self.tokens(ids)
        if inject is not None:
            where, embeddings = inject
            x = x.index_copy(1, where, embeddings)
        angles = None
        if self.positions is not None:
            if x.shape[1] > self.cfg.context:
                raise ValueError(f"sequence of {x.shape[1]} positions; the model's context is {self.cfg.context}")
            x = x + self.positions(torch.arange(x.shape[1], device=x.device))
        else:
            angles = rotary_angles(torch.arange(x.shape[1], device=x.device), self.cfg.width // self.cfg.heads)
        for i, block in enumerate(self.blocks):
            if before_block is not None:
                x = before_block(i, x)
            x, _ = block(x, None, None, angles)
        return self.norm(x)

    def logits(self, hidden: Tensor) -> Tensor:
        """Scores against the token table (weights tied, as GPT-2)."""
        return hidden @ self.tokens.weight.T

    def loss(self, ids: Tensor, targets: Tensor, inject: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Mean next-word cross-entropy; ``targets`` (B, T) equal to -100 are ignored; ``inject`` as
        in :meth:`hidden`."""
        return F.cross_entropy(self(ids, inject).flatten(0, 1), targets.flatten(), ignore_index=-100)


def fingerprint(module: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names, dtypes, shapes and bytes), in order."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)}".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# the vision side


class ImageEncoder(nn.Module):
    """A small CNN for 28×28 digits, standing in for Frozen's NF-ResNet-50 and Flamingo's NFNet:
    three 3×3 convolutions with GELU and 2×2 max-pooling. ``forward(images)`` (B, 1, 28, 28) ->
    the 7×7 feature map as 49 vectors (B, 49, channels), which Flamingo's resampler reads, and a
    pooled vector (B, features), which Frozen maps to its prefix (§3.1: the final pooled output)."""

    def __init__(self, channels: int = 32, features: int = 128):
        super().__init__()
        conv = lambda cin, cout: nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GELU(), nn.MaxPool2d(2))
        self.grid = nn.Sequential(conv(1, channels), conv(channels, 2 * channels))  # 28 -> 14 -> 7
        self.head = nn.Sequential(conv(2 * channels, 2 * channels), nn.Flatten(), nn.Linear(18 * channels, features))
        self.channels, self.features = 2 * channels, features

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        grid = self.grid(images)
        return grid.flatten(2).transpose(1, 2), self.head(grid)


class VisualPrefix(nn.Module):
    """Frozen's vision side (Tsimpoukelli et al. 2021, §3.1): the pooled image vector, linearly
    mapped to ``n`` embeddings of the LM's width (n = 2, the paper's best, §4.1).

    A LayerNorm with its gain set to the LM's typical token-embedding norm keeps the prefix on the
    token manifold, where the frozen LM's first LayerNorm does not saturate
    (``../shared/reference/next-systems.md`` §1.6); the paper maps linearly, with no norm."""

    def __init__(self, width: int, n: int = 2, channels: int = 32, features: int = 128, token_rms: float = 1.0):
        super().__init__()
        self.encoder = ImageEncoder(channels, features)
        self.project = nn.Linear(features, n * width)
        self.norm = nn.LayerNorm(width)
        nn.init.constant_(self.norm.weight, token_rms)
        self.n = n

    def forward(self, images: Tensor) -> Tensor:  # (B, 1, 28, 28) -> (B, n, width)
        _, pooled = self.encoder(images)
        return self.norm(self.project(pooled).unflatten(-1, (self.n, -1)))


def quantize(prefix: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    """Each prefix embedding replaced by its nearest row of ``codebook`` (the LM's token embeddings,
    L2 distance), with the straight-through gradient and the commitment loss of VQ-VAE (van den
    Oord et al. 2017, Eq. 3: ‖p − sg(e)‖²; the codebook is the frozen LM's, so its own term is
    dropped). So the LM reads each image as one of its words: LQAE's quantizer (Liu et al. 2023,
    §3), not Frozen's continuous prefix. Returns (quantized prefix, commitment loss)."""
    codebook = codebook.detach()
    nearest = torch.cdist(prefix.flatten(0, -2), codebook).argmin(-1)
    words = codebook[nearest].view_as(prefix)
    return prefix + (words - prefix).detach(), F.mse_loss(prefix, words)


def attention(q: Tensor, kv: Tensor, heads: int, mask: Tensor | None = None) -> Tensor:
    """Multi-head scaled dot-product attention of ``q`` (B, T, D) on ``kv`` (B, S, D), already
    projected; ``mask`` (T, S) or (B, T, S), True where a query may attend."""
    split = lambda t: t.unflatten(-1, (heads, -1)).transpose(1, 2)
    mask = None if mask is None else mask[:, None] if mask.dim() == 3 else mask
    k, v = kv.chunk(2, dim=-1)
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=mask)
    return out.transpose(1, 2).flatten(2)


class PerceiverResampler(nn.Module):
    """Flamingo's Perceiver Resampler (Alayrac et al. 2022, §2.1, Fig. 5): ``latents`` learned
    queries attend to the image's feature vectors *and to themselves* (keys and values are the
    concatenation), then a feed-forward layer; ``depth`` such layers. (B, N, D) -> (B, latents, D)."""

    def __init__(self, width: int, latents: int = 8, depth: int = 1, heads: int = 4):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(latents, width) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm_x": nn.LayerNorm(width),
                    "norm_l": nn.LayerNorm(width),
                    "q": nn.Linear(width, width, bias=False),
                    "kv": nn.Linear(width, 2 * width, bias=False),
                    "out": nn.Linear(width, width, bias=False),
                    "ffw": nn.Sequential(
                        nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
                    ),
                }
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.heads = heads

    def forward(self, x: Tensor) -> Tensor:
        latents = self.latents.expand(x.shape[0], -1, -1)
        for layer in self.layers:
            # latents += attn(q = latents, kv = [x, latents])
            keys = torch.cat([layer["norm_x"](x), layer["norm_l"](latents)], dim=1)
            latents = latents + layer["out"](
                attention(layer["q"](layer["norm_l"](latents)), layer["kv"](keys), self.heads)
            )
            latents = latents + layer["ffw"](latents)
        return self.norm(latents)


class GatedCrossAttention(nn.Module):
    """Flamingo's GATED XATTN-DENSE (§2.2, Fig. 4): ``y += tanh(α)·xattn(y, x)``, then
    ``y += tanh(β)·ffw(y)``, with α = β = 0 at the start, so that the model begins as the LM."""

    def __init__(self, width: int, heads: int = 4):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.q = nn.Linear(width, width, bias=False)
        self.kv = nn.Linear(width, 2 * width, bias=False)
        self.out = nn.Linear(width, width, bias=False)
        self.ffw = nn.Sequential(
            nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )
        self.alpha, self.beta = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.heads = heads

    def forward(self, y: Tensor, media: Tensor, mask: Tensor, seen: Tensor) -> Tensor:
        """y (B, T, D); media (B, M, D); mask (B or 1, T, M): True where text may attend;
        seen (B or 1, T, 1): 1 where some image precedes the text (else no cross-attention)."""
        attended = attention(self.q(self.norm(y)), self.kv(media), self.heads, mask | ~seen.bool())
        y = y + torch.tanh(self.alpha) * self.out(attended) * seen
        return y + torch.tanh(self.beta) * self.ffw(y)


def latest_image_mask(slots: Tensor, length: int, latents: int) -> tuple[Tensor, Tensor]:
    """Flamingo's ``media_locations`` rule (§2.2, "only the image immediately before"): the text at
    position t attends to the latents of the last image whose slot starts at or before t.
    ``slots`` (S,) sorted start positions -> mask (1, length, S·latents) and seen (1, length, 1)."""
    positions = torch.arange(length, device=slots.device)
    latest = (slots[None, :] <= positions[:, None]).sum(-1) - 1  # (T,) index of the latest image, -1: none
    image_of_key = torch.arange(len(slots), device=slots.device).repeat_interleave(latents)
    mask = latest[:, None] == image_of_key[None, :]
    return mask[None], (latest >= 0).float()[None, :, None]


class Flamingo(nn.Module):
    """The frozen LM with Flamingo's vision side (Alayrac et al. 2022, §2): the CNN's feature map,
    a Perceiver Resampler, and a gated cross-attention block in front of every LM block. The LM's
    own token stream holds ``<img>`` where each image sits; its parameters are not changed here."""

    def __init__(self, lm: LanguageModel, channels: int = 32, latents: int = 8, depth: int = 1, every: int = 1):
        super().__init__()
        width, heads = lm.cfg.width, lm.cfg.heads
        self.lm = lm
        self.encoder = ImageEncoder(channels)
        self.lift = nn.Linear(self.encoder.channels, width)
        self.resampler = PerceiverResampler(width, latents, depth, heads)
        self.xattn = nn.ModuleDict({str(i): GatedCrossAttention(width, heads) for i in range(0, lm.cfg.layers, every)})

    def media(self, images: Tensor) -> Tensor:
        """(B, S, 1, 28, 28) -> (B, S·latents, width)"""
        grid, _ = self.encoder(images.flatten(0, 1))
        latents = self.resampler(self.lift(grid))
        return latents.unflatten(0, images.shape[:2]).flatten(1, 2)

    def forward(self, ids: Tensor, slots: Tensor, images: Tensor) -> Tensor:
        """ids (B, T) with images (B, S, 1, 28, 28) whose slots start at ``slots`` (S,) -> logits."""
        return self.lm.logits(self.hidden(ids, slots, images))

    def hidden(self, ids: Tensor, slots: Tensor, images: Tensor) -> Tensor:
        media = self.media(images)
        mask, seen = latest_image_mask(slots, ids.shape[1], media.shape[1] // images.shape[1])

        def cross_attend(i: int, x: Tensor) -> Tensor:
            block = self.xattn[str(i)] if str(i) in self.xattn else None
            return x if block is None else block(x, media, mask, seen)

        return self.lm.hidden(ids, before_block=cross_attend)
