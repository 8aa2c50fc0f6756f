"""End-to-end memory networks (Sukhbaatar et al. 2015, arXiv 1503.08895).

A memory network answers a query by *reading a memory several times* ("hops"). With the
query state ``u`` and memories ``x_i`` (sentences of a story, or earlier inputs of a sequence),
hop k computes (§2.1, §2.2)::

    m_i = A_k x_i + T_A^k(i)          memory keys   (input embedding + temporal encoding, §4.1)
    c_i = C_k x_i + T_C^k(i)          memory values (output embedding + temporal encoding)
    p_i = softmax_i(uᵀ m_i)           eq. (1): where to read
    o   = Σ_i p_i c_i                 eq. (2): what is read
    u  ← u + o                        §2.2: the next hop's query (layer-wise tying: u ← H u + o)

Unlike attention, the read is repeated: the second hop can look for what the first hop found
(first the sentence about the object, then the sentence about where its holder went).

Two models share these equations (:class:`Hops` holds the matrices and the hop loop):

- :class:`MemN2N`, the paper's question-answering model: a story of sentences (word ids) is the
  memory, a question is the query, the answer is one word;
- :class:`MemN2NLayer`, the same multi-hop read as a causal sequence layer behind the
  :class:`Memory` interface: every position queries the earlier positions.

Weight tying (§2.2): *adjacent*, ``A_{k+1} = C_k``, ``B = A_1`` (question embedding) and
``Wᵀ = C_K`` (answer matrix); or *layer-wise* (RNN-like), ``A_1 = … = A_K``, ``C_1 = … = C_K``
and a learned map ``H`` in the query update. The temporal tables ``T_A``, ``T_C`` are tied the
same way (§4.1: "they are also subject to the same sharing constraints as A and C").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from engramlab.config import Config
from engramlab.memory.base import Memory, MemoryKind, extend_input_cache

Tying = Literal["adjacent", "layerwise"]


# --------------------------------------------------------------------------- the equations, once


def memory_read(
    u: Tensor,
    keys: Tensor,
    values: Tensor,
    readable: Tensor,
    ages: Tensor | None = None,
    time_keys: Tensor | None = None,
    time_values: Tensor | None = None,
    linear: bool = False,
    blank: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One hop's read: eq. (1) ``p_i = softmax(uᵀ m_i)`` and eq. (2) ``o = Σ_i p_i c_i`` (§2.1).

    ``u`` (B, Q, d): Q queries (1 question, or every position of a window); ``keys``, ``values``
    (B, N, d): the embedded memories ``A x_i`` and ``C x_i``; ``readable`` (B, Q, N) bool: which
    memories each query may read (empty story slots and, in the layer, the future are not).

    Temporal encoding (§4.1) adds ``T_A(i)`` to key i and ``T_C(i)`` to value i, where ``ages``
    (B, Q, N) indexes the rows of ``time_keys``/``time_values`` (A, d). Since
    ``uᵀ(A x_i + T_A(i)) = uᵀ A x_i + (u T_Aᵀ)[age_i]``, the two parts are computed separately: the
    layer, where the age of a memory depends on the query, then never builds a key per
    (query, memory) pair. Likewise ``Σ_i p_i T_C(age_i)`` sums the weights per age first.

    ``linear=True`` is the linear start of §4.2: the softmax is removed, ``p_i = uᵀ m_i``.

    ``blank`` (B, Q, 1): a number of blank memories per query that stay in the softmax, as in the
    authors' code, whose memory always holds ``memory_size`` slots and an empty one is all nil
    words: key and value 0, score ``uᵀ0 = 0``. Each takes a share ``e⁰`` of the weight and reads
    nothing, so together they enter as one column of score ``log(blank)`` and value 0.
    Returns ``o`` (B, Q, d) and ``p`` (B, Q, N), zero where not readable.
    """
    scores = u @ keys.transpose(-2, -1)
    if time_keys is not None:
        scores = scores + (u @ time_keys.T).gather(-1, ages)
    if linear:
        p = scores.masked_fill(~readable, 0.0)  # blank memories add 0 · 0
    else:
        # the dtype's minimum rather than −inf: a query with nothing readable (a story with no
        # sentences) then reads o = 0 instead of NaN
        scores = scores.masked_fill(~readable, torch.finfo(scores.dtype).min)
        if blank is not None:
            scores = torch.cat([scores, blank.expand(*scores.shape[:-1], 1).log()], dim=-1)
        p = scores.softmax(dim=-1)[..., : readable.shape[-1]] * readable
    o = p @ values
    if time_values is not None:
        weight_per_age = p.new_zeros(*p.shape[:-1], time_values.shape[0]).scatter_add(-1, ages, p)
        o = o + weight_per_age @ time_values
    return o, p


