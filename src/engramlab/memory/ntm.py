"""Neural Turing Machine: a controller that reads and writes an addressable memory matrix.

Graves, Wayne & Danihelka 2014, "Neural Turing Machines", arXiv 1410.5401, §3. A controller
network (an LSTM or a feed-forward layer) sees the input and what its heads read at the previous
step; from its output, every head emits the parameters of a weighting ``w`` over the ``N`` slots
of the memory ``M`` (N × M_width) and reads from or writes to the memory through it.

Reading and writing (§3.1–3.2)::

    r_t = Σ_i w_t(i) M_t(i)                                   (2)
    M̃_t(i) = M_{t-1}(i) [1 - w_t(i) e_t]                      (3)  erase, e_t ∈ [0, 1]^M
    M_t(i) = M̃_t(i) + w_t(i) a_t                              (4)  add

Addressing (§3.3), one pipeline per head, with ``w_{t-1}`` the head's previous weighting::

    w^c_t(i) = softmax_i(β_t K[k_t, M_t(i)]),  K = cosine    (5, 6)  content, β_t = softplus(·) ≥ 0
    w^g_t = g_t w^c_t + (1 - g_t) w_{t-1}                     (7)     interpolation, g_t = sigmoid(·)
    w̃_t(i) = Σ_j w^g_t(j) s_t(i - j)   (indices mod N)        (8)     circular shift, s_t = softmax(·)
    w_t(i) = w̃_t(i)^γ_t / Σ_j w̃_t(j)^γ_t                      (9)     sharpening, γ_t = 1 + softplus(·)

Every addressing step is a standalone function below (``content_weights``, ``interpolate``,
``circular_shift``, ``sharpen``), so each can be tested by hand. All heads of a kind are
addressed in one tensor op, and everything is batched; the only Python loop is over time.

Choices the paper leaves open, and deviations from it:

- **Multiple write heads** follow §3.2: erasures multiply (their order does not matter), additions
  sum. Within a step the heads **write, then read**, as in the DNC (Graves et al. 2016), so a read
  can return what was written at the same step.
- **Output activations**: erase ``sigmoid``, add ``tanh`` (bounded, so the memory cannot grow
  without limit over long sequences), keys linear (cosine similarity ignores their scale).
- **Initial state** (not learned): memory filled with a small constant, 1e-6 (Collier & Beel 2018,
  "Implementing Neural Turing Machines", arXiv 1807.08518, found a constant initialisation the
  most reliable); every head's weighting one-hot at slot 0, so location-based addressing starts
  from a defined place; the initial reads are read from that memory; controller state zero.
  :meth:`NTM.reset` puts this initial state back for finished sequences (plain zeroing would
  leave all-zero weightings and an all-zero memory, whose cosine similarity is undefined).
- **Stability**: the cosine similarity has an epsilon inside the norms, sharpening is a softmax
  of ``γ log(w̃ + ε)`` (no ``0^γ`` and no underflow when γ is large), so forward and backward
  stay finite over hundreds of steps.
- **Training** (not this module): the paper used RMSProp with momentum 0.9 and gradients clipped
  to (-10, 10); engramlab trains with Adam and gradient-norm clipping.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from engramlab.config import Config
from engramlab.memory.base import Memory, MemoryKind

INITIAL_MEMORY_VALUE = 1e-6
COSINE_EPS = 1e-8
SHARPEN_EPS = 1e-12

# ---------------------------------------------------------------------------------------------
# addressing (§3.3). Shapes: memory (B, N, M); per-head tensors (B, H, ...); weightings (B, H, N)


def cosine_similarity(keys: Tensor, memory: Tensor, eps: float = COSINE_EPS) -> Tensor:
    """K[k, M(i)] (eq. 6) for every head and slot: keys (B, H, M), memory (B, N, M) -> (B, H, N).

    The epsilon sits inside the square roots: the norms and their gradients stay finite even for
    an all-zero key or memory row.
    """
    dot = keys @ memory.transpose(1, 2)
    key_norm = (keys.pow(2).sum(-1, keepdim=True) + eps**2).sqrt()  # (B, H, 1)
    slot_norm = (memory.pow(2).sum(-1) + eps**2).sqrt().unsqueeze(1)  # (B, 1, N)
    return dot / (key_norm * slot_norm)


def content_weights(keys: Tensor, beta: Tensor, memory: Tensor) -> Tensor:
    """Content addressing (eq. 5): softmax over slots of β × cosine similarity; beta (B, H) ≥ 0."""
    return torch.softmax(beta.unsqueeze(-1) * cosine_similarity(keys, memory), dim=-1)


def interpolate(w_content: Tensor, w_prev: Tensor, gate: Tensor) -> Tensor:
    """Interpolation (eq. 7): g = 1 uses the content weighting, g = 0 keeps the previous one."""
    gate = gate.unsqueeze(-1)
    return gate * w_content + (1 - gate) * w_prev


def circular_shift(w: Tensor, shift: Tensor) -> Tensor:
    """Circular convolution (eq. 8): w (B, H, N), shift (B, H, 2S+1) over offsets -S..S.

    ``shift[..., S + k]`` is the weight of moving by ``+k`` slots: a one-hot weighting at slot i
    shifted by +1 lands on slot i + 1, and the last slot wraps around to slot 0.
    """
    slots, width = w.shape[-1], shift.shape[-1]
    offsets = torch.arange(width, device=w.device) - width // 2  # -S..S
    # source[i, k] = (i - offset_k) mod N: the slot whose weight moves to slot i by offset k
    source = (torch.arange(slots, device=w.device).unsqueeze(1) - offsets) % slots  # (N, 2S+1)
    return (w[..., source] * shift.unsqueeze(-2)).sum(-1)


def sharpen(w: Tensor, gamma: Tensor, eps: float = SHARPEN_EPS) -> Tensor:
    """Sharpening (eq. 9), w^γ renormalised, computed as softmax(γ log(w + ε)); gamma (B, H) ≥ 1.

    Working in log space avoids ``0^γ`` (whose gradient in γ is NaN) and the underflow of ``w^γ``
    to all zeros when γ is large; γ = 1 returns ``w`` up to ε.
    """
    return torch.softmax(gamma.unsqueeze(-1) * torch.log(w + eps), dim=-1)


def address(memory: Tensor, w_prev: Tensor, key, beta, gate, shift, gamma) -> Tensor:
    """The full addressing pipeline of Figure 2 (eqs. 5-9) for a group of heads -> (B, H, N)."""
    w = content_weights(key, beta, memory)
    w = interpolate(w, w_prev, gate)
    w = circular_shift(w, shift)
    return sharpen(w, gamma)


# ---------------------------------------------------------------------------------------------
# reading and writing (§3.1-3.2)


def read_memory(memory: Tensor, w: Tensor) -> Tensor:
    """Read (eq. 2): one vector per head, w (B, H, N) @ memory (B, N, M) -> (B, H, M)."""
    return w @ memory


def write_memory(memory: Tensor, w: Tensor, erase: Tensor, add: Tensor) -> Tensor:
    """Erase then add (eqs. 3-4) for all write heads at once: w (B, H, N), erase/add (B, H, M).

    Erasures of several heads multiply and additions sum (§3.2), so the heads' order is irrelevant.
    """
    keep = (1 - w.unsqueeze(-1) * erase.unsqueeze(-2)).prod(dim=1)  # (B, N, M)
    added = torch.einsum("bhn,bhm->bnm", w, add)
    return memory * keep + added


# ---------------------------------------------------------------------------------------------
# the module


class NTM(Memory):
    """``NTM(d_model, slots, slot_width, read_heads, write_heads, controller, controller_size, shift_range)``.

    ``forward(x (B, T, d_model), state) -> (y (B, T, d_model), state)``; the state is a dict:
    ``memory`` (B, N, M), ``read_w`` (B, R, N), ``write_w`` (B, W, N), ``reads`` (B, R, M) and, for
    the LSTM controller, ``h`` and ``c`` (B, controller_size).
    """

    def __init__(
        self,
        d_model: int,
        slots: int = 128,
        slot_width: int = 20,
        read_heads: int = 1,
        write_heads: int = 1,
        controller: Literal["lstm", "ff"] = "lstm",
        controller_size: int = 100,
        shift_range: int = 1,
    ):
        super().__init__()
        if controller not in ("lstm", "ff"):
            raise ValueError(f"NTM controller must be 'lstm' or 'ff', got {controller!r}")
        if min(slots, slot_width, read_heads, write_heads, controller_size) < 1 or shift_range < 0:
            raise ValueError("NTM sizes and head counts must be >= 1 and shift_range >= 0")
        if 2 * shift_range + 1 > slots:
            raise ValueError(
                f"NTM shift_range = {shift_range} needs slots >= 2 * shift_range + 1 = {2 * shift_range + 1}"
            )
        self.d_model, self.slots, self.slot_width = d_model, slots, slot_width
        self.read_heads, self.write_heads = read_heads, write_heads
        self.controller_kind, self.controller_size = controller, controller_size
        self.shift_width = 2 * shift_range + 1

        controller_in = d_model + read_heads * slot_width
        if controller == "lstm":
            self.controller = nn.LSTMCell(controller_in, controller_size)
        else:
            self.controller = nn.Linear(controller_in, controller_size)
        # per head: key (M), β, g, shift (2S+1), γ; write heads also erase (M) and add (M)
        self.address_size = slot_width + 3 + self.shift_width
        self.head_params = nn.Linear(
            controller_size, read_heads * self.address_size + write_heads * (self.address_size + 2 * slot_width)
        )
        self.output = nn.Linear(controller_size + read_heads * slot_width, d_model)

    # -- state ------------------------------------------------------------------------------

    def initial_state(self, batch: int, device=None, dtype=torch.float32) -> dict[str, Tensor]:
        """The empty memory (see the module docstring): constant memory, weightings on slot 0."""
        memory = torch.full((batch, self.slots, self.slot_width), INITIAL_MEMORY_VALUE, device=device, dtype=dtype)
        one_hot = torch.zeros(self.slots, device=device, dtype=dtype)
        one_hot[0] = 1.0
        read_w = one_hot.expand(batch, self.read_heads, -1).clone()
        state = {
            "memory": memory,
            "read_w": read_w,
            "write_w": one_hot.expand(batch, self.write_heads, -1).clone(),
            "reads": read_memory(memory, read_w),
        }
        if self.controller_kind == "lstm":
            state["h"] = torch.zeros(batch, self.controller_size, device=device, dtype=dtype)
            state["c"] = torch.zeros_like(state["h"])
        return state

    def reset(self, state: dict[str, Tensor], done: Tensor) -> dict[str, Tensor]:
        """Put the initial state back for the sequences where ``done`` (B,) is True."""
        if state is None:
            return None
        fresh = self.initial_state(done.shape[0], device=state["memory"].device, dtype=state["memory"].dtype)
        return {k: torch.where(done.view(-1, *([1] * (v.dim() - 1))), fresh[k], v) for k, v in state.items()}

    # -- one step ---------------------------------------------------------------------------

    def split_heads(self, params: Tensor, heads: int, extra: int = 0):
        """Raw head outputs (B, heads * (address_size + extra)) -> constrained addressing parameters.

        Returns (key, β, g, shift, γ, rest): the activations of eqs. 5-9 (softplus, sigmoid, softmax,
        1 + softplus) are applied here; ``rest`` holds the write heads' erase and add outputs.
        """
        p = params.view(params.shape[0], heads, self.address_size + extra)
        m, s = self.slot_width, self.shift_width
        key, beta, gate, shift, gamma, rest = p.split([m, 1, 1, s, 1, extra], dim=-1)
        return (
            key,
            F.softplus(beta.squeeze(-1)),
            torch.sigmoid(gate.squeeze(-1)),
            torch.softmax(shift, dim=-1),
            1 + F.softplus(gamma.squeeze(-1)),
            rest,
        )

    def step(self, x_t: Tensor, state: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """One time step: controller, write heads, read heads. Returns (controller output, state)."""
        batch = x_t.shape[0]
        controller_in = torch.cat([x_t, state["reads"].reshape(batch, -1)], dim=-1)
        new = {}
        if self.controller_kind == "lstm":
            new["h"], new["c"] = self.controller(controller_in, (state["h"], state["c"]))
            out = new["h"]
        else:
            out = torch.tanh(self.controller(controller_in))

        params = self.head_params(out)
        n_read = self.read_heads * self.address_size
        read_params, write_params = params[:, :n_read], params[:, n_read:]

        # write first (addressing the previous memory), then read the updated memory (DNC order)
        *write_address, erase_add = self.split_heads(write_params, self.write_heads, extra=2 * self.slot_width)
        erase, add = erase_add.split(self.slot_width, dim=-1)
        new["write_w"] = address(state["memory"], state["write_w"], *write_address)
        new["memory"] = write_memory(state["memory"], new["write_w"], torch.sigmoid(erase), torch.tanh(add))

        *read_address, _ = self.split_heads(read_params, self.read_heads)
        new["read_w"] = address(new["memory"], state["read_w"], *read_address)
        new["reads"] = read_memory(new["memory"], new["read_w"])
        return out, new

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        if state is None:
            state = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype)
        if x.shape[1] == 0:
            return x.new_zeros(x.shape[0], 0, self.d_model), state
        outs, reads = [], []
        for t in range(x.shape[1]):  # the recurrence through memory is inherently sequential
            out, state = self.step(x[:, t], state)
            outs.append(out)
            reads.append(state["reads"].flatten(1))
        # y_t = Linear([controller output_t, reads_t]), applied to all steps at once
        y = self.output(torch.cat([torch.stack(outs, 1), torch.stack(reads, 1)], dim=-1))
        return y, state


class NTMOptions(Config):
    slots: int = Field(128, ge=1, description="memory rows (ntm; paper 128)")
    slot_width: int = Field(20, ge=1, description="memory columns (ntm; paper 20)")
    controller: Literal["lstm", "ff"] = Field("lstm", description="NTM controller")
    controller_size: int = Field(100, ge=1, description="NTM controller width")


NTM_KIND = MemoryKind("ntm", NTM, color="tab:green", options=NTMOptions)
MEMORY_KINDS = (NTM_KIND,)  # what this module adds to engramlab.memory.MEMORY_KINDS
