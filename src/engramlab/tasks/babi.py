"""bAbI question answering (Weston et al. 2015) from the official release, read from a local directory.

The official format: one sentence per line, numbered from 1 within a story; the numbering
restarting at 1 starts a new story. A question line holds the question, a tab, the answer and a
tab, then the line numbers of the supporting facts::

    1 Mary moved to the bathroom.
    2 John went to the hallway.
    3 Where is Mary? \tbathroom\t1

Pre-processing follows the PonderNet paper (Banino et al. 2021, App. C): lower-case; periods and
question marks dropped; tokens split on spaces; commas only occur in answers and are kept, so a
list answer such as ``n,s`` is one label. Every question becomes one example whose story is the
story's statements before it (earlier questions are not statements and are left out, as in
MemN2N, Sukhbaatar et al. 2015, §4.2); supporting facts are given as indices into that story.

Nothing is downloaded: :func:`load_babi` takes the directory of one release variant (``en`` or
``en-10k`` of ``tasks_1-20_v1-2``). A malformed line raises :class:`DataError` naming the file and
line.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engramlab.errors import DataError

TASKS = tuple(range(1, 21))
PAD = "<pad>"
UNKNOWN_ANSWER = "<unk>"  # answers never seen in training (e.g. a new order of a list): always wrong


@dataclass(frozen=True)
class BabiExample:
    task: int
    story: tuple[tuple[str, ...], ...]  # the statements before the question, oldest first
    question: tuple[str, ...]
    answer: str
    supporting: tuple[int, ...]  # indices into ``story``
    story_id: int = 0  # which story of its file: examples of one story share its statements


def tokenize(text: str) -> tuple[str, ...]:
    """Lower-case, drop periods and question marks, split on spaces (PonderNet App. C)."""
    return tuple(text.lower().replace(".", " ").replace("?", " ").split())


def parse_babi(path: str | Path, task: int) -> list[BabiExample]:
    """Every question of one bAbI file as an example; see the module docstring for the format."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text") from None
    examples: list[BabiExample] = []
    story: list[tuple[str, ...]] = []
    position: dict[int, int] = {}  # line number in the story -> index of that statement in ``story``
    previous, story_id = 0, -1
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        number_text, _, text = line.partition(" ")
        if not number_text.isdigit() or not text.strip():
            raise DataError(f"{where}: expected '<number> <sentence>', got {line[:60]!r}")
        number = int(number_text)
        if number == 1:
            story, position, story_id = [], {}, story_id + 1
        elif number != previous + 1:
            raise DataError(f"{where}: line number {number} does not follow {previous} (a story starts at 1)")
        previous = number
        if "\t" not in text:
            position[number] = len(story)
            story.append(tokenize(text))
            continue
        fields = text.split("\t")
        if len(fields) != 3 or not fields[1].strip() or not re.fullmatch(r"\s*\d+(\s+\d+)*\s*", fields[2]):
            raise DataError(f"{where}: expected '<question>\\t<answer>\\t<supporting line numbers>', got {line[:60]!r}")
        question, answer, support = fields
        missing = [n for n in map(int, support.split()) if n not in position]
        if missing:
            raise DataError(f"{where}: supporting fact {missing[0]} is not a statement of this story")
        examples.append(
            BabiExample(
                task=task,
                story=tuple(story),
                question=tokenize(question),
                answer=answer.strip().lower(),
                supporting=tuple(position[n] for n in map(int, support.split())),
                story_id=story_id,
            )
        )
    return examples


def task_file(data_dir: str | Path, task: int, split: str) -> Path:
    """``qa{task}_*_{split}.txt`` in ``data_dir`` (the official file names)."""
    if task not in TASKS:
        raise DataError(f"bAbI task {task} does not exist (allowed: 1-20)")
    if split not in ("train", "test"):
        raise DataError(f"bAbI split '{split}' does not exist (allowed: train, test)")
    found = sorted(Path(data_dir).glob(f"qa{task}_*_{split}.txt"))
    if not found:
        raise DataError(f"{data_dir}: no file qa{task}_*_{split}.txt (a bAbI release directory such as en or en-10k)")
    return found[0]


def load_babi(
    data_dir: str | Path, split: str, tasks: tuple[int, ...] | list[int] = TASKS, skip_missing: bool = False
) -> list[BabiExample]:
    """The examples of ``tasks`` in one split of a release directory, task by task.

    ``skip_missing=True`` leaves out tasks whose file is absent (the en-10k ``qa3`` training file
    is missing from some copies); the default is an error naming the file.
    """
    if not Path(data_dir).is_dir():
        raise DataError(f"{data_dir}: not a directory (give the bAbI release directory, e.g. .../en-10k)")
    examples = []
    for task in tasks:
        try:
            path = task_file(data_dir, task, split)
        except DataError:
            if skip_missing and task in TASKS:
                continue
            raise
        examples += parse_babi(path, task)
    return examples