class Hops(nn.Module):
    """The matrices of K hops with their tying (§2.2), and the hop loop shared by both models.

    ``make_embedding()`` builds one embedding matrix (``nn.Embedding`` for words, ``nn.Linear``
    for vectors). Hops are numbered from 0 here (the paper's hop k is ``k - 1``):

    - adjacent: K + 1 matrices ``E_0 … E_K`` with ``A(k) = E_k``, ``C(k) = E_{k+1}`` (so
      ``A(k+1) is C(k)``), ``B() = E_0 = A(0)`` and the answer matrix ``Wᵀ = C(K-1) = E_K``;
    - layerwise: three matrices, ``A(k) = A``, ``C(k) = C``, a separate ``B``, plus ``H``.

    ``ages``: rows of the temporal tables ``T_A``/``T_C`` (None: no temporal encoding).
    """

    def __init__(self, make_embedding: Callable[[], nn.Module], hops: int, tying: Tying, d: int, ages: int | None):
        super().__init__()
        if hops < 1:
            raise ValueError(f"hops = {hops} must be at least 1")
        self.count, self.tying = hops, tying
        if tying == "adjacent":
            matrices, tables = hops + 1, hops + 1
            self.key_ids, self.value_ids, self.query_id = list(range(hops)), list(range(1, hops + 1)), 0
        elif tying == "layerwise":
            matrices, tables = 3, 2  # A, C, B; B has no temporal table
            self.key_ids, self.value_ids, self.query_id = [0] * hops, [1] * hops, 2
        else:
            raise ValueError(f"tying = {tying!r}: expected 'adjacent' or 'layerwise'")
        self.embeddings = nn.ModuleList(make_embedding() for _ in range(matrices))
        self.time = nn.Parameter(0.1 * torch.randn(tables, ages, d)) if ages else None
        self.H = nn.Linear(d, d, bias=False) if tying == "layerwise" else None

    def A(self, k: int) -> nn.Module:
        return self.embeddings[self.key_ids[k]]

    def C(self, k: int) -> nn.Module:
        return self.embeddings[self.value_ids[k]]

    def B(self) -> nn.Module:
        return self.embeddings[self.query_id]

    def T_A(self, k: int) -> Tensor | None:
        return None if self.time is None else self.time[self.key_ids[k]]

    def T_C(self, k: int) -> Tensor | None:
        return None if self.time is None else self.time[self.value_ids[k]]

    def read(
        self,
        u: Tensor,
        embed: Callable[[nn.Module], Tensor],
        readable: Tensor,
        ages: Tensor | None = None,
        linear: bool = False,
        blank: Tensor | None = None,
    ) -> tuple[Tensor, list[Tensor]]:
        """K hops from the query state ``u¹`` (B, Q, d): returns ``u^{K+1}`` and each hop's ``p``.

        ``embed(matrix)`` embeds the memories with one matrix, (B, N, d); each matrix is applied
        once even where it serves two hops (adjacent tying: ``C_k = A_{k+1}``).
        """
        embedded: dict[int, Tensor] = {}

        def memories(index: int) -> Tensor:
            if index not in embedded:
                embedded[index] = embed(self.embeddings[index])
            return embedded[index]

        probabilities = []
        for k in range(self.count):
            keys, values = memories(self.key_ids[k]), memories(self.value_ids[k])
            o, p = memory_read(u, keys, values, readable, ages, self.T_A(k), self.T_C(k), linear, blank)
            u = (u if self.H is None else self.H(u)) + o  # u^{k+1} = u^k + o^k  (or H u^k + o^k)
            probabilities.append(p)
        return u, probabilities


# --------------------------------------------------------------------------- question answering


