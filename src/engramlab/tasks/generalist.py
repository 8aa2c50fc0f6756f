"""The generalist's training data: every example of every modality end to end in one flat token
corpus, and batches of fixed-length sequences cut from it by tensor operations (Reed et al. 2022,
"A Generalist Agent", §2 and §3).

A batch row is one of three kinds, drawn with the weights of ``Mix``:

- **control**: one training task's episode window, optionally **prompted** (with probability
  ``prompt_fraction``, 0.25 in Gato §3.3) by a window of another episode of the same task, taken
  from that episode's end or from a uniform place (half each). A BabyAI episode's mission text
  comes first, before its timesteps. No task id: the model tells tasks apart by their tokens
  and the prompt.
- **caption**: image–caption examples packed one after the other: an image's patches
  (``PATCH`` ids, pixels beside them), then its caption as target text.
- **text**: texts packed one after the other, every token a target (a language model's rows).

A row is a list of at most ``SEGMENTS`` segments, each a contiguous span of the corpus; the row
is their concatenation, cut or padded to the context length. Targets (the tokens whose
*prediction* is in the loss, §2.3): action tokens always; text tokens when their segment is a
target (captions and text rows: yes; a mission before an episode: no).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from engramlab.tasks import control
from engramlab.tasks import gato_tokens as tok

CONTEXT_KIND, ACTION_KIND, TEXT_KIND = 0, 1, 2
SEGMENTS = 6
PAD = tok.END  # padding after a row's last token; never a target, never attended to by real tokens


@dataclass
class Corpus:
    """Flat token streams: ``ids``, ``local`` positions, ``kind`` (context / action / text) and
    ``patch`` (row of ``pixels`` for a ``PATCH`` token, else −1); ``intervals`` (P, 2, 2) are the
    patches' quantised row and column intervals."""

    ids: Tensor
    local: Tensor
    kind: Tensor
    patch: Tensor
    pixels: Tensor
    intervals: Tensor


class CorpusBuilder:
    def __init__(self):
        self.parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        self.pixels: list[Tensor] = []
        self.intervals: list[Tensor] = []
        self.size = 0
        self.patches = 0

    def add(self, tokens: tok.Tokens, kind: Tensor, pixels: Tensor | None = None, intervals: Tensor | None = None):
        """Append a token stream; returns its offset. ``pixels`` (n, C, p, p) fill its ``PATCH`` ids in order."""
        patch = torch.full_like(tokens.ids, -1)
        if pixels is not None:
            is_patch = tokens.ids == tok.PATCH
            patch[is_patch] = self.patches + torch.arange(int(is_patch.sum()))
            self.pixels.append(pixels)
            self.intervals.append(intervals)
            self.patches += len(pixels)
        self.parts.append((tokens.ids, tokens.local, kind.to(torch.uint8), patch))
        offset, self.size = self.size, self.size + len(tokens.ids)
        return offset

    def build(self, patch_shape: tuple[int, ...] = (1, 1, 1)) -> Corpus:
        ids, local, kind, patch = (torch.cat(column) for column in zip(*self.parts))
        pixels = torch.cat(self.pixels) if self.pixels else torch.zeros(0, *patch_shape)
        intervals = torch.cat(self.intervals) if self.intervals else torch.zeros(0, 2, 2, dtype=torch.long)
        return Corpus(ids, local, kind, patch, pixels, intervals)


def kinds_of(tokens: tok.Tokens, text: bool = False) -> Tensor:
    """Targets of a timestep stream are its actions; of a text, the text (its segment decides)."""
    if text:
        return torch.full_like(tokens.ids, TEXT_KIND, dtype=torch.uint8)
    return torch.where(tokens.target, ACTION_KIND, CONTEXT_KIND).to(torch.uint8)


@dataclass
class EpisodeTable:
    """Every control episode of the corpus: its task, first token, length in steps, tokens per
    step and mission span; ``first``/``count`` index the episodes of each task."""

    task: Tensor
    start: Tensor
    steps: Tensor
    step_tokens: Tensor
    mission: Tensor
    mission_length: Tensor
    first: Tensor
    count: Tensor


