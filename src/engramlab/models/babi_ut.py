"""A Universal Transformer step for bAbI: the story's sentences and the question as tokens.

Universal Transformer (Dehghani et al. 2019, arXiv 1807.03819, §2 and App. C for bAbI): one
transformer layer applied again and again; for bAbI each fact is one token, embedded as the sum
of its word embeddings weighted by a learned positional mask, and the answer is read from the
question's token. In PonderNet (Banino et al. 2021, §3.2, App. C) the number of layer
applications is pondered; this module is the step ``s(x, h) -> (h', ŷ, λ)`` that the halting
wrappers of :mod:`engramlab.ponder.halting` (PonderNet, ACT, a fixed depth) repeat.

:class:`FactEmbedding` is shared with MEMO on bAbI (:class:`engramlab.models.memo.BabiMEMOStep`).

Input: one long tensor (B, 1 + M, W) of word ids, the question first, then the story's last M
sentences, oldest first, front-padded (``engramlab.experiments.babi.common``). Empty sentences
are masked out of the attention. Since the halting wrappers drop halted samples from one
batch-first tensor, the key-padding mask travels with the encoded input as its last channel.

Choices made here (documented deviations from the papers): the layer is PyTorch's pre-norm
``TransformerEncoderLayer`` whose attention width equals the model width (the PonderNet paper's
"attention hidden 512" with embedding 128 has no counterpart there); the embedded input is
re-injected at every step instead of UT's per-step timing signal; a sentence's recency is a
learned embedding of its age (0 = most recent), as MemN2N's temporal encoding.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from engramlab.memory.memn2n import position_weights
from engramlab.ponder.steps import Step, StepOutput


def pack_story(story: Tensor, question: Tensor) -> Tensor:
    """(B, M, W) story and (B, W) question -> (B, 1 + M, W), the question first."""
    return torch.cat([question[:, None], story], dim=1)


class FactEmbedding(nn.Module):
    """Every sentence of a packed story, and the question, as one vector (UT App. C).

    A fact is the sum of its word embeddings weighted by a learned multiplicative positional mask,
    started at MemN2N's position encoding (Sukhbaatar et al. 2015, §4.1; with ``centred``, at the
    centred form of the authors' code, :func:`~engramlab.memory.memn2n.position_weights` with
    ``span = max_words``, which keeps every weight near 1), plus a learned embedding
    of its age (0 = the question, 1 + a = a sentence told a sentences before the last one), as
    MemN2N's temporal encoding. ``(B, 1 + M, W) ids -> facts (B, 1 + M, d), empty (B, 1 + M)``;
    the question is never empty.
    """

    def __init__(self, vocab_size: int, max_words: int, memory_size: int, d: int, centred: bool = False):
        super().__init__()
        self.words = nn.Embedding(vocab_size, d, padding_idx=0)
        every_place = torch.ones(1, max_words, dtype=torch.long)
        self.word_position = nn.Parameter(position_weights(every_place, d, span=max_words if centred else 0)[0])
        self.age = nn.Embedding(memory_size + 1, d)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        present = x != 0
        facts = (self.words(x) * self.word_position * present[..., None]).sum(dim=2)
        tokens = x.shape[1]
        ages = torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(tokens - 1, 0, -1)]).to(x.device)
        empty = ~present.any(dim=-1)
        empty[:, 0] = False  # the question is always read
        return facts + self.age(ages), empty


class BabiUTStep(Step):
    """``BabiUTStep(vocab_size, answers, max_words, memory_size, d=128, heads=8, ff=128, dropout=0.1, centred=False)``.

    ``dropout`` applies to the attention weights only (PonderNet App. C: "attention dropout 0.1").
    ``centred`` starts the fact embedding's positional mask at the centred form (:class:`FactEmbedding`).
    """

    sequence_input = True

    def __init__(
        self,
        vocab_size: int,
        answers: int,
        max_words: int,
        memory_size: int,
        d: int = 128,
        heads: int = 8,
        ff: int = 128,
        dropout: float = 0.1,
        centred: bool = False,
    ):
        super().__init__()
        self.d = d
        self.facts = FactEmbedding(vocab_size, max_words, memory_size, d, centred)
        self.block = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True, norm_first=True)
        # PonderNet App. C: *attention* dropout only. The layer's three other dropouts also cost a
        # third of a CPU training step (the random masks), so they are off.
        self.block.self_attn.dropout = dropout
        self.norm = nn.LayerNorm(d)
        self.answer = nn.Linear(d, answers)
        self.halt = nn.Linear(d, 1)

    def encode(self, x: Tensor) -> Tensor:
        """(B, 1 + M, W) ids -> (B, 1 + M, d + 1): embedded facts and the padding mask as a last channel."""
        facts, empty = self.facts(x)
        return torch.cat([facts, empty[..., None].to(facts.dtype)], dim=-1)

    def initial_state(self, x_enc: Tensor) -> Tensor:
        return torch.zeros_like(x_enc[..., :-1])

    def forward(self, x_enc: Tensor, h: Tensor) -> StepOutput:
        facts, empty = x_enc[..., :-1], x_enc[..., -1].bool()
        h = self.block(h + facts, src_key_padding_mask=empty)
        question = self.norm(h[:, 0])
        return StepOutput(h, self.answer(question), self.halt(question).squeeze(-1))
