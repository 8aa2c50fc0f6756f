"""A Gato-style generalist: one decoder-only transformer over the tokens of every modality.

Reed et al. 2022, "A Generalist Agent" (arXiv 2205.06175):

- **Embedding** (§2.2): a token id is looked up in one table shared by text, discrete and
  continuous values; an image patch (``PATCH`` id) is embedded by a single pre-activation ResNet
  block (GroupNorm, GELU; App. C.2) on its pixels plus learned row and column position tables
  over 128 quantised values: in training a position is sampled uniformly inside the patch's
  interval, in evaluation the interval's rounded mean is used (App. C.3). Every token adds a
  learned **local position** embedding, its place inside its timestep (App. C.3). The paper names
  no global position; with ``rotary`` (ours), rotary position embeddings (Su et al. 2021) on
  queries and keys give the tokens' order, so the model can tell the latest observation from
  older ones that share its local positions (without it LunarLander stayed near 0 %, see
  docs/generalist.md).
- **Transformer** (§2.3): pre-norm decoder-only blocks with causal self-attention and a GELU
  MLP (nanoGPT's layout); the output layer shares the token table.
- **Loss** (§2.3): masked next-token cross-entropy; only tokens marked as targets (text and
  actions) count.
- **Decoding** (§2.4): a key/value cache, so each new token costs one row of attention;
  rows of a batch may be left-padded (``key_mask``) to share one cache.

``Gato(GatoConfig(layers=..., width=..., heads=...), patch=16)``: the config is the model's shape
(the generalist's ``model:`` config section); the image patch side is the data's (the
generalist's ``data.patch``), so it is an argument. The paper's smallest model is 8 layers × 768
with 24 heads (79M), the config's defaults; our ``quick`` one is about 1M parameters
(experiments/generalist/generalist.py).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from engramlab.config import HeadsDivideWidth
from engramlab.tasks import gato_tokens as tok

PATCH_LEVELS = 128  # quantised row and column positions of a patch (App. C.3)
PATCH_CHANNELS = 16  # channels of the patch ResNet block (at least; more when patch_groups is larger)


class GatoConfig(HeadsDivideWidth):
    """The shape of a Gato model, checked when a config is read (one error line per bad value).

    The defaults are the paper's smallest model (App. C.1: 79M, 8 layers × 768, 24 heads, MLP 3072)
    and context (§2.4: 1024 tokens). ``patch_groups`` and ``channels`` default to what every
    published run used (8 groups, one grey channel), so a saved ``config.yaml`` without them
    builds the model it built."""

    width_field: ClassVar[str] = "width"

    layers: int = Field(8, ge=1, description="transformer blocks (§2.3, App. C.1; paper, smallest model: 8)")
    width: int = Field(768, ge=8, description="embedding width (App. C.1; paper: 768)")
    heads: int = Field(24, ge=1, description="attention heads; must divide width (App. C.1; paper: 24)")
    mlp: int = Field(3072, ge=1, description="MLP hidden width (App. C.1; paper: 3072)")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on attention and on each residual branch (paper: 0.1)")
    context: int = Field(
        1024,
        ge=16,
        description="tokens per sequence (§2.4; paper: 1024); also sizes the local-position table: "
        "max(context, 64) + 1 rows (App. C.3)",
    )
    smooth_bins: bool = Field(True, description="start continuous-bin embeddings smooth in the bin value (ours; §2.2)")
    rotary: bool = Field(False, description="rotary positions on queries and keys: the tokens' order (ours, RoFormer)")
    patch_groups: int = Field(8, ge=1, description="GroupNorm groups of the patch ResNet block (App. C.2; paper: 32)")
    channels: int = Field(1, ge=1, description="image channels of a patch (App. C.2; MNIST: 1)")

    @model_validator(mode="after")
    def _rotary_and_groups(self):
        if self.rotary and (self.width // self.heads) % 2:
            raise ValueError(f"model.rotary needs an even head width; width / heads = {self.width // self.heads}")
        if self.patch_groups < PATCH_CHANNELS and PATCH_CHANNELS % self.patch_groups:
            raise ValueError(
                f"model.patch_groups ({self.patch_groups}) must divide the patch block's {PATCH_CHANNELS} channels "
                f"or be at least {PATCH_CHANNELS}"
            )
        return self


class PatchResNet(nn.Module):
    """One pre-activation ResNet block on a patch, then a linear map to the model width (App. C.2):
    pixels (K, channels, patch, patch) -> embeddings (K, width)."""

    def __init__(self, cfg: GatoConfig, patch: int):
        super().__init__()
        hidden = max(cfg.patch_groups, PATCH_CHANNELS)
        self.lift = nn.Conv2d(cfg.channels, hidden, 1)
        self.norm1, self.conv1 = nn.GroupNorm(cfg.patch_groups, hidden), nn.Conv2d(hidden, hidden, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(cfg.patch_groups, hidden), nn.Conv2d(hidden, hidden, 3, padding=1)
        self.out = nn.Linear(hidden * patch * patch, cfg.width)

    def forward(self, pixels: Tensor) -> Tensor:  # (K, C, p, p) -> (K, width)
        # h = W_lift * pixels  (a 1 x 1 convolution up to the block's channels)
        x = self.lift(pixels)
        # h <- h + conv2(GELU(GN2(conv1(GELU(GN1(h))))))  (pre-activation, "v2", ResNet block; App. C.2)
        x = x + self.conv2(F.gelu(self.norm2(self.conv1(F.gelu(self.norm1(x))))))
        # e = W_out vec(h)
        return self.out(x.flatten(1))


def rotary_angles(positions: Tensor, head_dim: int, base: float = 10_000.0) -> tuple[Tensor, Tensor]:
    """cos and sin (T, head_dim / 2) of rotary position embeddings (Su et al. 2021, RoFormer §3.2, §3.4)."""
    # θ_i = base^(-i / (d/2)),  i = 0 … d/2 - 1
    frequencies = base ** -(torch.arange(head_dim // 2, device=positions.device) / (head_dim // 2))
    # angle of position t in pair i: t θ_i
    angle = positions[:, None].float() * frequencies[None]
    return angle.cos(), angle.sin()


def rotate(x: Tensor, angles: tuple[Tensor, Tensor]) -> Tensor:
    """Rotate each pair (x_i, x_{i + d/2}) of queries or keys (B, H, T, d) by its position's angle:
    a query-key product then depends on their distance only, so left padding and a rebuilt cache
    change nothing. (RoFormer §3.4.2 pairs neighbours (x_2i, x_2i+1); pairing the two halves is
    the same rotation up to a fixed permutation of a head's dimensions.)"""
    cos, sin = angles
    a, b = x.chunk(2, dim=-1)
    # (a_i, b_i) <- (a_i cos tθ_i - b_i sin tθ_i,  a_i sin tθ_i + b_i cos tθ_i)
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


def gpt2_init(module: nn.Module) -> None:
    """GPT-2's initialisation (nanoGPT's): N(0, 0.02) for linear and embedding weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


class Block(nn.Module):
    """One pre-norm decoder block (§2.3, nanoGPT's layout): causal multi-head self-attention, then
    a GELU MLP, each added to the residual stream.

    ``forward(x, mask, cache, angles)``: ``x`` (B, T, width) -> (B, T, width) and this layer's keys
    and values (B, heads, past + T, width / heads) for the next call. ``mask`` (1 or B, 1, T,
    past + T), True where a query may attend to a key, or None for the plain causal mask (no cache,
    no padding); ``cache``: the ``past`` tokens' keys and values; ``angles``: rotary cos and sin of
    the T new positions, or None."""

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
        # q, k, v = LN1(x) W_qkv, each split into H heads of d = width / H
        q, k, v = self.qkv(self.norm1(x)).split(x.shape[-1], dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))  # (B, H, T, d)
        if angles is not None:  # cached keys were rotated when they were made
            # q_t <- R_t q_t, k_s <- R_s k_s, so (R_t q_t)ᵀ (R_s k_s) = q_tᵀ R_(s-t) k_s  (RoFormer §3.4)
            q, k = rotate(q, angles), rotate(k, angles)
        if cache is not None:
            # keys and values of the past tokens, then of these T
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        p = self.dropout if self.training else 0.0
        # attention_h = softmax(q kᵀ / √d + M) v,  M = 0 where the query may see the key, -∞ elsewhere
        if mask is None:
            attended = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        # x <- x + Dropout(W_o concat_h(attention_h))
        x = x + F.dropout(self.proj(attended.transpose(1, 2).flatten(2)), p, self.training)
        # x <- x + Dropout(W_2 GELU(W_1 LN2(x)))
        x = x + F.dropout(self.mlp(self.norm2(x)), p, self.training)
        return x, (k, v)


class Gato(nn.Module):
    """Gato (Reed et al. 2022, §2): a decoder-only transformer over one stream of tokens of every
    modality, predicting the next token.

    Embedding (§2.2, App. C.2, C.3): a token's row of the shared table plus its local position; an
    image patch adds its ResNet embedding and its row and column positions. Then ``cfg.layers``
    :class:`Block` s (§2.3), a final LayerNorm, and logits against the same token table.

    ``forward(ids, local, is_patch, pixels, intervals, key_mask, cache)``: ids and local positions
    (B, T) -> logits (B, T, vocab) and each layer's keys and values. Patches: ``is_patch`` (B, T)
    marks the ``PATCH`` tokens, ``pixels`` (K, channels, patch, patch) and ``intervals`` (K, 2, 2)
    are theirs, in the order of ``is_patch.nonzero()``. :meth:`loss` is the training loss (§2.3).

    ``patch``: the image patch side in pixels (paper: 16, §2.1), the data's choice (the
    generalist's ``data.patch``). The local-position table has ``max(cfg.context, 64) + 1`` rows,
    positions 0 … context: a timestep (or a text) never has more tokens than the context; a later
    position is clamped to the last row."""

    def __init__(self, cfg: GatoConfig, patch: int = 16):
        super().__init__()
        self.cfg = cfg
        self.local_positions = max(cfg.context, 64) + 1
        self.tokens = nn.Embedding(tok.VOCAB_SIZE, cfg.width)
        self.local = nn.Embedding(self.local_positions, cfg.width)
        self.patches = PatchResNet(cfg, patch)
        self.patch_row = nn.Embedding(PATCH_LEVELS, cfg.width)
        self.patch_col = nn.Embedding(PATCH_LEVELS, cfg.width)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.width)
        self.apply(gpt2_init)
        if cfg.smooth_bins:
            self._smooth_bins()

    @torch.no_grad()
    def _smooth_bins(self, frequencies: int = 16) -> None:
        """Start the 1024 continuous bins' embeddings as a random linear map of Fourier features
        of the bin's value, so that bins near each other start near each other (a deviation in
        initialisation only; the table is then learned freely). With independent random rows,
        every bin of every observation dimension must be learned from its own examples, which
        the few thousand timesteps of a small task do not provide."""
        value = tok.bin_centre(torch.arange(tok.BINS))[:, None]
        # φ(v) = [sin(k v π/2), cos(k v π/2)], k = 1 … frequencies
        angle = value * torch.arange(1, frequencies + 1)[None] * torch.pi / 2
        features = torch.cat([angle.sin(), angle.cos()], dim=1)
        mix = torch.randn(2 * frequencies, self.cfg.width) / (2 * frequencies) ** 0.5
        # E[bin] = 0.1 φ(v_bin) A,  A ~ N(0, 1 / (2 frequencies))
        self.tokens.weight[tok.CONTINUOUS : tok.CONTINUOUS + tok.BINS] = 0.1 * features @ mix

    def patch_positions(self, intervals: Tensor) -> Tensor:
        """(K, 2, 2) [from, to) row and column intervals -> (K, width) position embeddings:
        sampled inside the interval while training, its rounded mean in evaluation (App. C.3)."""
        low, high = intervals[..., 0], intervals[..., 1]
        if self.training:
            # place ~ U[from, to)
            place = low + (torch.rand(low.shape, device=low.device) * (high - low)).long()
        else:
            # place = round((from + to - 1) / 2)
            place = torch.round((low + high - 1).float() / 2).long()
        place = place.clamp(0, PATCH_LEVELS - 1)
        # P_row[r] + P_col[c]
        return self.patch_row(place[:, 0]) + self.patch_col(place[:, 1])

    def embed(self, ids: Tensor, local: Tensor, is_patch: Tensor | None, pixels, intervals) -> Tensor:
        """(B, T) ids and local positions (and the patches, see the class) -> (B, T, width)."""
        # x_l = E[s_l] + P_local[local_l]  (§2.2, App. C.3)
        x = self.tokens(ids) + self.local(local.clamp(max=self.local_positions - 1))
        if is_patch is not None and is_patch.any():
            x = x.clone()
            # a patch also adds its pixels and place: x_l += ResNet(pixels_l) + P_row[r_l] + P_col[c_l]  (App. C.2, C.3)
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
        # logits_l = h_l Eᵀ: the output layer shares the token table, p(s_(l+1) | s_≤l) = softmax(logits_l)
        return hidden @ self.tokens.weight.T

    def hidden(self, ids, local, is_patch=None, pixels=None, intervals=None, key_mask=None, cache=None):
        """The final (normalised) hidden states (B, T, width) and the new cache; see ``forward``."""
        x = self.embed(ids, local, is_patch, pixels, intervals)
        past = cache[0][0].shape[2] if cache else 0
        mask = None
        if key_mask is not None or past:
            total = past + ids.shape[1]
            rows = torch.arange(past, total, device=ids.device)[:, None]
            columns = torch.arange(total, device=ids.device)[None]
            # causal (§2.3): the query at place t sees the key at place s when s ≤ t; (1, 1, T, total)
            mask = (columns <= rows)[None, None]
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
        # h = LN_f(x)
        return self.norm(x), new_cache

    def loss(self, ids: Tensor, local: Tensor, target: Tensor, is_patch=None, pixels=None, intervals=None) -> Tensor:
        """Masked next-token cross-entropy (§2.3): token t + 1 is predicted at place t, and counts
        only when it is a target. The last token is never an input (nor, if a row was cut inside
        an image, its patch). The paper sums over the counted tokens; this is their mean."""
        if is_patch is not None:
            kept = is_patch.nonzero()[:, 1] < ids.shape[1] - 1
            is_patch, pixels, intervals = is_patch[:, :-1], pixels[kept], intervals[kept]
        hidden, _ = self.hidden(ids[:, :-1], local[:, :-1], is_patch, pixels, intervals)
        counted = target[:, 1:]
        # L = -Σ_b Σ_l m(b, l) log p(s_l | s_<l) / Σ_b Σ_l m(b, l),  m: the target mask (§2.3)
        return F.cross_entropy(self.logits(hidden[counted]), ids[:, 1:][counted])  # logits where they count