def add_control_task(builder: CorpusBuilder, data: control.TaskData) -> dict[str, Tensor]:
    """Tokenise a task's episodes into the corpus; returns its rows of the episode table."""
    e = data.episodes
    space = control.action_space(data.task.make())
    observations = control.observation_ids(data.task, torch.from_numpy(e.observations))
    actions = space.ids(torch.from_numpy(e.actions))
    steps = tok.timesteps(observations, actions)
    offset = builder.add(steps, kinds_of(steps))
    step_tokens = observations.shape[1] + 1 + actions.shape[1]
    starts = torch.from_numpy(e.starts)
    missions, lengths = [], []
    for text in e.missions:  # a few hundred short strings, once per corpus
        if text:
            mission = tok.text(tok.text_ids(text), end=True, target=False)
            missions.append(builder.add(mission, kinds_of(mission, text=True)))
            lengths.append(len(mission.ids))
        else:
            missions.append(0)
            lengths.append(0)
    return {
        "start": offset + starts[:-1] * step_tokens,
        "steps": starts.diff(),
        "step_tokens": torch.full((len(e),), step_tokens),
        "mission": torch.tensor(missions, dtype=torch.long),
        "mission_length": torch.tensor(lengths, dtype=torch.long),
    }


def episode_table(rows: list[dict[str, Tensor]]) -> EpisodeTable:
    counts = torch.tensor([len(r["steps"]) for r in rows])
    columns = {key: torch.cat([r[key] for r in rows]) for key in rows[0]}
    task = torch.repeat_interleave(torch.arange(len(rows)), counts)
    first = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])
    return EpisodeTable(task=task, first=first, count=counts, **columns)


@dataclass
class Examples:
    """Spans of the corpus that are whole examples (captions, texts): ``start`` and ``length``."""

    start: Tensor
    length: Tensor


def add_captions(builder: CorpusBuilder, images: Tensor, captions: list[str], patch: int) -> Examples:
    """Images (N, C, H, W) in [0, 1] and their captions: patches, then the caption as text."""
    pixels = tok.image_patches(images, patch)
    intervals = tok.patch_intervals(images.shape[2], images.shape[3], patch)
    n_patches = pixels.shape[1]
    image_tokens = tok.Tokens(
        torch.full((n_patches,), tok.PATCH), torch.arange(1, n_patches + 1), torch.zeros(n_patches, dtype=torch.bool)
    )
    starts, lengths = [], []
    for i, caption in enumerate(captions):  # one add per image: done once, when the corpus is built
        text = tok.text(tok.text_ids(caption))
        example = tok.Tokens.cat([image_tokens, text])
        kind = torch.cat([torch.full((n_patches,), CONTEXT_KIND), torch.full((len(text.ids),), TEXT_KIND)])
        starts.append(builder.add(example, kind, pixels[i], intervals))
        lengths.append(len(example.ids))
    return Examples(torch.tensor(starts), torch.tensor(lengths))


def add_texts(builder: CorpusBuilder, texts: list[str]) -> Examples:
    starts, lengths = [], []
    for text in texts:
        tokens = tok.text(tok.text_ids(text))
        starts.append(builder.add(tokens, kinds_of(tokens, text=True)))
        lengths.append(len(tokens.ids))
    return Examples(torch.tensor(starts), torch.tensor(lengths))


class Batch(NamedTuple):
    """``ids``, ``local``, ``target`` (B, T); ``is_patch`` (B, T) and, for those places in order,
    ``pixels`` (K, C, p, p) and ``intervals`` (K, 2, 2); ``kind`` (B,) 0 control, 1 caption, 2 text."""

    ids: Tensor
    local: Tensor
    target: Tensor
    is_patch: Tensor
    pixels: Tensor
    intervals: Tensor
    kind: Tensor


def gather_rows(corpus: Corpus, start: Tensor, length: Tensor, text_target: Tensor, context: int) -> Batch:
    """Rows of concatenated segments ``(start, length)`` (B, S), cut or padded to ``context``."""
    batch = start.shape[0]
    begins = length.cumsum(dim=1) - length  # (B, S): where each segment begins in its row
    place = torch.arange(context).expand(batch, context)
    segment = (torch.searchsorted(begins.contiguous(), place.contiguous(), right=True) - 1).clamp(min=0)
    valid = place < length.sum(dim=1, keepdim=True)
    index = torch.where(valid, start.gather(1, segment) + place - begins.gather(1, segment), 0)
    kind = corpus.kind[index]
    target = valid & ((kind == ACTION_KIND) | ((kind == TEXT_KIND) & text_target.gather(1, segment)))
    patch = torch.where(valid, corpus.patch[index], -1)
    is_patch = patch >= 0
    rows = patch[is_patch]
    return Batch(
        ids=torch.where(valid, corpus.ids[index], PAD),
        local=torch.where(valid, corpus.local[index], 0),
        target=target,
        is_patch=is_patch,
        pixels=corpus.pixels[rows],
        intervals=corpus.intervals[rows],
        kind=torch.zeros(batch, dtype=torch.long),
    )


