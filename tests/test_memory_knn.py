"""The kNN memory: KNNStore (exactness, approximate indexes, clearing, capacity, files, errors)
and KNNAttention (shapes, causality, retrieval across windows, no gradient into the memory)."""

from __future__ import annotations

import faiss
import pytest
import torch
import torch.nn.functional as F

from engramlab.errors import DataError
from engramlab.memory.knn import KNNAttention, KNNShapeError, KNNStore

faiss.omp_set_num_threads(1)

B, H, D = 3, 2, 8


def random_pairs(steps: int, value_dim: int = D, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, steps, D, generator=generator), torch.randn(B, H, steps, value_dim, generator=generator)


def filled_store(index: str = "flat", steps: int = 40, windows: int = 1, **options) -> KNNStore:
    store = KNNStore(D, heads=H, batch_size=B, index=index, value_dim=5, **options)
    for window in range(windows):
        store.add(*random_pairs(steps, value_dim=5, seed=window))
    return store


def same_results(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


# -- KNNStore ---------------------------------------------------------------------------------------


def test_flat_returns_the_exact_neighbours():
    keys, values = random_pairs(40, value_dim=5)
    store = KNNStore(D, heads=H, batch_size=B, value_dim=5)
    store.add(keys, values)
    queries = torch.randn(B, H, 7, D)
    found = store.search(queries, 10)

    unit_keys = F.normalize(keys, dim=-1)
    scores = F.normalize(queries, dim=-1) @ unit_keys.transpose(-1, -2)  # (B, H, 7, 40)
    best = scores.topk(10, dim=-1)
    pick = best.indices.unsqueeze(-1)
    expected_keys = unit_keys.unsqueeze(2).expand(-1, -1, 7, -1, -1).gather(3, pick.expand(-1, -1, -1, -1, D))
    expected_values = values.unsqueeze(2).expand(-1, -1, 7, -1, -1).gather(3, pick.expand(-1, -1, -1, -1, 5))
    assert found.keys.shape == (B, H, 7, 10, D) and found.values.shape == (B, H, 7, 10, 5)
    assert found.valid.all()
    torch.testing.assert_close(found.scores, best.values)
    torch.testing.assert_close(found.keys, expected_keys)
    torch.testing.assert_close(found.values, expected_values)


def test_batched_torch_search_finds_what_the_exact_faiss_index_finds():
    """The ``torch`` index (one batched matmul + topk) is exact too: same neighbours as FAISS flat,
    also after the ring buffer wrapped around (capacity) and after a sequence was cleared."""
    stores = [KNNStore(D, heads=H, batch_size=B, index=kind, capacity=30, value_dim=5) for kind in ("flat", "torch")]
    for window in range(4):
        for store in stores:
            store.add(*random_pairs(13, value_dim=5, seed=window))
        if window == 2:
            for store in stores:
                store.clear([0])
    queries = torch.randn(B, H, 6, D)
    flat, batched = (store.search(queries, 12) for store in stores)
    assert torch.equal(flat.valid, batched.valid)
    torch.testing.assert_close(batched.scores, flat.scores)
    torch.testing.assert_close(batched.values, flat.values)
    assert not batched.valid[0, :, :, 13:].any()  # the cleared sequence holds only the last window


def test_fewer_entries_than_k_are_masked():
    store = filled_store(steps=6)
    found = store.search(torch.randn(B, H, 4, D), 10)
    assert found.valid[..., :6].all() and not found.valid[..., 6:].any()
    assert torch.isinf(found.scores[..., 6:]).all() and (found.values[..., 6:, :] == 0).all()
    empty = KNNStore(D, heads=H, batch_size=B).search(torch.randn(B, H, 4, D), 3)
    assert not empty.valid.any() and empty.keys.shape == (B, H, 4, 3, D)


@pytest.mark.parametrize(
    "index, options", [("hnsw", {"m": 8, "ef_search": 32}), ("ivf", {"nlist": 4, "nprobe": 4, "train_size": 160})]
)
def test_approximate_indexes_return_valid_stored_pairs(index, options):
    store = filled_store(index, steps=60, **options)  # 3 × 60 = 180 ≥ train_size: the IVF is trained
    assert store.trained
    keys, values = random_pairs(60, value_dim=5)
    queries = keys[:, :, :20] + 0.01 * torch.randn(B, H, 20, D)  # near copies of stored keys
    found = store.search(queries, 5)
    assert found.valid.all()
    assert (found.scores[..., :-1] >= found.scores[..., 1:] - 1e-6).all()  # best first
    torch.testing.assert_close(found.scores, (F.normalize(queries, dim=-1).unsqueeze(-2) * found.keys).sum(-1))
    # every returned key is a stored key, and its value is the one stored with it
    unit_keys = F.normalize(keys, dim=-1)
    distance = torch.cdist(found.keys.flatten(2, 3), unit_keys, compute_mode="donot_use_mm_for_euclid_dist")
    assert (distance.min(-1).values < 1e-5).all()
    position = distance.argmin(-1).unsqueeze(-1).expand(-1, -1, -1, 5)
    torch.testing.assert_close(found.values.flatten(2, 3), values.gather(2, position))
    # the stored original is the nearest neighbour of its near copy
    assert (found.values[..., 0, :] == values[:, :, :20]).all(-1).float().mean() > 0.9


def test_ivf_searches_exactly_until_trained():
    store = filled_store("ivf", steps=10, nlist=4, train_size=160)
    assert not store.trained and isinstance(store.indexes[0][0], faiss.IndexFlatIP)
    exact = filled_store("flat", steps=10)
    queries = torch.randn(B, H, 5, D)
    assert same_results(store.search(queries, 4), exact.search(queries, 4))


def test_clear_empties_only_the_given_rows():
    store = filled_store(steps=20)
    queries = torch.randn(B, H, 4, D)
    before = store.search(queries, 3)
    store.clear(torch.tensor([False, True, False]))
    after = store.search(queries, 3)
    assert store.sizes.tolist() == [20, 0, 20] and len(store) == 2 * 20 * H
    assert not after.valid[1].any()
    for row in (0, 2):
        assert same_results([t[row] for t in before], [t[row] for t in after])
    store.add(*random_pairs(5, value_dim=5))  # the cleared row starts again from the new entries only
    assert store.sizes.tolist() == [25, 5, 25]


@pytest.mark.parametrize("index", ["flat", "hnsw", "torch"])
def test_capacity_drops_the_oldest_entries(index):
    store = KNNStore(D, heads=H, batch_size=B, index=index, capacity=25, value_dim=1)
    for number in range(6):
        ids = torch.arange(10 * number, 10 * (number + 1)).float()  # the value of an entry is its id
        store.add(random_pairs(10, seed=number)[0], ids.view(1, 1, 10, 1).expand(B, H, 10, 1))
        live = torch.arange(max(0, 10 * (number + 1) - 25), 10 * (number + 1)).float()
        assert store.sizes.tolist() == [len(live)] * B
        # asking for as many neighbours as there are live entries returns exactly the live ones
        found = store.search(torch.randn(B, H, 5, D), len(live))
        assert found.valid.all()
        assert torch.equal(found.values[..., 0].sort(-1).values, live.expand(B, H, 5, -1)), f"after window {number}"
    if index == "hnsw":  # dropped entries stay hidden in the graph until they are as many as the live ones
        assert store.indexes[0][0].ntotal < 2 * 25


def test_save_and_load_give_identical_results(tmp_path):
    for index, options in [("flat", {}), ("hnsw", {"m": 8}), ("ivf", {"nlist": 4, "train_size": 160}), ("torch", {})]:
        store = filled_store(index, steps=30, windows=2, capacity=50, **options)
        store.clear([1])
        path = tmp_path / f"{index}.knn"
        store.save(path)
        loaded = KNNStore.load(path)
        queries = torch.randn(B, H, 6, D)
        assert same_results(store.search(queries, 8), loaded.search(queries, 8)), index
        assert loaded.trained == store.trained and loaded.options == store.options
        more = random_pairs(30, value_dim=5, seed=7)  # both go on the same way
        store.add(*more)
        loaded.add(*more)
        assert same_results(store.search(queries, 8), loaded.search(queries, 8)), index
    assert not list(tmp_path.glob(".*.tmp")), "the temporary file was left behind"


def test_shape_errors_name_the_expected_dimension():
    store = KNNStore(D, heads=H, batch_size=B)
    with pytest.raises(KNNShapeError, match=r"KNNStore.add: keys have shape \(3, 2, 4, 6\).* 8\)"):
        store.add(torch.randn(B, H, 4, 6), torch.randn(B, H, 4, D))
    with pytest.raises(KNNShapeError, match=r"KNNStore.search: queries .* expected \(batch 3, heads 2, time, 8\)"):
        store.search(torch.randn(B, H, 4, 9), 2)
    with pytest.raises(KNNShapeError, match="batch 3"):
        store.add(torch.randn(2, H, 4, D), torch.randn(2, H, 4, D))


def test_missing_or_corrupt_files_raise_one_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"kNN store file .*nowhere.knn does not exist"):
        KNNStore.load(tmp_path / "nowhere.knn")
    path = tmp_path / "store.knn"
    filled_store().save(path)
    path.write_bytes(path.read_bytes()[:500])  # truncated
    with pytest.raises(DataError, match=r"store.knn is corrupt or not a KNNStore file") as error:
        KNNStore.load(path)
    assert "\n" not in str(error.value)
    path.write_text("not a store")
    with pytest.raises(DataError, match="corrupt"):
        KNNStore.load(path)


