"""The one interface every kind of memory implements.

A memory is a *causal sequence layer with state*::

    y, state = memory(x, state)      # x, y: (batch, time, d_model)

- ``y[:, t]`` depends only on ``x[:, :t + 1]`` and on ``state`` (what earlier calls remembered).
- ``state=None`` means an empty memory (a new sequence). Passing the returned ``state`` to the
  next call continues the same sequences: this is how a long input is processed window by
  window (``engramlab.models.sequence.MemoryModel`` does it), and what lets segment recurrence
  (Transformer-XL) and episodic kNN memory remember beyond one window.
- What the state is depends on the kind: the LSTM's ``(h, c)``, the NTM's memory matrix and
  head weightings, the previous segment's hidden states, a FAISS store. Memories that are not
  trained through time (Transformer-XL cache, kNN store) hold no gradient in their state;
  recurrent ones do, and the caller decides where to cut it with :func:`detach_state`.

Because every kind has the same signature, a model swaps memories by config
(``--set model.memory=ntm``) and a benchmark compares them on identical tasks.

Each kind is declared once, next to its class, by a :class:`MemoryKind`: its name, how to build
it, its options (a config model) and the traits the sequence model, the experiments and the
plots need. ``engramlab.memory.MEMORY_KINDS`` lists them; everything else derives from that list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from engramlab.config import Config


class Memory(nn.Module):
    """Base class: ``forward(x, state=None) -> (y, state)``; see the module docstring."""

    d_model: int

    def forward(self, x: Tensor, state: Any = None) -> tuple[Tensor, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self, state: Any, done: Tensor) -> Any:
        """Clear the memory of the sequences where ``done`` (batch,) is True (new documents).

        The default works for states made of tensors with the batch first: their rows are zeroed.
        Kinds with other state (a FAISS store) override it.
        """
        return map_state(state, lambda t: t.masked_fill(done.view(-1, *([1] * (t.dim() - 1))), 0.0))


class NoOptions(Config):
    """The options of a kind that has none (the recurrent kinds)."""


class HeadsOptions(Config):
    """The option every kind that splits its width into heads shares, declared once (multi-head
    attention, Vaswani et al. 2017, §3.2.2). A kind whose options derive from it *splits its width*:
    ``d_model`` must be a multiple of ``heads``."""

    heads: int = Field(4, ge=1, description="attention heads")


@dataclass(frozen=True)
class MemoryKind:
    """One kind of memory, declared once next to its class and listed in ``engramlab.memory.MEMORY_KINDS``.

    ``build(d_model, **options)`` makes the layer; ``options`` is the config model of its constructor
    options (same names, with defaults, bounds and descriptions): ``engramlab.models.sequence``
    makes the flat ``model.*`` keys from the kinds' options. The other fields are traits, used by
    the sequence model, the memory experiments and their plots.
    """

    name: str
    build: Callable[..., Memory]  # usually the class
    color: str  # its colour in every memory plot
    options: type[Config] = NoOptions
    knows_order: bool = True  # False: ``positions: auto`` adds sinusoidal positions (Vaswani et al. 2017, §3.5)
    window_option: str | None = None  # the option that is the model's window when null (XL's cache length)
    # in one layer only, the one this option indexes (the kNN memory, Wu et al. 2022, §3); not a constructor argument
    layer_option: str | None = None
    other_layers: str = "attention"  # with ``layer_option``: the kind of every other layer
    eval_options: tuple[str, ...] = ()  # options a trained model can be evaluated with (no weight depends on them)

    def __post_init__(self):
        named = [self.window_option, self.layer_option, *self.eval_options]
        missing = [name for name in named if name is not None and name not in self.options.model_fields]
        if missing:
            raise ValueError(f"memory kind '{self.name}': {', '.join(missing)} is not one of its options")

    @property
    def splits_width(self) -> bool:
        """Whether ``d_model`` is split into ``heads`` (its options derive from :class:`HeadsOptions`)."""
        return issubclass(self.options, HeadsOptions)


def map_state(state: Any, fn) -> Any:
    """Apply ``fn`` to every tensor in a (nested tuple/list/dict) state; other leaves pass through."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return fn(state)
    if isinstance(state, tuple | list):
        return type(state)(map_state(s, fn) for s in state)
    if isinstance(state, dict):
        return {k: map_state(v, fn) for k, v in state.items()}
    return state


def detach_state(state: Any) -> Any:
    """Cut the gradient through a state (truncated backpropagation through time)."""
    return map_state(state, torch.Tensor.detach)


def extend_input_cache(state: dict[str, Tensor] | None, x: Tensor) -> tuple[Tensor, Tensor]:
    """Earlier inputs kept in a state ``{"inputs": (B, M, d), "valid": (B, M) bool}`` followed by ``x``.

    Returns ``(context (B, M + T, d), valid (B, M + T))``. ``valid`` marks entries that exist: all of
    them, except rows cleared by :meth:`Memory.reset` (zeroed, hence not valid). Used by the
    memories that read earlier inputs (Transformer-XL's cache, MemN2N's memory); ``state=None`` is
    an empty cache.
    """
    batch, length, _ = x.shape
    now = torch.ones(batch, length, dtype=torch.bool, device=x.device)
    if state is None:
        return x, now
    return torch.cat([state["inputs"], x], dim=1), torch.cat([state["valid"], now], dim=1)