def uniform_below(n: Tensor, generator: torch.Generator) -> Tensor:
    """One uniform integer in [0, n) per entry of ``n`` (n ≥ 1)."""
    return (torch.rand(n.shape, generator=generator) * n).long().clamp(max=n - 1)


def control_segments(table: EpisodeTable, tasks: Tensor, context: int, prompt_fraction: float, generator):
    """Segments (B, 4) of control rows for ``tasks`` (B,): [prompt mission, prompt steps,
    mission, steps]; a prompt (Gato §3.3) fills at most half the context."""
    batch = len(tasks)
    episode = table.first[tasks] + uniform_below(table.count[tasks], generator)
    demo = table.first[tasks] + uniform_below(table.count[tasks], generator)
    n = table.step_tokens[episode]  # the same for the demo: one task
    prompted = torch.rand(batch, generator=generator) < prompt_fraction
    demo_mission = table.mission_length[demo] * prompted
    demo_steps = ((context // 2 - demo_mission) // n).clamp(min=1).minimum(table.steps[demo]) * prompted
    from_end = torch.rand(batch, generator=generator) < 0.5
    demo_first = torch.where(
        from_end, table.steps[demo] - demo_steps, uniform_below(table.steps[demo] - demo_steps + 1, generator)
    )
    mission = table.mission_length[episode]
    room = context - demo_mission - demo_steps * n - mission
    steps = (room // n).clamp(min=1).minimum(table.steps[episode])
    first = uniform_below(table.steps[episode] - steps + 1, generator)
    start = torch.stack(
        [
            table.mission[demo],
            table.start[demo] + demo_first * n,
            table.mission[episode],
            table.start[episode] + first * n,
        ],
        dim=1,
    )
    length = torch.stack([demo_mission, demo_steps * n, mission, steps * n], dim=1)
    return start, length


def packed_segments(examples: Examples, batch: int, generator) -> tuple[Tensor, Tensor]:
    """Segments (B, SEGMENTS) of random whole examples packed one after the other."""
    pick = torch.randint(len(examples.start), (batch, SEGMENTS), generator=generator)
    return examples.start[pick], examples.length[pick]


@dataclass
class Mix:
    control: float = 0.8
    caption: float = 0.1
    text: float = 0.1


class Sampler:
    """``sampler(batch_size, generator) -> Batch`` of ``context`` tokens per row."""

    def __init__(
        self,
        corpus: Corpus,
        episodes: EpisodeTable,
        captions: Examples | None,
        texts: Examples | None,
        context: int,
        mix: Mix | None = None,
        prompt_fraction: float = 0.25,
    ):
        self.corpus, self.episodes, self.captions, self.texts = corpus, episodes, captions, texts
        self.context, self.prompt_fraction = context, prompt_fraction
        mix = mix or Mix()
        weights = [mix.control, mix.caption if captions else 0.0, mix.text if texts else 0.0]
        self.weights = torch.tensor(weights, dtype=torch.float64)

    def __call__(self, batch_size: int, generator: torch.Generator) -> Batch:
        kind = torch.multinomial(self.weights, batch_size, replacement=True, generator=generator)
        start = torch.zeros(batch_size, SEGMENTS, dtype=torch.long)
        length = torch.zeros_like(start)
        tasks = torch.randint(len(self.episodes.count), (batch_size,), generator=generator)
        s, n = control_segments(self.episodes, tasks, self.context, self.prompt_fraction, generator)
        rows = kind == 0
        start[rows, :4], length[rows, :4] = s[rows], n[rows]
        for k, examples in ((1, self.captions), (2, self.texts)):
            if examples is not None:
                s, n = packed_segments(examples, batch_size, generator)
                rows = kind == k
                start[rows], length[rows] = s[rows], n[rows]
        text_target = (kind != 0)[:, None].expand(batch_size, SEGMENTS)
        return gather_rows(self.corpus, start, length, text_target, self.context)._replace(kind=kind)
