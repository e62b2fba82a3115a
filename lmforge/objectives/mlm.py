"""Masked language modeling (BERT / RoBERTa): masking, FULL-SENTENCES packing, collate, loss.

Masking (``Masker``), per sequence, following BERT's create_pretraining_data:
  * candidates are all positions except special tokens ([CLS], [SEP], [PAD], ...): those are never
    selected;
  * ``k = floor(mask_prob * candidates + u)``, u ~ U[0, 1) (unbiased rounding: the expected rate is
    exactly ``mask_prob``; BERT's ``round`` over-masks short sequences), capped by ``max_predictions``;
  * k positions are drawn without replacement (or whole words, greedily in random order, skipping a
    word that would overshoot k, as BERT's whole-word masking does);
  * n-gram masking (ALBERT, ``max_ngram`` > 1): spans of n consecutive units (words with ``whole_word``,
    else tokens), n <= max_ngram drawn with p(n) proportional to 1/n, as google-research/albert's
    create_pretraining_data.py (create_masked_lm_predictions): span starts are visited in random order;
    n is shortened until the span fits in k, a span that still overshoots or touches a chosen one is
    skipped. Difference: our spans stop at special tokens ([SEP]); ALBERT's may run across them;
  * each selected token independently becomes [MASK] with ``mask_replace_prob`` (0.8), a random
    non-special token with ``random_replace_prob`` (0.1), and stays itself otherwise (0.1);
  * labels hold the original id at selected positions and -100 everywhere else.

Static vs dynamic: ``static`` (BERT) fixes the masks of ``dupe_factor`` copies of the data; an epoch
visits every copy once, so the same masks come back every epoch. ``dynamic`` (RoBERTa) draws new
masks every time a sequence is seen (the RNG is seeded by the epoch).

FULL-SENTENCES (RoBERTa): sequences are packed with whole sentences, read contiguously and crossing
document boundaries with an extra separator between documents, up to ``seq_len`` tokens
(``[CLS] ... [SEP]``). A sentence longer than a sequence is cut into sequence-sized pieces.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from lmforge.errors import ConfigError
from lmforge.objectives.base import Batch, Example, Metrics, ObjectiveBase, example_rng

MaskingMode = Literal["static", "dynamic"]
_SALT_MASK = 0x3A5C


@dataclass(frozen=True)
class MaskingConfig:
    """How tokens are chosen and replaced for MLM."""

    mask_prob: float = 0.15  # fraction of non-special tokens selected for prediction
    mask_replace_prob: float = 0.8  # of the selected: replaced by [MASK]
    random_replace_prob: float = 0.1  # of the selected: replaced by a random token (the rest stay)
    whole_word: bool = False  # select whole words (all their sub-tokens) instead of single tokens
    mode: MaskingMode = "dynamic"  # "static": masks fixed per duplicated copy (BERT); "dynamic": RoBERTa
    dupe_factor: int = 10  # static only: copies of the data, each with its own masks (BERT default 10)
    max_predictions: int | None = None  # cap on selected tokens per sequence (BERT: 20 at 128 tokens)
    max_ngram: int = 1  # ALBERT: mask spans of n <= max_ngram units, p(n) ~ 1/n (1 = BERT's single units)

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if self.mask_replace_prob < 0 or self.random_replace_prob < 0 or \
                self.mask_replace_prob + self.random_replace_prob > 1.0:
            raise ConfigError("mask_replace_prob and random_replace_prob must be >= 0 and sum to at most 1, "
                              f"got {self.mask_replace_prob} and {self.random_replace_prob}")
        if self.mode not in ("static", "dynamic"):
            raise ConfigError(f"masking mode must be 'static' or 'dynamic', got {self.mode!r}")
        if self.dupe_factor < 1:
            raise ConfigError(f"dupe_factor must be >= 1, got {self.dupe_factor}")
        if self.max_predictions is not None and self.max_predictions < 1:
            raise ConfigError(f"max_predictions must be >= 1, got {self.max_predictions}")
        if not 1 <= self.max_ngram <= 10:
            raise ConfigError(f"max_ngram (--ngram) must be between 1 and 10 (ALBERT uses 3), got {self.max_ngram}")

    def copies(self) -> int:
        """How many masked copies of each sequence an epoch holds."""
        return self.dupe_factor if self.mode == "static" else 1

    def stream(self, epoch: int, copy: int) -> int:
        """The RNG stream of an example: its copy (static: same every epoch) or the epoch (dynamic)."""
        return copy if self.mode == "static" else epoch


def continuation_table(tokenizer: Any) -> np.ndarray:
    """(V,) bool: True for ids that continue the previous word (for whole-word masking).

    WordPiece marks continuations with a leading ``##``; byte-level BPE marks word starts with ``Ġ``
    and SentencePiece / Unigram with ``▁``, so there a token without the marker that starts with a
    letter or digit continues a word.
    """
    vocab: dict[str, int] = tokenizer.get_vocab()
    table = np.zeros(max(len(tokenizer), max(vocab.values()) + 1), dtype=bool)
    # the convention is the marker most of the vocabulary carries (GPT-2 also has "##" tokens)
    counts = {m: sum(t.startswith(m) and len(t) > len(m) for t in vocab) for m in ("##", "Ġ", "▁")}
    marker = max(counts, key=counts.__getitem__)
    if marker == "##":
        for t, i in vocab.items():
            table[i] = t.startswith("##") and len(t) > 2
        return table
    for t, i in vocab.items():
        table[i] = not t.startswith(marker) and t[:1].isalnum()
    return table


class Masker:
    """Applies MLM masking to one sequence of ids with a given RNG (see the module docstring)."""

    def __init__(self, *, config: MaskingConfig, vocab_size: int, special_ids: Sequence[int], mask_token_id: int,
                 continuation: np.ndarray | None = None) -> None:
        self.config, self.mask_token_id = config, int(mask_token_id)
        self.special = np.zeros(vocab_size, dtype=bool)
        self.special[[i for i in special_ids if i < vocab_size]] = True
        self.random_pool = np.flatnonzero(~self.special)  # random replacements are never special tokens
        if config.whole_word and continuation is None:
            raise ConfigError("whole-word masking needs the tokenizer's continuation table")
        self.continuation = continuation

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, config: MaskingConfig) -> Masker:
        if tokenizer.mask_token_id is None:
            raise ConfigError("MLM needs a mask token, and this tokenizer has none; use a tokenizer with "
                              "[MASK] / <mask> (train one with `lmforge tokenizer train`)")
        return cls(config=config, vocab_size=len(tokenizer), special_ids=list(tokenizer.all_special_ids),
                   mask_token_id=tokenizer.mask_token_id,
                   continuation=continuation_table(tokenizer) if config.whole_word else None)

    def select(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Positions chosen for prediction (sorted)."""
        cand = ~self.special[ids]
        n = int(cand.sum())
        k = int(np.floor(self.config.mask_prob * n + rng.random()))
        if self.config.max_predictions is not None:
            k = min(k, self.config.max_predictions)
        if k == 0:
            return np.empty(0, dtype=np.int64)
        if self.config.max_ngram > 1:
            return self.select_spans(ids, rng, k)[0]
        if not self.config.whole_word:
            return np.sort(rng.choice(np.flatnonzero(cand), size=k, replace=False))
        positions, bounds = self._words(ids, cand)
        chosen: list[np.ndarray] = []
        total = 0
        for w in rng.permutation(len(bounds) - 1):
            size = int(bounds[w + 1] - bounds[w])
            if total + size > k:
                continue
            chosen.append(positions[bounds[w]:bounds[w + 1]])
            total += size
            if total >= k:
                break
        return np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)

    def _words(self, ids: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(candidate positions, bounds): word w is positions[bounds[w]:bounds[w + 1]]."""
        assert self.continuation is not None
        # a word starts at a candidate that is not a continuation of the candidate before it
        prev = np.concatenate([[False], cand[:-1]])
        starts = cand & ~(self.continuation[ids] & prev)
        word = np.cumsum(starts) - 1  # word number of each position (valid where cand)
        positions = np.flatnonzero(cand)
        return positions, np.searchsorted(word[positions], np.arange(int(starts.sum()) + 1))

    def select_spans(self, ids: np.ndarray, rng: np.random.Generator, k: int | None = None
                     ) -> tuple[np.ndarray, list[int]]:
        """ALBERT n-gram selection: (sorted chosen positions, the length in units of each chosen span).
        ``k`` is the token budget (drawn as in ``select`` when None)."""
        ids = np.asarray(ids, dtype=np.int64)
        cand = ~self.special[ids]
        if k is None:
            k = int(np.floor(self.config.mask_prob * int(cand.sum()) + rng.random()))
            if self.config.max_predictions is not None:
                k = min(k, self.config.max_predictions)
        if self.config.whole_word:
            positions, bounds = self._words(ids, cand)
        else:
            positions = np.flatnonzero(cand)
            bounds = np.arange(len(positions) + 1)
        units = len(bounds) - 1
        if k == 0 or units == 0:
            return np.empty(0, dtype=np.int64), []
        # units left before the next special token: a span never crosses [SEP]
        segment = np.cumsum(self.special[ids])[positions[bounds[:-1]]]
        room = np.searchsorted(segment, segment, side="right") - np.arange(units)
        nmax = self.config.max_ngram
        cum = np.cumsum(1.0 / np.arange(1, nmax + 1))  # p(n) ~ 1/n, renormalized over the n that fit
        order, draws = rng.permutation(units), rng.random(units)
        covered = np.zeros(units, dtype=bool)
        chosen: list[np.ndarray] = []
        spans: list[int] = []
        total = 0
        for start, u in zip(order, draws):
            if total >= k:
                break
            m = int(min(nmax, room[start]))
            n = int(np.searchsorted(cum[:m], u * cum[m - 1], side="right")) + 1
            size = int(bounds[start + n] - bounds[start])
            while total + size > k and n > 1:  # ALBERT: try shorter n-grams before giving up
                n -= 1
                size = int(bounds[start + n] - bounds[start])
            if total + size > k or covered[start:start + n].any():
                continue
            covered[start:start + n] = True
            chosen.append(positions[bounds[start]:bounds[start + n]])
            spans.append(n)
            total += size
        return (np.sort(np.concatenate(chosen)) if chosen else np.empty(0, dtype=np.int64)), spans

    def __call__(self, ids: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(masked input ids, labels) for ``ids`` (int64); labels are -100 where nothing is predicted."""
        ids = np.asarray(ids, dtype=np.int64)
        chosen = self.select(ids, rng)
        labels = np.full_like(ids, -100)
        labels[chosen] = ids[chosen]
        masked = ids.copy()
        u = rng.random(len(chosen))
        to_mask = u < self.config.mask_replace_prob
        to_random = (u >= self.config.mask_replace_prob) & (u < self.config.mask_replace_prob + self.config.random_replace_prob)
        masked[chosen[to_mask]] = self.mask_token_id
        masked[chosen[to_random]] = self.random_pool[rng.integers(0, len(self.random_pool), int(to_random.sum()))]
        return masked, labels


def boundary_ids(tokenizer: Any) -> tuple[int, int]:
    """(start, separator) ids: [CLS]/[SEP] (BERT), <s>/</s> (RoBERTa); BOS/EOS as a fallback."""
    cls_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep_id = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if cls_id is None or sep_id is None:
        raise ConfigError("MLM sequences need a start and a separator token ([CLS]/[SEP] or <s>/</s>); "
                          "this tokenizer has neither pair")
    return int(cls_id), int(sep_id)


# --- FULL-SENTENCES packing -------------------------------------------------------------------------


def pack_full_sentences(dataset: Any, budget: int) -> np.ndarray:
    """(N, 2) token ranges ``[start, end)``: greedy runs of whole sentences that fit ``budget``.

    The length of a range counts one separator per document end strictly inside it. A sentence longer
    than ``budget`` is cut into ``budget``-sized pieces. One ``searchsorted`` per sequence.
    """
    bounds = np.asarray(dataset.sent_offsets, dtype=np.int64)  # sentence starts + the end: (S + 1,)
    doc_ends = np.asarray(dataset.doc_offsets[1:], dtype=np.int64)
    # position in the stream that has a separator after each document (counting the end at b itself)
    stream = bounds + np.searchsorted(doc_ends, bounds, side="right")
    n = dataset.num_tokens
    ranges: list[tuple[int, int]] = []
    pos = 0
    while pos < n:
        s0 = pos + int(np.searchsorted(doc_ends, pos, side="right"))
        j = int(np.searchsorted(stream, s0 + budget, side="right")) - 1
        end = int(bounds[j])
        if end <= pos:  # the sentence at pos is longer than a whole sequence: cut it
            nxt = int(bounds[np.searchsorted(bounds, pos, side="right")])
            end = min(pos + budget, nxt)
        ranges.append((pos, end))
        pos = end
    return np.asarray(ranges, dtype=np.int64).reshape(-1, 2)


class _PackedSequences:
    """MLM examples: FULL-SENTENCES sequences x masked copies."""

    def __init__(self, dataset: Any, objective: MaskedLM) -> None:
        self.dataset, self.objective = dataset, objective
        self.ranges = pack_full_sentences(dataset, objective.seq_len - 2)
        self.doc_ends = np.asarray(dataset.doc_offsets[1:], dtype=np.int64)
        self.copies = objective.masking.copies()

    def __len__(self) -> int:
        return len(self.ranges) * self.copies

    def sequence(self, index: int) -> np.ndarray:
        """[CLS] sentences... [SEP] (separators between documents), unmasked."""
        start, end = (int(x) for x in self.ranges[index])
        tokens = self.dataset.tokens(start, end).astype(np.int64)
        lo, hi = np.searchsorted(self.doc_ends, [start, end], side="right")
        inner = self.doc_ends[lo:hi]
        inner = inner[inner < end] - start  # documents that end strictly inside the range
        cls_id, sep_id = self.objective.cls_token_id, self.objective.sep_token_id
        return np.concatenate([[cls_id], np.insert(tokens, inner, sep_id), [sep_id]])

    def example(self, index: int, *, seed: int, epoch: int) -> Example:
        copy, seq = divmod(index, len(self.ranges))
        rng = example_rng(seed, self.objective.masking.stream(epoch, copy), seq, _SALT_MASK)
        input_ids, labels = self.objective.masker(self.sequence(seq), rng)
        return {"input_ids": input_ids, "labels": labels}


class MaskedObjectiveBase(ObjectiveBase):
    """Collate and loss shared by MLM and the MLM + sentence-pair objectives."""

    pair_name: str | None = None  # "nsp" / "sop" for the pair objectives
    default_masking: MaskingConfig  # the masking used when none is given; override fields with
    # dataclasses.replace(cls.default_masking, whole_word=True) to keep the family's default mode
    pad_to_multiple_of = 8

    def __init__(self, *, tokenizer: Any, seq_len: int, masking: MaskingConfig) -> None:
        if seq_len < 4:
            raise ConfigError(f"seq_len must be at least 4 for {self.name}, got {seq_len}")
        self.seq_len, self.masking = seq_len, masking
        self.masker = Masker.from_tokenizer(tokenizer, masking)
        self.cls_token_id, self.sep_token_id = boundary_ids(tokenizer)
        self.pad_token_id = int(tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0

    def collate(self, examples: Sequence[Example]) -> Batch:
        """Pad to the longest example (rounded up to a multiple of 8); attention_mask only with padding."""
        lengths = [len(e["input_ids"]) for e in examples]
        width = max(lengths)
        width = min(-(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of, max(width, self.seq_len))
        n = len(examples)
        input_ids = np.full((n, width), self.pad_token_id, dtype=np.int64)
        labels = np.full((n, width), -100, dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for i, e in enumerate(examples):
            k = lengths[i]
            input_ids[i, :k], labels[i, :k] = e["input_ids"], e["labels"]
            if "token_type_ids" in e:
                types[i, :k] = e["token_type_ids"]
        batch = {"input_ids": torch.from_numpy(input_ids), "labels": torch.from_numpy(labels)}
        if min(lengths) < width:
            mask = np.arange(width)[None, :] < np.asarray(lengths)[:, None]
            batch["attention_mask"] = torch.from_numpy(mask.astype(np.int64))
        if self.pair_name is not None:
            batch["token_type_ids"] = torch.from_numpy(types)
            batch["next_sentence_label"] = torch.tensor([int(e["next_sentence_label"]) for e in examples])
        return batch

    def loss(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, Metrics]:
        extra = {"next_sentence_label": batch["next_sentence_label"]} if self.pair_name else {}
        out = model(batch["input_ids"], attention_mask=batch.get("attention_mask"),
                    token_type_ids=batch.get("token_type_ids"), labels=batch["labels"], **extra)
        loss = out.loss
        labels = batch["labels"]
        with torch.no_grad():
            keep = labels != -100
            target = labels[keep]
            # (N masked, V): the model gathers masked positions; a model that does not is handled too
            logits = None if out.logits is None else out.logits if out.logits.dim() == 2 else out.logits[keep]
            masked = keep.sum()
            tokens = batch["attention_mask"].sum() if "attention_mask" in batch else torch.tensor(labels.numel())
            metrics: Metrics = {"loss": loss.detach(), "masked_tokens": masked, "weight": masked, "tokens": tokens}
            if logits is not None:  # a fused loss path may skip the logits: then no accuracy
                metrics["mlm_accuracy"] = ((logits.argmax(-1) == target).float().mean() if len(target)
                                           else torch.tensor(0.0))
            if self.pair_name is None:
                metrics["mlm_loss"] = loss.detach()
            else:
                from lmforge.nn.losses import masked_lm_loss, sentence_pair_loss

                pair_logits, pair_labels = out.pair_logits, batch["next_sentence_label"]
                if logits is not None:
                    metrics["mlm_loss"] = masked_lm_loss(logits.detach(), target)
                metrics[f"{self.pair_name}_loss"] = sentence_pair_loss(pair_logits.detach(), pair_labels)
                metrics[f"{self.pair_name}_accuracy"] = (pair_logits.argmax(-1) == pair_labels).float().mean()
                metrics["pairs"] = torch.tensor(len(pair_labels))
        return loss, metrics


class MaskedLM(MaskedObjectiveBase):
    """MLM over FULL-SENTENCES sequences (RoBERTa; dynamic masking by default). ``OBJECTIVES["mlm"]``."""

    name = "mlm"
    head = "mlm"
    default_masking = MaskingConfig()  # dynamic

    def __init__(self, *, tokenizer: Any, seq_len: int, masking: MaskingConfig | None = None) -> None:
        super().__init__(tokenizer=tokenizer, seq_len=seq_len, masking=masking or self.default_masking)

    def examples(self, dataset: Any) -> _PackedSequences:
        return _PackedSequences(dataset, self)
