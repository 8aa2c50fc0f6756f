"""The Frozen/Flamingo experiment: its stages, the frozen LM's bit-identity, its evaluation
cells and its errors (engramlab.experiments.multimodal.frozen)."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_frozen as tiny

from engramlab.cli import main
from engramlab.config import resolve
from engramlab.engine.rundir import read_json
from engramlab.engine.runner import check_fits_in_memory, run_experiment
from engramlab.errors import ConfigError
from engramlab.experiments.multimodal import frozen
from engramlab.experiments.multimodal.frozen import EXPERIMENT, FrozenConfig
from engramlab.models.frozen import fingerprint
from engramlab.tasks import binding


def test_a_tiny_run_trains_every_stage_and_keeps_the_lm_frozen(frozen_data):
    overrides = tiny(frozen_data)
    cfg = resolve(FrozenConfig, EXPERIMENT.presets["quick"], overrides=overrides)
    assert EXPERIMENT.arms(cfg) == ["lm"] + [f"{kind}-seed0" for kind in frozen.OWN_LM_KINDS]
    run = frozen_data / "run"
    run.mkdir()
    summary = run_experiment(EXPERIMENT, cfg, run, preset="quick", overrides=overrides, threads=1, progress=False)
    metrics = summary["metrics"]
    lm_print = read_json(run / "lm" / "summary.json")["results"]["lm_fingerprint"]
    for kind in ("frozen", "frozen-vq", "flamingo", "blind"):  # Frozen's premise: the LM is bit-identical afterwards
        assert metrics[f"{kind}/lm_unchanged"] == 1.0
        assert read_json(run / f"{kind}-seed0" / "summary.json")["results"]["lm_fingerprint"] == lm_print
    for kind in ("finetuned", "scratch"):  # ... and these two do change it
        assert read_json(run / f"{kind}-seed0" / "summary.json")["results"]["lm_fingerprint"] != lm_print
    cells = read_json(run / "frozen-seed0" / "summary.json")["results"]["cells"]
    assert sorted(cells) == sorted(frozen.cell_name(*c) for c in frozen.cells(cfg)) and len(cells) == 2 * 2 + 2 * 2
    assert all(len(hits) == 10 for hits in cells.values())
    for key in ("text/nonce/2way/1shot", "frozen/nonce/2way/2shot/no-induction", "prototype/2way/1shot"):
        assert 0 <= metrics[key] <= 100
    assert sorted(p.name for p in (run / "plots").iterdir()) == [
        "binding-vs-shots.png", "caption-curves.png", "episode-flamingo.png", "episode-frozen-vq.png",
        "episode-frozen.png", "lm-curves.png",
    ]  # fmt: skip
    assert read_json(run / "frozen-vq-seed0" / "summary.json")["steps"] == 4  # vision.vq_steps, not vision.train


def test_the_frozen_vision_stage_leaves_every_lm_parameter_bit_identical(frozen_data, tmp_path):
    """Trained directly: only the vision side's parameters move, every LM parameter keeps its bytes."""
    cfg = resolve(
        FrozenConfig, {}, overrides=tiny(frozen_data, "vision.train.steps=3", "vision.train.checkpoint_every=2")
    )
    lm_dir = tmp_path / "r" / "lm"
    model = EXPERIMENT.build(cfg, "lm")
    EXPERIMENT.fit(cfg, "lm", model, lm_dir, progress=None, resume=False, device="cpu")
    before = fingerprint(model.lm)
    for kind in ("frozen", "flamingo"):
        captioner = EXPERIMENT.build(cfg, f"{kind}-seed0")
        vision_before = [p.detach().clone() for n, p in captioner.named_parameters() if not n.startswith("lm.")]
        EXPERIMENT.fit(
            cfg, f"{kind}-seed0", captioner, tmp_path / "r" / kind, progress=None, resume=False, device="cpu"
        )
        assert fingerprint(captioner.lm) == before
        vision_after = [p for n, p in captioner.named_parameters() if not n.startswith("lm.")]
        assert any(not torch.equal(a, b) for a, b in zip(vision_before, vision_after))