# -- KNNAttention -----------------------------------------------------------------------------------

D_MODEL, HEADS, WINDOW = 16, 2, 6


def layer(retrieval: bool = True, **options) -> KNNAttention:
    torch.manual_seed(0)
    return KNNAttention(D_MODEL, HEADS, top_k=4, retrieval=retrieval, **options)


def windows(count: int, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(2, WINDOW, D_MODEL, generator=generator) for _ in range(count)]


def test_output_shapes_and_state():
    attention = layer()
    x, x2 = windows(2)
    y, state = attention(x)
    assert y.shape == x.shape and isinstance(state, KNNStore)
    assert state.sizes.tolist() == [WINDOW, WINDOW] and state.dim == D_MODEL // HEADS and state.heads == HEADS
    y2, state2 = attention(x2, state)
    assert y2.shape == x2.shape and state2 is state and state.sizes.tolist() == [2 * WINDOW] * 2
    y, state = layer(retrieval=False)(x)
    assert y.shape == x.shape and state is None


def test_empty_memory_gives_exactly_local_attention():
    with_memory, without = layer(), layer(retrieval=False)
    without.load_state_dict(with_memory.state_dict(), strict=False)  # the same weights, minus the gate
    x = windows(1)[0]
    torch.testing.assert_close(with_memory(x)[0], without(x)[0])


