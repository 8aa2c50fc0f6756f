"""A Gato-style generalist: one decoder-only transformer over the tokens of every modality.

Reed et al. 2022, "A Generalist Agent" (arXiv 2205.06175):

- **Embedding** (§2.2): a token id is looked up in one table shared by text, discrete and
  continuous values; an image patch (``PATCH`` id) is embedded by a single pre-activation ResNet
  block (GroupNorm, GELU; App. C.3) on its pixels plus learned row and column position tables
  over 128 quantised values: in training a position is sampled uniformly inside the patch's
  interval, in evaluation the interval's rounded mean is used. Every token adds a learned
  **local position** embedding, its place inside its timestep (App. C.2). The paper names no
  global position; with ``rotary`` (ours), rotary position embeddings (Su et al. 2021) on
  queries and keys give the tokens' order, so the model can tell the latest observation from
  older ones that share its local positions (without it LunarLander stayed near 0 %, see
  docs/generalist.md).
- **Transformer** (§2.3): pre-norm decoder-only blocks with causal self-attention and a GELU
  MLP (nanoGPT's layout); the output layer shares the token table.
- **Loss** (§2.3): masked next-token cross-entropy; only tokens marked as targets (text and
  actions) count.
- **Decoding** (§2.4): a key/value cache, so each new token costs one row of attention;
  rows of a batch may be left-padded (``key_mask``) to share one cache.

``GatoConfig(layers, width, heads, ...)``; the paper's smallest model is 8 layers × 768 with
24 heads (79M); our ``quick`` one is about 1M parameters (experiments/generalist/generalist.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engramlab.tasks import gato_tokens as tok

PATCH_LEVELS = 128


@dataclass
class GatoConfig:
    layers: int = 4
    width: int = 128
    heads: int = 4
    mlp: int = 512
    dropout: float = 0.1
    local_positions: int = 512  # most tokens in one timestep
    patch: int = 7  # patch side in pixels
    channels: int = 1  # image channels
    patch_groups: int = 8  # GroupNorm groups of the patch ResNet block (paper: 32)
    smooth_bins: bool = True  # start neighbouring continuous bins at nearby embeddings (ours)
    rotary: bool = False  # rotary positions on queries and keys, the tokens' order (ours; the paper names none)


class PatchResNet(nn.Module):
    """One pre-activation ResNet block on a patch, then a linear map to the model width (App. C.3)."""

    def __init__(self, cfg: GatoConfig):
        super().__init__()
        hidden = max(cfg.patch_groups, 16)
        self.lift = nn.Conv2d(cfg.channels, hidden, 1)
        self.norm1, self.conv1 = nn.GroupNorm(cfg.patch_groups, hidden), nn.Conv2d(hidden, hidden, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(cfg.patch_groups, hidden), nn.Conv2d(hidden, hidden, 3, padding=1)
        self.out = nn.Linear(hidden * cfg.patch * cfg.patch, cfg.width)

    def forward(self, pixels: Tensor) -> Tensor:  # (K, C, p, p) -> (K, width)
        x = self.lift(pixels)
        x = x + self.conv2(F.gelu(self.norm2(self.conv1(F.gelu(self.norm1(x))))))
        return self.out(x.flatten(1))


def rotary_angles(positions: Tensor, head_dim: int, base: float = 10_000.0) -> tuple[Tensor, Tensor]:
    """cos and sin (T, head_dim / 2) of rotary position embeddings (Su et al. 2021, RoFormer §3.4)."""
    frequencies = base ** -(torch.arange(head_dim // 2, device=positions.device) / (head_dim // 2))
    angle = positions[:, None].float() * frequencies[None]
    return angle.cos(), angle.sin()


def rotate(x: Tensor, angles: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate each pair (x_i, x_{i + d/2}) of queries or keys (B, H, T, d) by its position's angle:
    a query-key product then depends on their distance only, so left padding and a rebuilt cache
    change nothing."""
    cos, sin = angles
    a, b = x.chunk(2, dim=-1)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


class Block(nn.Module):
    def __init__(self, cfg: GatoConfig):
        super().__init__()
        self.heads = cfg.heads
        self.norm1, self.norm2 = nn.LayerNorm(cfg.width), nn.LayerNorm(cfg.width)
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.mlp = nn.Sequential(nn.Linear(cfg.width, cfg.mlp), nn.GELU(), nn.Linear(cfg.mlp, cfg.width))
        self.dropout = cfg.dropout

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None,
        cache: tuple[Tensor, Tensor] | None,
        angles: tuple[Tensor, Tensor] | None = None,
    ):
        q, k, v = self.qkv(self.norm1(x)).split(x.shape[-1], dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, H, T, d)
        if angles is not None:  # cached keys were rotated when they were made
            q, k = rotate(q, angles), rotate(k, angles)
        if cache is not None:
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        p = self.dropout if self.training else 0.0
        if mask is None:
            attended = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        x = x + F.dropout(self.proj(attended.transpose(1, 2).flatten(2)), p, self.training)
        x = x + F.dropout(self.mlp(self.norm2(x)), p, self.training)
        return x, (k, v)


