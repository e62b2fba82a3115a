"""Sentence-pair examples and MLM + next-sentence prediction (BERT). ``OBJECTIVES["mlm+nsp"]``.

Follows BERT's create_pretraining_data.py:
  * ``max_num_tokens = seq_len - 3`` (room for [CLS] A [SEP] B [SEP]); with ``short_seq_prob`` (0.1) a
    chunk aims at a random shorter length in [2, max_num_tokens];
  * each document is cut into chunks of consecutive sentences that reach the target length; a chunk
    is split at a random sentence boundary into A and B;
  * NSP: with probability 0.5, B is replaced by a random run of sentences, starting at a random
    sentence of another random document, up to the length left by A (label 1 = random, 0 = next);
  * the pair is truncated to ``max_num_tokens`` one token at a time from the longer side, from its
    front or its back at random;
  * token_type_ids are 0 for [CLS] A [SEP] and 1 for B [SEP]; MLM masking is then applied.

Differences, kept small on purpose so every example is a pure function of (seed, epoch, index): the
chunk layout is drawn once from the seed (BERT redraws it per duplicate copy), a chunk always holds
at least two sentences (a last lone sentence joins the chunk before it), documents of a single
sentence only serve as random B segments, and the sentences a random B displaced are not "put back".
"""
from __future__ import annotations

from typing import Any

import numpy as np

from lmforge.errors import ConfigError, DataError
from lmforge.objectives.base import Example, example_rng
from lmforge.objectives.mlm import MaskedObjectiveBase, MaskingConfig

_SALT_LAYOUT, _SALT_PAIR, _SALT_MASK = 0x1A70, 0x9A12, 0x3A5C


def pair_layout(dataset: Any, *, max_num_tokens: int, short_seq_prob: float, seed: int) -> np.ndarray:
    """(N, 4) chunks ``(document, first sentence, end sentence, target length)`` of >= 2 sentences."""
    rng = np.random.default_rng([seed, _SALT_LAYOUT])
    sent_len = np.diff(np.asarray(dataset.sent_offsets, dtype=np.int64))
    doc_sents = np.asarray(dataset.doc_sent_offsets, dtype=np.int64)
    chunks: list[tuple[int, int, int, int]] = []
    for d in np.flatnonzero(np.diff(doc_sents) >= 2):
        a, b = int(doc_sents[d]), int(doc_sents[d + 1])
        cum = np.concatenate([[0], np.cumsum(sent_len[a:b])])  # token count of sentences a..a+i
        i = 0
        first_of_doc = len(chunks)
        while i < b - a:
            target = max_num_tokens
            if rng.random() < short_seq_prob:
                target = int(rng.integers(2, max_num_tokens + 1))
            # smallest j > i + 1 with tokens(i..j) >= target (or the document's end)
            j = int(np.searchsorted(cum, cum[i] + target, side="left"))
            j = min(max(j, i + 2), b - a)
            if j - i < 2:  # a lone last sentence joins the previous chunk of this document
                if len(chunks) > first_of_doc:
                    dd, s0, _, t = chunks[-1]
                    chunks[-1] = (dd, s0, a + j, t)
                break
            chunks.append((int(d), a + i, a + j, target))
            i = j
    return np.asarray(chunks, dtype=np.int64).reshape(-1, 4)