def split_validation(
    examples: list[BabiExample], fraction: float = 0.1, seed: int = 0
) -> tuple[list[BabiExample], list[BabiExample]]:
    """(train, validation): a seeded ``fraction`` of every task's training examples held out."""
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"validation fraction {fraction} must be in [0, 1)")
    rng = random.Random(seed)
    train, valid = [], []
    for task in sorted({e.task for e in examples}):
        of_task = [e for e in examples if e.task == task]
        held = set(rng.sample(range(len(of_task)), round(fraction * len(of_task))))
        for i, example in enumerate(of_task):
            (valid if i in held else train).append(example)
    return train, valid


class BabiVocab:
    """Word and answer ids. Word id 0 is padding; answers have their own ids (``n,s`` is one label),
    and answer id 0 stands for an answer never seen in training, which no trained model predicts."""

    def __init__(self, examples: list[BabiExample], answers_as_words: bool = False):
        """``answers_as_words``: every answer is also a word (MemN2N predicts answers from the word
        embeddings, ``Wᵀ = C_K``; list answers such as ``n,s`` become words of their own)."""
        words = {w for e in examples for s in (*e.story, e.question) for w in s}
        answers = sorted({e.answer for e in examples})
        if answers_as_words:
            words |= set(answers)
        self.set_lists(sorted(words), answers)

    @classmethod
    def from_lists(cls, words: list[str], answers: list[str]) -> BabiVocab:
        """A vocabulary saved as its two lists (without padding and ``<unk>``)."""
        vocab = cls.__new__(cls)
        vocab.set_lists(words, answers)
        return vocab

    def set_lists(self, words: list[str], answers: list[str]) -> None:
        self.words = [PAD, *words]
        self.answers = [UNKNOWN_ANSWER, *answers]
        self.word_id = {w: i for i, w in enumerate(self.words)}
        self.answer_id = {a: i for i, a in enumerate(self.answers)}

    def encode(self, examples: list[BabiExample], max_words: int) -> BabiTensors:
        """Every story's statements once, and per example where its story ends; see :class:`BabiTensors`.

        Examples of one story share their statements (a story's questions see growing prefixes
        of it), so the data set takes the room of its stories, not of examples x story length.
        Words beyond ``max_words`` are cut; unknown words (seen only in other splits) map to
        padding, unknown answers to answer id 0."""
        longest: dict[tuple[int, int], tuple[tuple[str, ...], ...]] = {}
        for e in examples:
            key = (e.task, e.story_id)
            if len(e.story) >= len(longest.get(key, ())):
                longest[key] = e.story
        first, statements = {}, []
        for key, story in longest.items():  # once per data set, not per batch
            first[key] = len(statements)
            statements += [self.ids(sentence[:max_words]) for sentence in story]
        table = np.zeros((max(1, len(statements)), max_words), dtype=np.int64)
        for row, words in enumerate(statements):
            table[row, : len(words)] = words
        question = np.zeros((len(examples), max_words), dtype=np.int64)
        for i, e in enumerate(examples):
            words = self.ids(e.question[:max_words])
            question[i, : len(words)] = words
        start = np.array([first[(e.task, e.story_id)] for e in examples], dtype=np.int64)
        return BabiTensors(
            statements=torch.from_numpy(table),
            start=torch.from_numpy(start),
            end=torch.from_numpy(start + np.array([len(e.story) for e in examples], dtype=np.int64)),
            question=torch.from_numpy(question),
            answer=torch.tensor([self.answer_id.get(e.answer, 0) for e in examples], dtype=torch.long),
            task=torch.tensor([e.task for e in examples], dtype=torch.long),
        )

    def ids(self, words: tuple[str, ...]) -> list[int]:
        return [self.word_id.get(w, 0) for w in words]


@dataclass
class BabiTensors:
    """An encoded bAbI split. ``statements`` (S, W): every story's statements, story after story;
    example ``i``'s story is ``statements[start[i]:end[i]]``. ``question`` (N, W), ``answer`` and
    ``task`` (N,)."""

    statements: torch.Tensor
    start: torch.Tensor
    end: torch.Tensor
    question: torch.Tensor
    answer: torch.Tensor
    task: torch.Tensor

    def __len__(self) -> int:
        return len(self.answer)

    def stories(self, rows: torch.Tensor, max_sentences: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, max_sentences, W) tokens of the *last* ``max_sentences`` statements of each example's
        story, oldest first and padded at the front, and the (B, max_sentences) mask of real ones.
        One gather for the whole batch."""
        offsets = torch.arange(-max_sentences, 0)
        positions = self.end[rows, None] + offsets  # (B, M)
        real = positions >= self.start[rows, None]
        tokens = self.statements[positions.clamp(min=0)] * real[..., None]
        return tokens, real