@pytest.mark.parametrize("wording, caption", [("frozen", "this is a seven ."), ("direct", "seven")])
def test_the_caption_loss_counts_the_caption_tokens_only(frozen_data, wording, caption):
    cfg = resolve(FrozenConfig, {}, overrides=tiny(frozen_data, f"text.wording={wording}"))
    model = EXPERIMENT.build(cfg, "frozen-seed0")
    vocab = frozen.text_of(cfg.data).vocab
    ids = frozen.caption_ids(vocab, torch.tensor([7]), wording)
    assert vocab.decode(ids[0]) == f"<img> <img> {caption}"
    images = torch.rand(2, 1, 28, 28)
    hidden = model.hidden(frozen.caption_ids(vocab, torch.tensor([7, 3]), wording), torch.tensor([0]), images[:, None])
    logits = model.lm.logits(hidden[:, 1:-1])
    targets = vocab.ids(f"{caption} {caption.replace('seven', 'three')}".split())  # after the slot
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets)
    torch.testing.assert_close(frozen.caption_loss(model, images, torch.tensor([7, 3])), expected)


def test_episode_images_are_distinct_images_of_their_classes(frozen_data):
    cfg = resolve(FrozenConfig, {}, overrides=tiny(frozen_data))
    episodes, images = frozen.episodes_of(cfg, "nonce", 2, 3, True, 20, torch.Generator().manual_seed(0))
    pool_images, pool_labels = frozen.images_of(cfg.data).pool
    flat = images.flatten(0, 1).flatten(1)
    match = (flat[:, None] == pool_images.flatten(1)[None]).all(-1)  # (B·S, pool): which pool image
    assert (match.sum(-1) == 1).all()
    index = match.float().argmax(-1).view(20, -1)
    assert torch.equal(pool_labels[index], episodes.classes)
    assert all(len(set(row.tolist())) == row.numel() for row in index)  # never the same image twice
    held = frozen.episodes_of(cfg, "held-out-classes", 2, 1, True, 10, torch.Generator())[0]
    assert set(held.classes.flatten().tolist()) <= {7, 8, 9}


def test_the_curriculum_holds_back_five_way_and_real_name_episodes_until_mix_after(frozen_data):
    shares = ["text.five_way_share=1", "text.real_name_share=1", "text.mix_after=5", "text.induction_share=0"]
    cfg = resolve(FrozenConfig, {}, overrides=tiny(frozen_data, *shares))
    sample, vocab = frozen.pretrain_sampler(cfg), frozen.text_of(cfg.data).vocab
    letters = vocab.ids(binding.LETTERS)
    for step in (1, 5):  # 2-way nonce episodes: the answer's three letters end the text
        episodes = sample(4, torch.Generator().manual_seed(step), step=step)[1]
        assert torch.isin(episodes[:, -binding.NAME_LETTERS :], letters).all()
        assert len(episodes[0]) <= frozen.episode_length(2, cfg.text.max_shots, "direct")
    episodes = sample(4, torch.Generator().manual_seed(6), step=6)[1]  # 5-way, the digits' own words
    assert torch.isin(episodes[:, -1], vocab.ids(binding.DIGITS)).all()
    assert not torch.isin(episodes, letters).any()
    assert (episodes == vocab.index["<img>"]).sum(1).min() >= 6  # five supports and the query


@pytest.mark.parametrize("wording, tail", [("direct", []), ("frozen", ["this", "is", "a"])])
def test_text_captions_come_after_mix_after_with_the_class_word_in_the_slot(frozen_data, wording, tail):
    overrides = tiny(frozen_data, "text.captions=4", "text.mix_after=5", f"text.wording={wording}")
    cfg = resolve(FrozenConfig, {}, overrides=overrides)
    sample, vocab = frozen.pretrain_sampler(cfg), frozen.text_of(cfg.data).vocab
    assert sample(3, torch.Generator().manual_seed(0), step=5)[2].shape[0] == 0
    batch = sample(3, torch.Generator().manual_seed(0), step=6)
    captions = batch[2]
    assert captions.shape[0] == 4
    for row in captions.tolist():
        words = [vocab.words[i] for i in row]
        digit = words[1]
        assert digit in binding.DIGITS
        assert words == ["<img>", digit, *tail, digit] + (["."] if wording == "frozen" else [])
    model = frozen.Pretraining(EXPERIMENT.new_lm(cfg))
    loss, logs = model(batch)
    assert loss.item() == pytest.approx(logs["plays_loss"] + logs["episode_loss"] + logs["caption_loss"], rel=1e-5)
    assert "caption_loss" not in model(sample(3, torch.Generator().manual_seed(0), step=5))[1]