@pytest.mark.parametrize("retrieval", [True, False])
def test_causal_within_a_window(retrieval):
    attention = layer(retrieval)
    first, x = windows(2)
    changed = x.clone()
    changed[:, 3:] += 1.0
    ys = []
    for inputs in (x, changed):
        _, state = attention(first)  # the same memory both times (a fresh store each time)
        ys.append(attention(inputs, state)[0])
    torch.testing.assert_close(ys[0][:, :3], ys[1][:, :3])
    assert not torch.allclose(ys[0][:, 3:], ys[1][:, 3:])


@pytest.mark.parametrize("retrieval", [True, False])
def test_earlier_windows_reach_later_ones_only_through_retrieval(retrieval):
    attention = layer(retrieval)
    first, other_first, x = windows(3)
    outputs = []
    for earlier in (first, other_first):
        _, state = attention(earlier)
        outputs.append(attention(x, state)[0])
    changed_by_earlier_window = not torch.allclose(outputs[0], outputs[1])
    assert changed_by_earlier_window == retrieval


def test_no_gradient_flows_into_the_memory():
    attention = layer()
    first, x = windows(2)
    first.requires_grad_(True)
    y1, state = attention(first)
    y2, state = attention(x, state)
    assert not state.keys.requires_grad and not state.values.requires_grad
    (y1.sum() + y2.sum()).backward()
    assert attention.gate_bias.grad is not None and attention.gate_bias.grad.abs().sum() > 0
    # the first window's input gets gradient only from its own output, not through the memory
    first_only = first.grad.clone()
    first.grad = None
    y1, _ = attention(first)
    y1.sum().backward()
    torch.testing.assert_close(first.grad, first_only)


def test_state_continues_across_calls_and_reset_clears_rows():
    attention = layer(memory_capacity=2 * WINDOW)
    xs = windows(4)
    state = None
    for number, x in enumerate(xs[:3]):
        _, state = attention(x, state)
        assert state.sizes.tolist() == [min((number + 1) * WINDOW, 2 * WINDOW)] * 2
    state = attention.reset(state, torch.tensor([True, False]))
    assert state.sizes.tolist() == [0, 2 * WINDOW]
    y, _ = attention(xs[3], state)
    fresh, _ = attention(xs[3])
    torch.testing.assert_close(y[0], fresh[0])  # the cleared row sees an empty memory
    assert not torch.allclose(y[1], fresh[1])
    assert attention.reset(None, torch.tensor([True, False])) is None


def test_approximate_memories_work_in_the_layer():
    for index in ("hnsw", "ivf"):
        attention = layer(memory_index=index)
        state = None
        for x in windows(3):
            y, state = attention(x, state)
        assert torch.isfinite(y).all() and state.kind == index