class Gato(nn.Module):
    def __init__(self, cfg: GatoConfig):
        super().__init__()
        self.cfg = cfg
        self.tokens = nn.Embedding(tok.VOCAB_SIZE, cfg.width)
        self.local = nn.Embedding(cfg.local_positions, cfg.width)
        self.patches = PatchResNet(cfg)
        self.patch_row = nn.Embedding(PATCH_LEVELS, cfg.width)
        self.patch_col = nn.Embedding(PATCH_LEVELS, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)
        self.apply(self._init)
        if cfg.smooth_bins:
            self._smooth_bins()

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    @torch.no_grad()
    def _smooth_bins(self, frequencies: int = 16) -> None:
        """Start the 1024 continuous bins' embeddings as a random linear map of Fourier features
        of the bin's value, so that bins near each other start near each other (a deviation in
        initialisation only; the table is then learned freely). With independent random rows,
        every bin of every observation dimension must be learned from its own examples, which
        the few thousand timesteps of a small task do not provide."""
        value = tok.bin_centre(torch.arange(tok.BINS))[:, None]
        angle = value * torch.arange(1, frequencies + 1)[None] * torch.pi / 2
        features = torch.cat([angle.sin(), angle.cos()], dim=1)
        mix = torch.randn(2 * frequencies, self.cfg.width) / (2 * frequencies) ** 0.5
        self.tokens.weight[tok.CONTINUOUS : tok.CONTINUOUS + tok.BINS] = 0.1 * features @ mix

    def patch_positions(self, intervals: Tensor) -> Tensor:
        """(K, 2, 2) [from, to) row and column intervals -> (K, width) position embeddings:
        sampled inside the interval while training, its rounded mean in evaluation (App. C.3)."""
        low, high = intervals[..., 0], intervals[..., 1]
        if self.training:
            place = low + (torch.rand(low.shape, device=low.device) * (high - low)).long()
        else:
            place = torch.round((low + high - 1).float() / 2).long()
        place = place.clamp(0, PATCH_LEVELS - 1)
        return self.patch_row(place[:, 0]) + self.patch_col(place[:, 1])

    def embed(self, ids: Tensor, local: Tensor, is_patch: Tensor | None, pixels, intervals) -> Tensor:
        x = self.tokens(ids) + self.local(local.clamp(max=self.cfg.local_positions - 1))
        if is_patch is not None and is_patch.any():
            x = x.clone()
            x[is_patch] = x[is_patch] + self.patches(pixels) + self.patch_positions(intervals)
        return x

    def forward(
        self,
        ids: Tensor,
        local: Tensor,
        is_patch: Tensor | None = None,
        pixels: Tensor | None = None,
        intervals: Tensor | None = None,
        key_mask: Tensor | None = None,
        cache: list[tuple[Tensor, Tensor]] | None = None,
    ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """(B, T) ids and local positions -> logits (B, T, vocab) and the new key/value cache.

        ``key_mask`` (B, past + T): False for padding that no token may attend to; ``cache``: the
        keys and values of the ``past`` tokens, from an earlier call."""
        hidden, cache = self.hidden(ids, local, is_patch, pixels, intervals, key_mask, cache)
        return self.logits(hidden), cache

    def logits(self, hidden: Tensor) -> Tensor:
        return hidden @ self.tokens.weight.T  # the output layer shares the token table

    def hidden(self, ids, local, is_patch=None, pixels=None, intervals=None, key_mask=None, cache=None):
        """The final (normalised) hidden states (B, T, width) and the new cache; see ``forward``."""
        x = self.embed(ids, local, is_patch, pixels, intervals)
        past = cache[0][0].shape[2] if cache else 0
        mask = None
        if key_mask is not None or past:
            total = past + ids.shape[1]
            rows = torch.arange(past, total, device=ids.device)[:, None]
            columns = torch.arange(total, device=ids.device)[None]
            mask = (columns <= rows)[None, None]  # causal, (1, 1, T, total)
            if key_mask is not None:
                # padding is never attended to, except by itself: a query with no key at all
                # would give NaN on older PyTorch versions, and NaN times a zero weight spreads
                mask = mask & (key_mask[:, None, None, :] | (columns == rows)[None, None])
        angles = None
        if self.cfg.rotary:
            positions = torch.arange(past, past + ids.shape[1], device=ids.device)
            angles = rotary_angles(positions, self.cfg.width // self.cfg.heads)
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, mask, cache[i] if cache else None, angles)
            new_cache.append(kv)
        return self.norm(x), new_cache

    def loss(self, ids: Tensor, local: Tensor, target: Tensor, is_patch=None, pixels=None, intervals=None) -> Tensor:
        """Masked next-token cross-entropy (§2.3): token t + 1 is predicted at place t, and counts
        only when it is a target. The last token is never an input (nor, if a row was cut inside
        an image, its patch)."""
        if is_patch is not None:
            kept = is_patch.nonzero()[:, 1] < ids.shape[1] - 1
            is_patch, pixels, intervals = is_patch[:, :-1], pixels[kept], intervals[kept]
        hidden, _ = self.hidden(ids[:, :-1], local[:, :-1], is_patch, pixels, intervals)
        counted = target[:, 1:]
        return F.cross_entropy(self.logits(hidden[counted]), ids[:, 1:][counted])  # logits where they count