def test_slot_noise_perturbs_the_class_word_of_every_image_slot_by_its_share_of_the_rms(frozen_data):
    cfg = resolve(FrozenConfig, {}, overrides=tiny(frozen_data, "text.slot_noise=0.5"))
    vocab, model = frozen.text_of(cfg.data).vocab, EXPERIMENT.build(cfg, "lm")
    episodes = frozen.pretrain_sampler(cfg)(64, torch.Generator().manual_seed(0), step=1)[1]
    seen, hidden = [], model.lm.hidden
    model.lm.hidden = lambda ids, inject=None, *rest: seen.append((ids, inject)) or hidden(ids, inject, *rest)
    model.text_loss(episodes)
    ids, (where, noisy) = seen[-1]
    assert len(where) == (ids[0] == vocab.index["<img>"]).sum() >= 3  # two supports and the query at least
    assert (ids[:, where - 1] == vocab.index["<img>"]).all()
    assert torch.isin(ids[:, where], vocab.ids(binding.DIGITS)).all()
    clean = model.lm.tokens(ids[:, where])
    share = (noisy - clean).pow(2).mean(-1).sqrt() / clean.pow(2).mean(-1).sqrt()
    assert share.mean().item() == pytest.approx(0.5, abs=0.05)
    model.slot_noise = 0.0  # no noise: the plain LM loss
    assert model.text_loss(episodes).item() == pytest.approx(model.lm.loss(episodes[:, :-1], episodes[:, 1:]).item())


def test_random_codes_give_one_unit_rms_vector_per_word_and_row():
    words = torch.tensor([[5, 7, 5, 7, 5], [5, 7, 7, 9, 5]])
    codes = frozen.random_codes(words, 64)
    assert codes.shape == (2, 5, 64)
    assert codes.pow(2).mean(-1).sqrt() == pytest.approx(torch.ones(2, 5), abs=1e-5)
    assert torch.equal(codes[0, 0], codes[0, 2]) and torch.equal(codes[0, 1], codes[0, 3])
    assert torch.equal(codes[1, 1], codes[1, 2]) and torch.equal(codes[1, 0], codes[1, 4])
    assert not torch.allclose(codes[0, 0], codes[0, 1]) and not torch.allclose(codes[0, 0], codes[1, 0])


def test_slot_codes_replace_the_class_words_of_the_drawn_share_of_episodes_after_mix_after(frozen_data):
    cfg = resolve(FrozenConfig, {}, overrides=tiny(frozen_data, "text.slot_codes=0.5", "text.mix_after=5"))
    model, sample = EXPERIMENT.build(cfg, "lm"), frozen.pretrain_sampler(cfg)
    assert not sample(64, torch.Generator().manual_seed(0), step=5)[3].any()
    _, episodes, _, coded = sample(64, torch.Generator().manual_seed(0), step=6)
    assert 16 < coded.sum() < 48
    seen, hidden = [], model.lm.hidden
    model.lm.hidden = lambda ids, inject=None, *rest: seen.append((ids, inject)) or hidden(ids, inject, *rest)
    model.text_loss(episodes, coded)
    ids, (where, slots) = seen[-1]
    words = model.lm.tokens(ids[:, where])
    assert torch.equal(slots[~coded], words[~coded])  # no noise: the words themselves
    coded_slots, coded_words = slots[coded], ids[coded][:, where]
    assert not torch.allclose(coded_slots, words[coded])
    same = coded_words[:, :, None] == coded_words[:, None, :]  # slots of one class in one episode: one code
    distance = (coded_slots[:, :, None] - coded_slots[:, None, :]).abs().amax(-1)
    assert (distance[same] == 0).all() and (distance[~same] > 0).all()