def position_weights(words: Tensor, d: int, span: int = 0) -> Tensor:
    """Position encoding of §4.1: ``l_kj = (1 − j/J) − (k/d)(1 − 2j/J)``, (..., S) ids -> (..., S, d).

    ``j = 1..J`` is the word's place among the ``J`` words of its sentence and ``k = 1..d`` the
    embedding dimension. Rewritten, ``l_kj = (1 − j/J)(1 − k/d) + (j/J)(k/d)``: early words
    weigh the first dimensions, late words the last ones, so a sum of words keeps their order.
    ``J`` is each sentence's own word count as in the paper, so padding (id 0, weight 0) at any
    place does not change the encoding.

    ``span > 0``: the form of the authors' code (MemN2N-babi-matlab, ``build_model.m``), centred
    and over a fixed padded length ``J = span`` for every sentence,
    ``l_kj = 1 + 4 (k − (d+1)/2)(j − (J+1)/2) / (d J)``: every weight stays near 1, so a word
    weighs about the same wherever it stands, and order is a small modulation.
    """
    present = words != 0
    j = present.cumsum(dim=-1).to(torch.float32)
    k = torch.arange(1, d + 1, dtype=torch.float32, device=words.device)
    if span:
        centred = 4 * (j - (span + 1) / 2) / span
        return (1 + centred[..., None] * (k - (d + 1) / 2) / d) * present[..., None]
    J = present.sum(dim=-1, keepdim=True).clamp(min=1)
    j_over_J = (j / J)[..., None]
    return ((1 - j_over_J) - k / d * (1 - 2 * j_over_J)) * present[..., None]


def sentence_bags(words: Tensor, vocab_size: int, position_encoding: bool, span: int = 0, d: int = 0) -> Tensor:
    """The word weights of every sentence as rows over the vocabulary: (..., S) ids -> (P, ..., V).

    With position encoding ``l_kj = a_j + (k/d) b_j``, where ``a_j = 1 − j/J`` and
    ``b_j = 2j/J − 1`` (:func:`position_weights` rewritten), so P = 2 rows of scalar weights (a, b)
    describe a sentence for every embedding matrix and dimension; without it, P = 1 row of word
    counts. The code's centred form (``span > 0``, which needs the width ``d``) is linear in k too:
    ``a_j = 1 − c_j (d+1)/(2d)``, ``b_j = c_j`` with ``c_j = 4 (j − (J+1)/2) / J``.
    Built once per story and shared by all the hops' matrices (:func:`embed_bags`).
    Dense over the vocabulary: meant for small vocabularies such as bAbI's (~150 words).
    """
    present = words != 0
    if position_encoding and span:
        centred = 4 * (present.cumsum(dim=-1) - (span + 1) / 2) / span
        weights = torch.stack([(1 - centred * (d + 1) / (2 * d)) * present, centred * present])
    elif position_encoding:
        j_over_J = present.cumsum(dim=-1) / present.sum(dim=-1, keepdim=True).clamp(min=1)
        weights = torch.stack([(1 - j_over_J) * present, (2 * j_over_J - 1) * present])
    else:
        weights = present.to(torch.float32)[None]
    bags = weights.new_zeros(*weights.shape[:-1], vocab_size)
    return bags.scatter_add_(-1, words.expand(weights.shape), weights)


def embed_bags(bags: Tensor, weight: Tensor) -> Tensor:
    """``m_i = Σ_j l_j ∘ A x_ij`` (§4.1) from :func:`sentence_bags` and ``A`` (V, d): (..., d).

    One matrix product per embedding matrix instead of gathering and weighting (…, S, d) word
    vectors; its gradient is a matrix product too. In a side-by-side timing on bAbI shapes (batch
    32, 50 sentences, 4 matrices, one CPU thread; not a published benchmark) it was the faster of
    the two, and ``F.embedding_bag`` with per-word weights was slower than both (its backward sorts).
    """
    out = bags @ weight  # (P, ..., d)
    if out.shape[0] == 1:
        return out[0]
    k_over_d = torch.arange(1, weight.shape[1] + 1, dtype=out.dtype, device=out.device) / weight.shape[1]
    return out[0] + k_over_d * out[1]


def embed_sentences(embedding: nn.Embedding, words: Tensor, position_encoding: bool, span: int = 0) -> Tensor:
    """``m_i = Σ_j l_j ∘ A x_ij`` (§4.1), or the bag of words ``Σ_j A x_ij``; (..., S) -> (..., d)."""
    num, d = embedding.weight.shape
    return embed_bags(sentence_bags(words, num, position_encoding, span, d), embedding.weight)