def truncate_pair(a: list[int], b: list[int], max_num_tokens: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """BERT's truncate_seq_pair: drop from the longer side, front or back at random, until it fits."""
    a, b = list(a), list(b)
    excess = len(a) + len(b) - max_num_tokens
    if excess <= 0:
        return a, b
    fronts = rng.random(excess) < 0.5
    a_lo, a_hi, b_lo, b_hi = 0, len(a), 0, len(b)
    for front in fronts:
        if a_hi - a_lo > b_hi - b_lo:
            a_lo, a_hi = (a_lo + 1, a_hi) if front else (a_lo, a_hi - 1)
        else:
            b_lo, b_hi = (b_lo + 1, b_hi) if front else (b_lo, b_hi - 1)
    return a[a_lo:a_hi], b[b_lo:b_hi]


class _PairExamples:
    """Pair examples x masked copies over one split."""

    def __init__(self, dataset: Any, objective: MaskedLMNextSentence) -> None:
        self.dataset, self.objective = dataset, objective
        self.max_num_tokens = objective.seq_len - 3
        self.chunks = pair_layout(dataset, max_num_tokens=self.max_num_tokens,
                                  short_seq_prob=objective.short_seq_prob, seed=objective.layout_seed)
        if len(self.chunks) == 0:
            raise DataError(f"{objective.name} needs documents of at least two sentences, and this split has "
                            "none; prepare the corpus with --doc-mode blank (documents separated by blank "
                            "lines) or use --objective mlm")
        if objective.pair_name == "nsp" and dataset.num_documents < 2:
            raise DataError("next-sentence prediction needs at least two documents (random B segments come "
                            "from another document); add documents or use --objective mlm+sop")
        self.copies = objective.masking.copies()

    def __len__(self) -> int:
        return len(self.chunks) * self.copies

    def _run(self, first: int, end: int) -> list[int]:
        ds = self.dataset
        return ds.tokens(int(ds.sent_offsets[first]), int(ds.sent_offsets[end])).astype(np.int64).tolist()

    def segments(self, chunk: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        """(A, B, label) before truncation; label 1 = B is not the continuation of A."""
        d, s0, s1, target = (int(x) for x in self.chunks[chunk])
        a_end = int(rng.integers(s0 + 1, s1))  # A = sentences [s0, a_end), at least one each side
        tokens_a = self._run(s0, a_end)
        if rng.random() < 0.5:
            return tokens_a, self._random_b(d, max(target - len(tokens_a), 1), rng), 1
        return tokens_a, self._run(a_end, s1), 0

    def _random_b(self, doc: int, target_b: int, rng: np.random.Generator) -> list[int]:
        ds = self.dataset
        other = int(rng.integers(0, ds.num_documents - 1))
        other += other >= doc  # any document but this one
        first, end = int(ds.doc_sent_offsets[other]), int(ds.doc_sent_offsets[other + 1])
        start = int(rng.integers(first, end))
        # whole sentences from start until target_b tokens are reached (or the document ends)
        cum = np.asarray(ds.sent_offsets[start:end + 1], dtype=np.int64) - int(ds.sent_offsets[start])
        stop = min(start + int(np.searchsorted(cum, target_b, side="left")), end)
        return self._run(start, max(stop, start + 1))

    def pair(self, chunk: int, rng: np.random.Generator) -> tuple[list[int], list[int], int]:
        """(A, B, label) truncated to fit ``seq_len``."""
        a, b, label = self.segments(chunk, rng)
        a, b = truncate_pair(a, b, self.max_num_tokens, rng)
        return a, b, label

    def example(self, index: int, *, seed: int, epoch: int) -> Example:
        copy, chunk = divmod(index, len(self.chunks))
        stream = self.objective.masking.stream(epoch, copy)
        a, b, label = self.pair(chunk, example_rng(seed, stream, chunk, _SALT_PAIR))
        cls_id, sep_id = self.objective.cls_token_id, self.objective.sep_token_id
        ids = np.asarray([cls_id, *a, sep_id, *b, sep_id], dtype=np.int64)
        types = np.zeros(len(ids), dtype=np.int64)
        types[len(a) + 2:] = 1
        input_ids, labels = self.objective.masker(ids, example_rng(seed, stream, chunk, _SALT_MASK))
        return {"input_ids": input_ids, "labels": labels, "token_type_ids": types, "next_sentence_label": label}


class MaskedLMNextSentence(MaskedObjectiveBase):
    """BERT pre-training: MLM + next-sentence prediction, the "pretraining" head.

    Static masking with ``dupe_factor=10`` by default, as BERT: masks and pairs are fixed per copy.
    """

    name = "mlm+nsp"
    head = "pretraining"
    pair_name = "nsp"
    default_masking = MaskingConfig(mode="static", dupe_factor=10)

    def __init__(self, *, tokenizer: Any, seq_len: int, masking: MaskingConfig | None = None,
                 short_seq_prob: float = 0.1, layout_seed: int = 12345) -> None:
        if seq_len < 8:
            raise ConfigError(f"seq_len must be at least 8 for {self.name} ([CLS] A [SEP] B [SEP]), got {seq_len}")
        super().__init__(tokenizer=tokenizer, seq_len=seq_len, masking=masking or self.default_masking)
        if not 0.0 <= short_seq_prob <= 1.0:
            raise ConfigError(f"short_seq_prob must be in [0, 1], got {short_seq_prob}")
        self.short_seq_prob, self.layout_seed = short_seq_prob, layout_seed

    def examples(self, dataset: Any) -> _PairExamples:
        return _PairExamples(dataset, self)