@pytest.mark.parametrize(
    "override, words",
    [
        ("kinds=[frozen, clip]", "unknown kind 'clip'"),
        ("data.held_out_classes=[7, 12]", "distinct digits 0-9"),
        ("data.held_out_classes=[7]", "2 to 8 distinct digits"),
        ("eval.ways=[2, 8]", r"eval.ways \[2, 8\]: each 2 to 7"),
        ("data.nonce_words=30", "data.nonce_words 30: too few"),
        ("lm.positions=learned", "lm.context 320 is shorter than the longest episode"),
    ],
)
def test_bad_config_is_one_line(override, words):
    more = ["eval.ways=[20]", "data.nonce_words=30"] if "nonce" in override else []
    more += ["eval.shots=[9]", "eval.ways=[5]", "text.wording=frozen"] if "positions" in override else []
    with pytest.raises(ConfigError, match=words) as info:
        resolve(FrozenConfig, EXPERIMENT.presets["quick"], overrides=[override, *more])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("missing", ["corpus", "mnist"])
def test_missing_data_is_one_line_and_no_run_directory(frozen_data, tmp_path, capsys, missing):
    broken = (
        f"data.corpus_dir={tmp_path / 'nowhere'}" if missing == "corpus" else f"data.mnist_dir={tmp_path / 'nowhere'}"
    )
    args = ["run", "frozen", "--out", str(tmp_path / "out"), "--no-progress"]
    for override in tiny(frozen_data, broken):
        args += ["--set", override]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0]
    assert not (tmp_path / "out" / "frozen").exists()


@pytest.mark.parametrize("wording", binding.WORDINGS)
def test_episode_length_matches_the_layout(wording):
    vocab = binding.Vocabulary(binding.SPECIALS + binding.TEMPLATE + binding.DIGITS + binding.LETTERS)
    for ways, shots in [(2, 1), (5, 5)]:
        e = binding.binding_episodes(vocab, 5, ways, shots, ["dax", "wug", "fep", "zib", "pam"], list(range(10)),
                                     True, torch.Generator(), wording)  # fmt: skip
        assert e.ids.shape[1] == frozen.episode_length(ways, shots, wording)


def test_data_first_read_in_the_memory_check_are_real_tensors(frozen_data):
    """On resume nothing reads the frozen_data before runner.check_fits_in_memory builds every arm under
    the meta device; the cached plays and images must still hold frozen_data (a resumed run once failed
    at its first batch with "Cannot copy out of meta tensor")."""
    cfg = resolve(FrozenConfig, {}, overrides=tiny(frozen_data))
    frozen._cached.cache_clear()
    check_fits_in_memory(EXPERIMENT, cfg)
    assert frozen.text_of(cfg.data).plays.device.type == "cpu"
    assert frozen.images_of(cfg.data).pool[0].device.type == "cpu"
    assert frozen.pretrain_sampler(cfg)(2, torch.Generator(), step=1)[0].device.type == "cpu"


def test_a_run_of_smollm2_alone_trains_no_lm_of_ours(frozen_data):
    cfg = resolve(FrozenConfig, {}, overrides=tiny(frozen_data, "kinds=[smollm2]", "seeds=[0, 1]"))
    assert EXPERIMENT.arms(cfg) == ["smollm2-seed0", "smollm2-seed1"] and EXPERIMENT.first_arms(cfg) == []
    both = resolve(FrozenConfig, {}, overrides=tiny(frozen_data, "kinds=[frozen, smollm2]"))
    assert EXPERIMENT.arms(both) == ["lm", "frozen-seed0", "smollm2-seed0"]


def test_deviation_lines_follow_the_arms_a_run_has(frozen_data):
    def lines(kinds: str) -> str:
        cfg = resolve(FrozenConfig, EXPERIMENT.presets["quick"], overrides=tiny(frozen_data, f"kinds={kinds}"))
        return "\n".join(EXPERIMENT.deviations_of(cfg, "quick"))

    alone = lines("[smollm2]")
    assert "SmolLM2-135M-Instruct" in alone and "our own" not in alone and "frozen-vq" not in alone
    every = lines("[frozen, frozen-vq, flamingo]")
    assert "our own" in every and "frozen-vq" in every and "Perceiver" in every and "SmolLM2" not in every
