"""Each kind of memory is declared once (a MemoryKind next to its class); everything else derives from the registry."""

import re
import sys
import types
import typing

import pytest
import torch
from conftest import REPO
from torch import nn

from engramlab import bench, memory
from engramlab.config import describe, validate
from engramlab.engine import plots
from engramlab.errors import ConfigError
from engramlab.experiments import get_experiment
from engramlab.experiments.memory import common
from engramlab.experiments.memory.plots import COLORS
from engramlab.memory import KIND_MODULES, KINDS, MEMORY_KINDS, MemoryKind, build_memory, gather
from engramlab.models.sequence import MemoryModel, MemoryModelConfig, memory_model_config
from engramlab.tasks.mqar import MQARConfig, MQARTask

# the keys of published runs' config.yaml files, in their order: they must not change
FLAT_KEYS = [
    "memory", "d_model", "layers", "ffn", "window", "truncate_gradient", "positions", "heads", "persistent",
    "knn_layer", "top_k", "memory_index", "memory_capacity", "mem_len", "hops", "memory_size", "slots",
    "slot_width", "controller", "controller_size",
]  # fmt: skip
HEADS_ERROR = r"^invalid config: model.d_model \(30\) must be a multiple of model.heads \(4\)$"


def test_the_registry_is_in_the_leaderboards_order():
    assert list(MEMORY_KINDS) == ["lstm", "gru", "attention", "memn2n", "ntm", "knn", "xl"]
    assert memory.KINDS == tuple(MEMORY_KINDS)
    assert all(name == kind.name for name, kind in MEMORY_KINDS.items())


def test_the_flat_config_is_the_union_of_the_kinds_options():
    assert list(MemoryModelConfig.model_fields) == FLAT_KEYS
    assert typing.get_args(MemoryModelConfig.model_fields["memory"].annotation) == tuple(MEMORY_KINDS)
    for kind in MEMORY_KINDS.values():
        for name, field in kind.options.model_fields.items():
            flat = MemoryModelConfig.model_fields[name]
            assert (flat.annotation, flat.default, flat.metadata) == (field.annotation, field.default, field.metadata)
    heads_kinds = ", ".join(name for name, kind in MEMORY_KINDS.items() if kind.splits_width)
    assert heads_kinds == "attention, knn, xl"
    assert MemoryModelConfig.model_fields["heads"].description == f"attention heads ({heads_kinds})"


@pytest.mark.parametrize("kind", MEMORY_KINDS.values(), ids=list(MEMORY_KINDS))
def test_positions_and_the_heads_check_follow_the_kinds_traits(kind):
    tiny = {"memory": kind.name, "d_model": 16, "heads": 2, "slots": 8, "slot_width": 4, "controller_size": 8}
    model = MemoryModel(MemoryModelConfig(**tiny), 8, 8, tokens=True)
    assert model.use_positions == (not kind.knows_order)
    bad = {**tiny, "d_model": 30, "heads": 4}
    if kind.splits_width:
        with pytest.raises(ConfigError, match=HEADS_ERROR):
            validate(MemoryModelConfig, bad)
    else:
        validate(MemoryModelConfig, bad)


def test_knn_goes_in_one_layer_and_the_others_attend():
    cfg = MemoryModelConfig(memory="knn", d_model=16, heads=2, layers=3, knn_layer=1)
    model = MemoryModel(cfg, 8, 8, tokens=True)
    assert [type(block.memory).__name__ for block in model.blocks] == ["Attention", "KNNAttention", "Attention"]
    with pytest.raises(ConfigError, match="model.knn_layer = 3 must index one of the 3 layers"):
        validate(MemoryModelConfig, {**cfg.model_dump(), "knn_layer": 3})


def test_budget_step_eval_keys_bench_order_and_colours_come_from_the_registry(monkeypatch):
    exp = get_experiment("memory-passkey")
    cfg = exp.Config.model_validate({"budget": 1000, "model": {"heads": 2}, "methods": list(MEMORY_KINDS)})
    steps = []

    def match_budget(build, budget, step):
        steps.append(step)
        return 4 * step

    monkeypatch.setattr(common, "match_budget", match_budget)
    for name in MEMORY_KINDS:
        exp.model_config(cfg, name)
    assert steps == [2 * 2 if kind.splits_width else 2 for kind in MEMORY_KINDS.values()]  # 2 x heads

    assert {"model.mem_len", "arm_models.xl.mem_len", "model.top_k", "arm_models.knn.memory_index"} <= set(
        exp.eval_keys
    )

    rows = [
        {"experiment": "e", "memory": kind, "metric": "accuracy", "seeds": [0], "settings": {}}
        for kind in "xl lstm knn".split()
    ]
    assert bench.overview(rows)[3] == "| experiment (metric) | setting | lstm | knn | xl |"

    assert COLORS == {name: kind.color for name, kind in MEMORY_KINDS.items()}
    assert COLORS == {  # the colours of the published plots
        "lstm": "tab:orange",
        "gru": "tab:brown",
        "attention": "tab:blue",
        "memn2n": "tab:red",
        "ntm": "tab:green",
        "knn": "tab:purple",
        "xl": "tab:cyan",
    }
    assert [plots.color(name, i, COLORS) for i, name in enumerate(COLORS)] == list(COLORS.values())


def test_a_kind_names_only_its_own_options():
    with pytest.raises(ValueError, match="memory kind 'bad': mem_len is not one of its options"):
        MemoryKind("bad", nn.Identity, color="k", window_option="mem_len")


# --- a new kind is one file and one line in the registry -----------------------------------------


def documented_module(monkeypatch) -> types.ModuleType:
    """The new file of docs/memory.md ("Adding a kind of memory"), as written, importable as
    ``engramlab.memory.decay``."""
    text = (REPO / "docs" / "memory.md").read_text()
    (code,) = [block for block in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "DECAY_KIND =" in block]
    module = types.ModuleType("engramlab.memory.decay")
    exec(compile(code, "docs/memory.md", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


def test_a_new_kind_is_one_file_and_one_registry_line(monkeypatch):
    documented_module(monkeypatch)  # the file
    kinds = gather((*KIND_MODULES, "decay"))  # the line
    assert list(kinds) == [*KINDS, "decay"]
    monkeypatch.setitem(MEMORY_KINDS, "decay", kinds["decay"])

    config = memory_model_config(MEMORY_KINDS)  # what importing engramlab.models.sequence derives
    assert [key for key in config.model_fields if key != "decay"] == FLAT_KEYS
    assert config.model_fields["heads"].description == "attention heads (attention, knn, xl, decay)"
    cfg = config(memory="decay", d_model=16, heads=2, decay=0.9, window=4)
    assert ("model.decay", 0.9, "a number > 0 and < 1", "share of the state each step keeps, per head (decay)") in (
        describe(cfg, "model.")
    )
    with pytest.raises(ConfigError, match=HEADS_ERROR):
        validate(config, {"memory": "decay", "d_model": 30, "heads": 4})
    assert type(build_memory("decay", 8, heads=2)).__name__ == "Decay"

    model = MemoryModel(cfg, 20, 20, tokens=True)
    assert not model.use_positions  # it knows order by itself
    batch = MQARTask(MQARConfig(vocab=20, length=24, kv_pairs=3)).sample(4, torch.Generator().manual_seed(0))
    loss, _ = model(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.blocks[0].memory.keep_logit.grad.abs().sum() > 0
    torch.testing.assert_close(model.blocks[0].memory.keep_logit.sigmoid(), torch.full((2, 1), 0.9))
