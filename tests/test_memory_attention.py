"""Attention (soft RAM, persistent memory), Transformer-XL and end-to-end memory networks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engramlab.memory.attention import Attention, causal_mask_with_persistent, soft_ram_read, soft_ram_weights
from engramlab.memory.memn2n import MemN2N, MemN2NLayer, embed_sentences, position_weights
from engramlab.memory.xl import XLAttention, relative_shift, sinusoid_table

# --------------------------------------------------------------------------- soft RAM read


def test_soft_ram_read_hand_computation():
    # d = 4, so the scale is 1/√4 = 1/2; the query matches key 0 with score ln 3 and key 1 with 0,
    # so the weights are 3/4 and 1/4 and the read is 3/4·[4, 0] + 1/4·[0, 8] = [3, 2]
    q = torch.tensor([[2 * math.log(3.0), 0.0, 0.0, 0.0]])
    k = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    v = torch.tensor([[4.0, 0.0], [0.0, 8.0]])
    torch.testing.assert_close(soft_ram_weights(q, k), torch.tensor([[0.75, 0.25]]))
    torch.testing.assert_close(soft_ram_read(q, k, v), torch.tensor([[3.0, 2.0]]))
    # masking key 0 leaves key 1 alone: a hard read
    torch.testing.assert_close(soft_ram_read(q, k, v, mask=torch.tensor([[False, True]])), torch.tensor([[0.0, 8.0]]))


def test_causal_mask_with_persistent_columns():
    mask = causal_mask_with_persistent(3, 2)
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("persistent", [0, 3])
def test_attention_equals_explicit_soft_ram_read(persistent):
    torch.manual_seed(0)
    attention = Attention(16, heads=4, persistent=persistent).eval()
    x = torch.randn(2, 7, 16)
    y, state = attention(x)
    q, k, v = attention.queries_keys_values(x)
    expected = attention.merge_heads(soft_ram_read(q, k, v, attention.mask(7)))
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    assert state is None


def test_persistent_memory_weights_and_effect():
    torch.manual_seed(0)
    P, T = 3, 5
    attention = Attention(8, heads=2, persistent=P).eval()
    x = torch.randn(2, T, 8)
    weights = attention.attention_weights(x)
    assert weights.shape == (2, 2, T, P + T)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, T))
    assert (weights[..., :P] > 0).all()  # persistent slots are readable from every position
    assert (weights[..., 0, P + 1 :] == 0).all()  # the first position sees only itself beyond them

    y, _ = attention(x)
    with torch.no_grad():
        attention.persistent_values.add_(1.0)
    y_values, _ = attention(x)
    with torch.no_grad():
        attention.persistent_keys.mul_(3.0)
    y_keys, _ = attention(x)
    assert y_values.shape == y.shape == (2, T, 8)
    assert not torch.allclose(y, y_values)
    assert not torch.allclose(y_values, y_keys)


# --------------------------------------------------------------------------- causality


@pytest.mark.parametrize(
    "make",
    [
        lambda: Attention(16, heads=4),
        lambda: Attention(16, heads=4, persistent=2),
        lambda: XLAttention(16, heads=4),
        lambda: XLAttention(16, heads=2, mem_len=9),
        lambda: MemN2NLayer(16, hops=3, memory_size=4),
        lambda: MemN2NLayer(16, hops=2, memory_size=32, tying="layerwise"),
    ],
)
@pytest.mark.parametrize("with_state", [False, True])
def test_causality(make, with_state):
    torch.manual_seed(0)
    memory = make().eval()
    state = memory(torch.randn(2, 6, 16))[1] if with_state else None
    x = torch.randn(2, 8, 16)
    tau = 3
    changed = x.clone()
    changed[:, tau + 1 :] = torch.randn(2, 8 - tau - 1, 16)
    y, _ = memory(x, state)
    y_changed, _ = memory(changed, state)
    torch.testing.assert_close(y[:, : tau + 1], y_changed[:, : tau + 1])
    assert not torch.allclose(y[:, tau + 1 :], y_changed[:, tau + 1 :])


# --------------------------------------------------------------------------- Transformer-XL


@pytest.mark.parametrize("mem_len, lengths", [(None, [6, 6]), (3, [3, 3]), (10, [6, 10])])
def test_xl_cache_is_detached_with_documented_length(mem_len, lengths):
    torch.manual_seed(0)
    xl = XLAttention(8, heads=2, mem_len=mem_len)
    x1 = torch.randn(2, 6, 8, requires_grad=True)
    x2 = torch.randn(2, 6, 8)
    y1, state = xl(x1)
    assert not state["inputs"].requires_grad
    assert state["inputs"].shape == (2, lengths[0], 8)
    torch.testing.assert_close(state["inputs"], x1[:, 6 - lengths[0] :].detach())  # the layer inputs
    y2, state = xl(x2, state)
    assert state["inputs"].shape == (2, lengths[1], 8) and state["valid"].all()
    y2.sum().backward()
    assert x1.grad is None  # stop-gradient: nothing flows back into the previous segment


def test_xl_second_segment_depends_on_first_only_through_the_cache():
    torch.manual_seed(0)
    xl = XLAttention(8, heads=2).eval()
    x1, x1_other, x2 = torch.randn(3, 2, 5, 8).unbind(0)
    y_with, _ = xl(x2, xl(x1)[1])
    y_with_other, _ = xl(x2, xl(x1_other)[1])
    y_without, _ = xl(x2)
    assert not torch.allclose(y_with, y_with_other)
    assert not torch.allclose(y_with, y_without)
    # a cache cleared by reset is unreadable: the same as no cache
    cleared = xl.reset(xl(x1)[1], torch.tensor([True, True]))
    torch.testing.assert_close(xl(x2, cleared)[0], y_without)


def test_relative_shift_matches_naive_loop():
    torch.manual_seed(0)
    T, M = 3, 2
    L = M + T
    by_distance = torch.randn(2, T, L)  # column c holds distance L - 1 - c
    shifted = relative_shift(by_distance)
    for i in range(T):
        for j in range(M + i + 1):  # causal keys only; the rest is masked
            distance = M + i - j
            assert shifted[0, i, j] == by_distance[0, i, L - 1 - distance]
            assert shifted[1, i, j] == by_distance[1, i, L - 1 - distance]


def test_xl_attention_matches_naive_relative_scores():
    """Terms (a)–(d) of Dai et al. §3.3 written out for one (query, key) pair at a time."""
    torch.manual_seed(0)
    d, heads, d_head = 8, 2, 4
    xl = XLAttention(d, heads=heads, mem_len=3).eval()
    with torch.no_grad():
        xl.content_bias.normal_()
        xl.position_bias.normal_()
    _, state = xl(torch.randn(1, 3, d))
    x = torch.randn(1, 4, d)
    y, _ = xl(x, state)

    context = torch.cat([state["inputs"], x], dim=1)[0]  # (L, d)
    M, T, L = 3, 4, 7
    q = xl.query(x[0]).view(T, heads, d_head)
    k, v = (t.view(L, heads, d_head) for t in xl.key_value(context).chunk(2, dim=-1))
    r = xl.position_key(sinusoid_table(torch.arange(L), d)).view(L, heads, d_head)  # row δ: W_R R_δ
    u, w = xl.content_bias, xl.position_bias
    reads = torch.zeros(T, heads, d_head)
    for h in range(heads):
        for i in range(T):
            scores = []
            for j in range(M + i + 1):
                delta = M + i - j
                a = q[i, h] @ k[j, h] + q[i, h] @ r[delta, h] + u[h] @ k[j, h] + w[h] @ r[delta, h]
                scores.append(a / math.sqrt(d_head))
            p = torch.stack(scores).softmax(0)
            reads[i, h] = (p[:, None] * v[: M + i + 1, h]).sum(0)
    expected = xl.out(reads.reshape(T, d))
    torch.testing.assert_close(y[0], expected, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- MemN2N


def test_position_encoding_hand_values():
    # l_kj = (1 - j/J) - (k/d)(1 - 2j/J) with d = 2
    two_words = position_weights(torch.tensor([[5, 7, 0]]), d=2)[0]
    torch.testing.assert_close(two_words, torch.tensor([[0.5, 0.5], [0.5, 1.0], [0.0, 0.0]]))
    three_words = position_weights(torch.tensor([[5, 7, 9]]), d=2)[0]
    torch.testing.assert_close(three_words, torch.tensor([[0.5, 1 / 3], [0.5, 2 / 3], [0.5, 1.0]]))
    # padding in the middle does not count as a word
    gapped = position_weights(torch.tensor([[5, 0, 7]]), d=2)[0]
    torch.testing.assert_close(gapped, torch.tensor([[0.5, 0.5], [0.0, 0.0], [0.5, 1.0]]))
    # the authors' code: 1 + 4 (k - (d+1)/2)(j - (J+1)/2) / (d J) with d = 2, J = 3: 1 ∓ (j - 2)/3
    centred = position_weights(torch.tensor([[5, 7, 9]]), d=2, span=3)[0]
    torch.testing.assert_close(centred, torch.tensor([[4 / 3, 2 / 3], [1.0, 1.0], [2 / 3, 4 / 3]]))


def random_story(batch=3, sentences=6, words=4, vocab=20, empty=(4, 5)):
    story = torch.randint(1, vocab, (batch, sentences, words))
    story[:, list(empty)] = 0
    return story, torch.randint(1, vocab, (batch, words))


@pytest.mark.parametrize("hops", [1, 3])
def test_memn2n_hops_shapes_and_masked_empty_slots(hops):
    torch.manual_seed(0)
    model = MemN2N(20, d=8, hops=hops, memory_size=10)
    story, query = random_story()
    logits, probabilities = model.read(story, query)
    assert logits.shape == (3, 20) and model(story, query).shape == (3, 20)
    assert len(probabilities) == hops
    for p in probabilities:
        assert p.shape == (3, 6)
        assert (p[:, 4:] == 0).all() and (p[:, :4] > 0).all()
        torch.testing.assert_close(p.sum(-1), torch.ones(3))
    model.linear = True  # linear start: no softmax, empty slots still read nothing
    assert all((p[:, 4:] == 0).all() for p in model.read(story, query)[1])
    # a story with no sentence at all reads nothing rather than NaN
    model.linear = False
    assert torch.isfinite(model(torch.zeros(1, 3, 4, dtype=torch.long), query[:1])).all()


def test_memn2n_blank_memories_match_readable_nil_slots():
    """The authors' code keeps every unfilled slot in the softmax as a nil memory (key 0, value 0):
    the one-column sink must give the same read as softmaxing over those slots explicitly."""
    torch.manual_seed(0)
    model = MemN2N(20, d=8, hops=1, memory_size=10, temporal_encoding=False, blank_memories=True)
    story, query = random_story(empty=())  # 6 told sentences: 4 blank slots of the 10
    _, (p,) = model.read(story, query)
    keys = embed_sentences(model.hops.A(0), story, True)
    u = embed_sentences(model.hops.B(), query, True)
    scores = torch.cat([(keys @ u[:, :, None])[..., 0], torch.zeros(3, 4)], dim=-1)  # 4 nil slots score 0
    torch.testing.assert_close(p, scores.softmax(-1)[:, :6])
    assert (p.sum(-1) < 1).all()  # the blank slots took their share
    model.blank_memories = False
    torch.testing.assert_close(model.read(story, query)[1][0].sum(-1), torch.ones(3))


def test_memn2n_adjacent_tying():
    model = MemN2N(20, d=8, hops=3, tying="adjacent")
    hops = model.hops
    assert len(hops.embeddings) == 4 and model.answer is None
    for k in range(2):
        assert hops.A(k + 1).weight is hops.C(k).weight  # A_{k+1} = C_k
    assert hops.B().weight is hops.A(0).weight  # B = A_1
    assert hops.T_A(1).data_ptr() == hops.T_C(0).data_ptr()  # temporal tables tie the same way
    # W^T = C_K: with C_K zeroed every answer logit is zero
    with torch.no_grad():
        hops.C(2).weight.zero_()
    story, query = random_story()
    assert (model(story, query) == 0).all()


def test_memn2n_layerwise_tying():
    model = MemN2N(20, d=8, hops=3, tying="layerwise")
    hops = model.hops
    assert len(hops.embeddings) == 3 and hops.H is not None and model.answer is not None
    assert hops.A(0) is hops.A(1) is hops.A(2) and hops.C(0) is hops.C(1) is hops.C(2)
    assert hops.A(0) is not hops.C(0) and hops.B() is not hops.A(0)
    names = {name for name, _ in model.named_parameters()}
    assert names == {"hops.embeddings.0.weight", "hops.embeddings.1.weight", "hops.embeddings.2.weight"} | {
        "hops.time",
        "hops.H.weight",
        "answer.weight",
    }


def test_memn2n_temporal_index_counts_from_the_most_recent_sentence():
    model = MemN2N(20, d=8, memory_size=10)
    filled = torch.tensor([[True, True, False, True]])
    assert model.sentence_ages(filled)[0, [0, 1, 3]].tolist() == [2, 1, 0]
    # random noise (training only): with probability 1 an empty memory follows every sentence
    model.random_noise = 1.0
    assert model.sentence_ages(filled)[0, [0, 1, 3]].tolist() == [5, 3, 1]
    assert model.eval().sentence_ages(filled)[0, [0, 1, 3]].tolist() == [2, 1, 0]


def make_single_supporting_fact(n: int, sentences: int, generator: torch.Generator):
    """bAbI task 1 in miniature: "<person> is in <room>" facts, "where is <person>"? -> last room."""
    people, rooms = torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])
    is_, in_, where = 9, 10, 11
    who = people[torch.randint(0, 4, (n, sentences), generator=generator)]
    room = rooms[torch.randint(0, 4, (n, sentences), generator=generator)]
    story = torch.stack([who, torch.full_like(who, is_), torch.full_like(who, in_), room], dim=-1)
    asked = who[torch.arange(n), torch.randint(0, sentences, (n,), generator=generator)]
    last_mention = ((who == asked[:, None]) * torch.arange(1, sentences + 1)).argmax(-1)
    answer = room[torch.arange(n), last_mention]
    query = torch.stack([torch.full_like(asked, where), torch.full_like(asked, is_), asked], dim=-1)
    return story, query, answer


@pytest.mark.slow
def test_memn2n_learns_single_supporting_fact():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = MemN2N(12, d=20, hops=2, memory_size=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(250):
        story, query, answer = make_single_supporting_fact(32, 6, generator)
        loss = F.cross_entropy(model(story, query), answer)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    story, query, answer = make_single_supporting_fact(500, 6, generator)
    with torch.no_grad():
        accuracy = (model(story, query).argmax(-1) == answer).float().mean().item()
    assert accuracy > 0.8  # chance is 1/4


# --------------------------------------------------------------------------- MemN2N as a layer


def test_memn2n_layer_state_carries_gradient_and_has_documented_length():
    torch.manual_seed(0)
    layer = MemN2NLayer(8, hops=2, memory_size=5)
    x1 = torch.randn(2, 6, 8, requires_grad=True)
    y1, state = layer(x1)
    assert y1.shape == (2, 6, 8)
    assert state["inputs"].shape == (2, 4, 8)  # memory_size - 1 earlier inputs
    torch.testing.assert_close(state["inputs"], x1[:, 2:])
    x2 = torch.randn(2, 3, 8)
    y2, _ = layer(x2, state)
    assert not torch.allclose(y2, layer(x2)[0])  # the previous window is read
    y2.sum().backward()
    assert x1.grad is not None and x1.grad[:, 2:].abs().sum() > 0  # trained end to end through the memory
    assert (x1.grad[:, :2] == 0).all()  # beyond memory_size nothing is read


def test_memn2n_layer_adjacent_output_is_c_k_transposed():
    layer = MemN2NLayer(8, hops=3, memory_size=5)
    assert layer.output is None and layer.hops.B() is layer.hops.A(0)
    with torch.no_grad():
        layer.hops.C(2).weight.zero_()
    assert (layer(torch.randn(1, 4, 8))[0] == 0).all()


@pytest.mark.parametrize("position_encoding,span", [(True, 0), (True, 5), (False, 0)])
def test_sentence_embedding_equals_the_weighted_sum_of_word_vectors(position_encoding, span):
    """The embedding-bag computation equals §4.1's sum over words of l_j ∘ A x_j, padding anywhere
    (span > 0: the code's centred form)."""
    from engramlab.memory.memn2n import embed_sentences

    torch.manual_seed(0)
    embedding = torch.nn.Embedding(12, 6, padding_idx=0)
    words = torch.tensor([[[3, 5, 0, 7], [0, 0, 0, 0]], [[1, 2, 3, 4], [0, 9, 11, 0]]])
    vectors = embedding(words)
    if position_encoding:
        vectors = vectors * position_weights(words, 6, span)
    expected = vectors.sum(dim=-2)
    assert torch.allclose(embed_sentences(embedding, words, position_encoding, span), expected, atol=1e-6)
