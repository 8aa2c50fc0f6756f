"""CoBERL's agents: an encoder, a gated transformer (GTrXL), a learnt gate and an LSTM, and the
masked contrastive loss that trains the transformer (Banino et al. 2022, ICLR, arXiv 2107.05431).

One actor-critic, :class:`ActorCritic`, whose core is switched by a flag (x-transformers style), so
that every arm of the experiment is the same code but for the core:

- ``none``: encoder → MLP (memoryless: the sanity baseline);
- ``lstm``: encoder → LSTM (R2D2's core);
- ``gtrxl``: encoder → GTrXL (Parisotto et al. 2020);
- ``coberl``: encoder → GTrXL → learnt gate with the encoder output → LSTM (CoBERL Fig. 1A);
  with ``contrastive > 0`` it also trains the transformer by masked prediction made contrastive
  (CoBERL §2.1, Fig. 1B): :func:`relic_loss`.

Acting (:meth:`ActorCritic.step`) sees one frame per environment and carries a state (the LSTM's
``h, c``; the transformer's cache of the last ``memory`` layer inputs). Training
(:meth:`ActorCritic.unroll`) replays a whole rollout from the state it started with, computing the
same numbers as acting did (the transformer reads the same window of earlier steps, episodes never
read each other), so that PPO's first ratio is exactly 1.

Deviations from the papers (also in the experiment's ``deviations``):

- relative positions are a learnt bias per head and clipped distance (as T5) instead of
  Transformer-XL's sinusoids: one layer then serves the causal RL pass and CoBERL's bidirectional
  masked pass (XL's relative shift has no negative distances);
- the encoder is MinAtar's network (one 3 × 3 convolution, 16 channels, a linear layer; Young &
  Tian 2019) instead of CoBERL's ResNet: the frames are 10 × 10;
- masked time steps are replaced by one learnt vector (BERT's 80/10/10 rule is not used).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Core = Literal["none", "lstm", "gtrxl", "coberl"]
CORES: tuple[str, ...] = ("none", "lstm", "gtrxl", "coberl")
State = dict[str, Tensor]


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights, constant bias: PPO's customary initialisation (CleanRL)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class Encoder(nn.Module):
    """MinAtar's network (Young & Tian 2019, §4): conv 3 × 3, 16 channels, ReLU, linear, ReLU."""

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 16, 3, padding=1)
        self.linear = layer_init(nn.Linear(16 * 10 * 10, width))

    def forward(self, frames: Tensor) -> Tensor:
        """(..., C, 10, 10) -> (..., width)."""
        batch = frames.shape[:-3]
        x = F.relu(self.conv(frames.flatten(0, -4)))
        return F.relu(self.linear(x.flatten(1))).unflatten(0, batch)


class GRUGate(nn.Module):
    """The GRU-type gate that replaces a residual connection (Parisotto et al. 2020, §3.2):
    ``r = σ(W_r y + U_r x)``, ``z = σ(W_z y + U_z x − b_g)``, ``ĥ = tanh(W_g y + U_g (r ⊙ x))``,
    ``g(x, y) = (1 − z) ⊙ x + z ⊙ ĥ``. With ``b_g = 2`` the gate starts near the identity on ``x``,
    which is what made transformers trainable in RL."""

    def __init__(self, width: int, bias: float = 2.0):
        super().__init__()
        self.w = nn.Linear(width, 3 * width, bias=False)  # W_r, W_z, W_g on y
        self.u = nn.Linear(width, 2 * width, bias=False)  # U_r, U_z on x
        self.u_g = nn.Linear(width, width, bias=False)
        self.bias = bias

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        w_r, w_z, w_g = self.w(y).chunk(3, dim=-1)
        u_r, u_z = self.u(x).chunk(2, dim=-1)
        r = torch.sigmoid(w_r + u_r)
        z = torch.sigmoid(w_z + u_z - self.bias)
        candidate = torch.tanh(w_g + self.u_g(r * x))
        return (1 - z) * x + z * candidate