class MemN2N(nn.Module):
    """The question-answering MemN2N of §2 and §4 (bAbI).

    ``forward(story (B, M, S), query (B, S')) -> answer logits (B, vocab_size)``: ids, 0 is
    padding; the story's sentences in the order they were told (the last row the most recent),
    empty slots (all padding) anywhere; they are never read. ``M ≤ memory_size``: keeping the
    last ``memory_size`` sentences (the paper's 50) is the data pipeline's job.

    - ``position_encoding``: PE of §4.1 (else bag of words); applied to the question too;
      ``position_span > 0``: its centred form from the authors' code (:func:`position_weights`).
    - ``temporal_encoding``: ``T_A``, ``T_C`` of §4.1, row 0 for the most recent sentence
      (the paper indexes sentences "in reverse order").
    - ``random_noise``: RN of §4.1, see :meth:`sentence_ages`.
    - ``linear``: linear start (§4.2); set ``model.linear = False`` to put the softmaxes back
      when the validation loss stops falling.
    - ``blank_memories``: the ``memory_size − M`` slots a story does not fill stay in the softmax
      with score 0 and read nothing, as in the authors' code (see :func:`memory_read`); off, only
      told sentences are weighed.

    Weights start from N(0, 0.1) as in §4.2; the padding row of every word matrix stays zero.
    """

    def __init__(
        self,
        vocab_size: int,
        d: int = 20,
        hops: int = 3,
        memory_size: int = 50,
        tying: Tying = "adjacent",
        position_encoding: bool = True,
        temporal_encoding: bool = True,
        random_noise: float = 0.0,
        linear: bool = False,
        blank_memories: bool = False,
        position_span: int = 0,
    ):
        super().__init__()
        self.vocab_size, self.d, self.memory_size = vocab_size, d, memory_size
        self.position_encoding, self.random_noise, self.linear = position_encoding, random_noise, linear
        self.blank_memories, self.position_span = blank_memories, position_span
        self.hops = Hops(
            lambda: nn.Embedding(vocab_size, d, padding_idx=0),
            hops,
            tying,
            d,
            memory_size if temporal_encoding else None,
        )
        # the answer matrix W (§2.1): a matrix of its own, except under adjacent tying where Wᵀ = C_K
        self.answer = nn.Linear(d, vocab_size, bias=False) if tying == "layerwise" else None
        for parameter in self.parameters():
            nn.init.normal_(parameter, std=0.1)
        with torch.no_grad():
            for embedding in self.hops.embeddings:
                embedding.weight[0].zero_()

    def sentence_ages(self, filled: Tensor) -> Tensor:
        """Temporal index of every slot (B, M): the number of sentences told after it (§4.1).

        Random noise (RN, §4.1) regularises ``T_A`` by adding about ``random_noise`` × (number of
        sentences) empty memories to a story during training. Here an empty memory is inserted
        after each sentence with probability ``random_noise``; it ages every earlier sentence by
        one. The inserted memories themselves are not readable (empty slots are masked), so only
        this shift of the ages is modelled. Ages are capped at ``memory_size − 1``.
        """
        filled = filled.long()
        ages = filled.flip(-1).cumsum(-1).flip(-1) - filled  # filled slots strictly after each slot
        if self.training and self.random_noise > 0:
            inserted = (torch.rand(filled.shape, device=filled.device) < self.random_noise).long() * filled
            ages = ages + inserted.flip(-1).cumsum(-1).flip(-1)
        return ages.clamp(max=self.memory_size - 1)

    def read(self, story: Tensor, query: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Answer logits (B, vocab) and each hop's read weights ``p`` (B, M)."""
        if story.shape[1] > self.memory_size:
            raise ValueError(f"story of {story.shape[1]} sentences > memory_size = {self.memory_size}")
        filled = (story != 0).any(dim=-1)  # (B, M): empty slots are all padding
        ages = self.sentence_ages(filled)
        u = embed_sentences(self.hops.B(), query, self.position_encoding, self.position_span)[:, None]  # u¹ = B q
        bags = sentence_bags(story, self.vocab_size, self.position_encoding, self.position_span, self.d)
        blank = (self.memory_size - filled.sum(-1)).float()[:, None, None] if self.blank_memories else None
        u, probabilities = self.hops.read(
            u,
            lambda embedding: embed_bags(bags, embedding.weight),
            readable=filled[:, None],
            ages=ages[:, None],
            linear=self.linear,
            blank=blank,
        )
        u = u[:, 0]  # u^{K+1} = u^K + o^K
        # â = softmax(W u^{K+1}) (§2.2); the softmax is left to the loss
        logits = self.answer(u) if self.answer is not None else u @ self.hops.C(self.hops.count - 1).weight.T
        return logits, [p[:, 0] for p in probabilities]

    def forward(self, story: Tensor, query: Tensor) -> Tensor:
        return self.read(story, query)[0]


# --------------------------------------------------------------------------- sequence layer


class MemN2NLayer(Memory):
    """``MemN2NLayer(d_model, hops=3, memory_size=256, tying="adjacent")``: MemN2N reads as a causal layer.

    At position t the query is ``u¹ = B x_t`` (``B = A_1`` under adjacent tying; a separate map
    under layer-wise tying, §2.2) and the memory is the last ``memory_size`` inputs *up to and
    including* ``x_t`` (ages 0 … memory_size − 1; age 0 is x_t itself). Including x_t makes the
    layer causal in the same sense as attention, and no position ever faces an empty memory.
    Keys and values are ``A_k x_s + T_A^k(t − s)`` and ``C_k x_s + T_C^k(t − s)``: linear maps of
    the inputs plus learned encodings of the relative age (the layer's only notion of order).
    Scores are plain dot products ``uᵀ m`` as in the paper (no 1/√d).

    The output is ``y_t = u_t^{K+1}`` mapped back to ``d_model``: by ``C_Kᵀ`` under adjacent tying
    (the paper's ``Wᵀ = C_K``), by a separate linear map under layer-wise tying.

    The state is ``{"inputs": (B, memory_size − 1, d_model), "valid": (B, memory_size − 1)}``:
    the earlier inputs the next window can still see, and which of them exist. It is *not*
    detached: MemN2N is trained end to end through its memory (the gradient reaches the layers
    that wrote it), like a recurrent state; cut it with :func:`detach_state` (the model's
    ``truncate_gradient``).
    """

    def __init__(self, d_model: int, hops: int = 3, memory_size: int = 256, tying: Tying = "adjacent"):
        super().__init__()
        self.d_model, self.memory_size = d_model, memory_size
        self.hops = Hops(lambda: nn.Linear(d_model, d_model, bias=False), hops, tying, d_model, memory_size)
        self.output = nn.Linear(d_model, d_model, bias=False) if tying == "layerwise" else None

    def forward(self, x: Tensor, state: dict[str, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        batch, length, _ = x.shape
        cached = 0 if state is None else state["inputs"].shape[1]
        context, valid = extend_input_cache(state, x)  # (B, L, d_model), L = cached + T

        # age of memory s for the query at t (position cached + t of the context)
        positions = torch.arange(context.shape[1], device=x.device)
        ages = (cached + positions[:length, None]) - positions[None, :]  # (T, L)
        readable = (ages >= 0) & (ages < self.memory_size) & valid[:, None, :]  # (B, T, L)
        ages = ages.clamp(0, self.memory_size - 1).expand(batch, -1, -1)

        u = self.hops.B()(x)  # u¹ = A_1 x_t under adjacent tying
        u, _ = self.hops.read(u, lambda linear_map: linear_map(context), readable, ages)
        if self.output is not None:
            y = self.output(u)
        else:
            y = u @ self.hops.C(self.hops.count - 1).weight  # C_Kᵀ: d -> d_model

        oldest_kept = max(0, context.shape[1] - (self.memory_size - 1))
        new_state = {"inputs": context[:, oldest_kept:], "valid": valid[:, oldest_kept:]}
        return y, new_state


class MemN2NOptions(Config):
    hops: int = Field(3, ge=1, le=16, description="memory hops (memn2n)")
    memory_size: int = Field(256, ge=1, description="earlier inputs a MemN2N layer can read")


# its learned encodings of the relative age give it order
MEMN2N_KIND = MemoryKind("memn2n", MemN2NLayer, color="tab:red", options=MemN2NOptions)
MEMORY_KINDS = (MEMN2N_KIND,)  # what this module adds to engramlab.memory.MEMORY_KINDS