class WindowAttention(nn.Module):
    """Multi-head attention from a segment to ``[cache; segment]`` with a learnt bias per head and
    relative distance (clipped to ± ``window``); which keys each query reads is given as a mask."""

    def __init__(self, width: int, heads: int, window: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"transformer width {width} must be a multiple of heads = {heads}")
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.distance_bias = nn.Parameter(torch.zeros(heads, 2 * window + 1))

    def forward(self, x: Tensor, context: Tensor, readable: Tensor) -> Tensor:
        """x (B, T, d) are the last T rows of context (B, L, d); readable (B, T, L) bool."""
        length_q, length_k = x.shape[1], context.shape[1]
        q = self.qkv(x)[..., : x.shape[-1]]
        k, v = self.qkv(context)[..., x.shape[-1] :].chunk(2, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        # query i sits at position L − T + i of the context; distance to key j, clipped
        distance = torch.arange(length_k - length_q, length_k)[:, None] - torch.arange(length_k)[None, :]
        bias = self.distance_bias[:, distance.clamp(-self.window, self.window) + self.window]  # (H, T, L)
        bias = bias.unsqueeze(0).masked_fill(~readable[:, None], float("-inf"))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.out(y.transpose(1, 2).flatten(2))


class GTrXLLayer(nn.Module):
    """One GTrXL block (Parisotto et al. 2020, §3, "identity map reordering" and gating):
    ``y = Attn(LN(x))``, ``x' = g(x, ReLU(y))``, ``e = MLP(LN(x'))``, ``out = g(x', ReLU(e))``.
    Keys and values come from the layer-normalised inputs of earlier steps (the cache)."""

    def __init__(self, width: int, heads: int, window: int, mlp: int, gate_bias: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = WindowAttention(width, heads, window)
        self.gate1, self.gate2 = GRUGate(width, gate_bias), GRUGate(width, gate_bias)
        self.mlp = nn.Sequential(nn.Linear(width, mlp), nn.ReLU(), nn.Linear(mlp, width))

    def forward(self, x: Tensor, cache: Tensor | None, readable: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the output and the layer's inputs ``LN(x)`` (what later steps read)."""
        h = self.norm1(x)
        context = h if cache is None else torch.cat([cache, h], dim=1)
        x = self.gate1(x, F.relu(self.attention(h, context, readable)))
        return self.gate2(x, F.relu(self.mlp(self.norm2(x)))), h


class GTrXL(nn.Module):
    """A stack of :class:`GTrXLLayer` with a cache of each layer's last ``memory`` inputs."""

    def __init__(self, width: int, layers: int, heads: int, memory: int, mlp: int, gate_bias: float = 2.0):
        super().__init__()
        self.memory = memory
        self.layers = nn.ModuleList(GTrXLLayer(width, heads, memory, mlp, gate_bias) for _ in range(layers))

    def forward(self, x: Tensor, caches: list[Tensor] | None, readable: Tensor) -> tuple[Tensor, list[Tensor]]:
        inputs = []
        for i, layer in enumerate(self.layers):
            x, h = layer(x, None if caches is None else caches[i], readable)
            inputs.append(h)
        return x, inputs


def episode_index(first: Tensor) -> Tensor:
    """(B, T) bool, True where an episode starts -> (B, T) the episode each step belongs to, 0 being
    the episode the cache belongs to (the one running when the segment began)."""
    return first.long().cumsum(dim=1)


def causal_window(first: Tensor, cache_valid: Tensor, window: int) -> Tensor:
    """Which keys of ``[cache (M); segment (T)]`` each step reads in the RL pass: itself and the
    ``window`` steps before it, of its own episode, that exist -> (B, T, M + T) bool.

    Exactly what acting reads one step at a time with a cache of ``window`` steps."""
    batch, length = first.shape
    cached = cache_valid.shape[1]
    episode = episode_index(first)
    key_episode = torch.cat([torch.zeros(batch, cached, dtype=torch.long), episode], dim=1)
    position_q = cached + torch.arange(length)
    position_k = torch.arange(cached + length)
    offset = position_q[:, None] - position_k[None, :]  # how far back key j is from query i
    band = (offset >= 0) & (offset <= window)
    key_valid = torch.cat([cache_valid, torch.ones(batch, length, dtype=torch.bool)], dim=1)
    return band[None] & (episode[:, :, None] == key_episode[:, None, :]) & key_valid[:, None, :]


def whole_episode(first: Tensor) -> Tensor:
    """Bidirectional reading (CoBERL's masked pass: no causal mask): every step of the segment in the
    same episode -> (B, T, T) bool."""
    episode = episode_index(first)
    return episode[:, :, None] == episode[:, None, :]


def relic_loss(predicted: Tensor, target: Tensor, temperature: float, consistency: float) -> tuple[Tensor, dict]:
    """CoBERL's contrastive loss on the masked steps (§2.1, Eq. 1-3, as we read them; RELIC,
    Mitrovic et al. 2021, extended to time).

    ``predicted`` (N, d) are the transformer's outputs at the N masked steps, ``target`` (N, d) the
    encoder's outputs there. With ``φ(a, b) = cos(a, b) / temperature``:

    - ``q_x[t] = softmax_m φ(x_t, y_m)`` and ``q_y[t] = softmax_m φ(y_t, x_m)``: the other masked
      steps of the batch and of time are the negatives;
    - loss ``= mean_t [−log q_x[t, t] − log q_y[t, t]]`` (InfoNCE both ways)
      ``+ consistency · mean_t [KL(sg(q_y[t]) ‖ q_x[t]) + KL(sg(q_x[t]) ‖ q_y[t])]`` (RELIC's invariance
      term: the two views should rank the candidates alike).
    """
    x, y = F.normalize(predicted, dim=-1), F.normalize(target, dim=-1)
    log_q_x = F.log_softmax(x @ y.T / temperature, dim=-1)
    log_q_y = F.log_softmax(y @ x.T / temperature, dim=-1)
    nce = -(log_q_x.diagonal().mean() + log_q_y.diagonal().mean())
    kl_x = F.kl_div(log_q_x, log_q_y.detach(), log_target=True, reduction="batchmean")
    kl_y = F.kl_div(log_q_y, log_q_x.detach(), log_target=True, reduction="batchmean")
    accuracy = (log_q_x.argmax(-1) == torch.arange(len(x))).float().mean()
    return nce + consistency * (kl_x + kl_y), {"nce": nce.item(), "kl": (kl_x + kl_y).item(), "acc": accuracy.item()}


class ActorCritic(nn.Module):
    """Encoder, core and PPO's heads (policy logits and value).

    ``width``: the encoder's output; ``hidden``: the LSTM's or the MLP's units; the transformer has
    ``layers`` layers of ``width`` units, ``heads`` heads, an MLP of ``mlp`` units and reads the last
    ``memory`` steps. ``contrastive`` weighs CoBERL's loss (``coberl`` only; 0: off), on a share
    ``mask_rate`` of the steps.

    ``learning_curve`` (updates, 3) is filled by the PPO stepper with, per update, the frames seen so
    far, the episodes that ended and the sum of their returns: it is saved with the weights, so the
    one evaluation path reads the learning curve from the trained model, resumed runs included.
    """

    def __init__(
        self,
        channels: int,
        actions: int,
        core: Core,
        *,
        width: int = 64,
        hidden: int = 256,
        layers: int = 2,
        heads: int = 4,
        memory: int = 32,
        mlp: int = 256,
        contrastive: float = 0.0,
        mask_rate: float = 0.15,
        temperature: float = 0.1,
        consistency: float = 1.0,
        updates: int = 1,
    ):
        super().__init__()
        if core not in CORES:
            raise ValueError(f"core {core!r}; known: {', '.join(CORES)}")
        if contrastive and core != "coberl":
            raise ValueError(f"the contrastive loss trains CoBERL's transformer; core {core!r} has none to train")
        self.core, self.memory, self.contrastive = core, memory, contrastive
        self.mask_rate, self.temperature, self.consistency = mask_rate, temperature, consistency
        self.encoder = Encoder(channels, width)
        out = width
        if core == "none":
            self.mlp = nn.Sequential(layer_init(nn.Linear(width, hidden)), nn.ReLU(),
                                     layer_init(nn.Linear(hidden, hidden)), nn.ReLU())  # fmt: skip
            out = hidden
        if core in ("gtrxl", "coberl"):
            self.transformer = GTrXL(width, layers, heads, memory, mlp)
        if core == "coberl":
            self.gate = GRUGate(width)  # combines the transformer's X_t with the encoder's Y_t (Fig. 1A)
            if contrastive:
                self.mask_vector = nn.Parameter(torch.zeros(width))
        if core in ("lstm", "coberl"):
            self.lstm = nn.LSTMCell(width, hidden)
            out = hidden
        self.policy = layer_init(nn.Linear(out, actions), std=0.01)
        self.value = layer_init(nn.Linear(out, 1), std=1.0)
        self.register_buffer("learning_curve", torch.zeros(updates, 3, dtype=torch.float64))

    # --- state ------------------------------------------------------------------------------
    def initial_state(self, n: int) -> State:
        state: State = {}
        if hasattr(self, "lstm"):
            state["h"] = torch.zeros(n, self.lstm.hidden_size)
            state["c"] = torch.zeros(n, self.lstm.hidden_size)
        if hasattr(self, "transformer"):
            width = self.encoder.linear.out_features
            for i in range(len(self.transformer.layers)):
                state[f"cache{i}"] = torch.zeros(n, self.memory, width)
            state["cache_valid"] = torch.zeros(n, self.memory, dtype=torch.bool)
        return state

    # --- acting: one step -------------------------------------------------------------------
    def step(self, frames: Tensor, first: Tensor, state: State) -> tuple[Tensor, Tensor, State]:
        """frames (N, C, 10, 10), first (N,) bool (the frame starts an episode: forget) ->
        logits (N, A), value (N,), the next state."""
        logits, value, state, _ = self.unroll(frames[:, None], first[:, None], state)
        return logits[:, 0], value[:, 0], state

    # --- training: a whole segment ------------------------------------------------------------
    def unroll(self, frames: Tensor, first: Tensor, state: State) -> tuple[Tensor, Tensor, State, Tensor]:
        """frames (N, T, C, 10, 10), first (N, T), the state before the segment -> logits (N, T, A),
        values (N, T), the state after it, and the encoder's outputs (N, T, width)."""
        y = self.encoder(frames)
        state = dict(state)
        x = y
        if hasattr(self, "transformer"):
            x = self.transformer_pass(y, first, state)
        if self.core == "coberl":
            x = self.gate(y, x)
        if hasattr(self, "lstm"):
            x = self.lstm_pass(x, first, state)
        if self.core == "none":
            x = self.mlp(x)
        return self.policy(x), self.value(x).squeeze(-1), state, y

    def transformer_pass(self, y: Tensor, first: Tensor, state: State) -> Tensor:
        layers = len(self.transformer.layers)
        valid = state["cache_valid"]
        readable = causal_window(first, valid, self.memory)
        caches = [state[f"cache{i}"] for i in range(layers)]
        x, inputs = self.transformer(y, caches, readable)
        # the new cache: the last `memory` layer inputs, readable while they belong to the episode
        # that is running at the end of the segment
        for i in range(layers):
            state[f"cache{i}"] = torch.cat([caches[i], inputs[i]], dim=1)[:, -self.memory :].detach()
        episode = episode_index(first)
        key_episode = torch.cat([torch.zeros_like(valid, dtype=torch.long), episode], dim=1)
        in_episode = torch.cat([valid, torch.ones_like(first)], dim=1) & (key_episode == episode[:, -1:])
        state["cache_valid"] = in_episode[:, -self.memory :]
        return x

    def lstm_pass(self, x: Tensor, first: Tensor, state: State) -> Tensor:
        h, c = state["h"], state["c"]
        outputs = []
        for t in range(x.shape[1]):
            keep = (~first[:, t]).to(x.dtype)[:, None]  # a new episode starts from a zero state
            h, c = self.lstm(x[:, t], (h * keep, c * keep))
            outputs.append(h)
        state["h"], state["c"] = h, c
        return torch.stack(outputs, dim=1)

    # --- CoBERL's auxiliary loss ---------------------------------------------------------------
    def auxiliary_loss(self, y: Tensor, first: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Mask a share ``mask_rate`` of the steps of the encoder's outputs ``y`` (N, T, width), run
        the transformer over the segment *without* the causal mask (each step reads its whole
        episode in the segment, CoBERL Fig. 1B), and score its outputs at the masked steps against
        the encoder's there with :func:`relic_loss`. Zero when ``contrastive`` is 0."""
        if not self.contrastive:
            return y.new_zeros(()), {}
        masked = torch.rand(y.shape[:2]) < self.mask_rate
        if masked.sum() < 2:  # a contrast needs a negative
            return y.new_zeros(()), {}
        inputs = torch.where(masked[..., None], self.mask_vector.expand_as(y), y)
        predicted, _ = self.transformer(inputs, None, whole_episode(first))
        loss, logs = relic_loss(predicted[masked], y[masked], self.temperature, self.consistency)
        return self.contrastive * loss, logs
