"""Token tagging: UPOS from CoNLL-U (``pos``) and named entities from CoNLL-2003-style columns (``ner``).

Words are encoded pre-split (``is_pretokenized``); each word's FIRST sub-token carries its tag and every
other sub-token (and every special token) gets -100, so the loss and the metric see one tag per word
(as BERT's NER recipe). Words cut off by ``--max-length`` are counted and predicted as "O" / the first tag.

CoNLL-U: comment lines start with '#', multi-word token lines (``1-2``) and empty nodes (``8.1``) are
skipped, UPOS is the 4th column. CoNLL-2003: one ``word ... tag`` line per token (the tag is the last
column), blank lines between sentences, ``-DOCSTART-`` lines ignored; tags in IOB1 or IOB2 (entity
scoring decodes both with conlleval's rules, ``lmforge.tasks.metrics.get_entities``).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.errors import DataError, InputError
import lmforge.tasks.metrics as metrics
from lmforge.tasks.base import (IGNORE_INDEX, DecoderTokens, Example, Feature, collate_flat, find_split_file,
                                label_id, require_examples)

# the 17 Universal POS tags (universaldependencies.org/u/pos/)
UPOS = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
        "PUNCT", "SCONJ", "SYM", "VERB", "X"]


Sentence = tuple[str, list[str], list[tuple[str, str]]]  # (file:line, words, (file:line, tag) per word)


def read_conllu(file: Path) -> list[Sentence]:
    """(file:line of the sentence, words, (file:line, UPOS tag) per word) per sentence."""
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[tuple[str, str]] = []
    start = 1
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                if words:
                    sentences.append((f"{file}:{start}", words, tags))
                words, tags = [], []
                continue
            if line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 10:
                raise DataError(f"{file}:{lineno}: {len(cols)} tab-separated columns; CoNLL-U lines have 10")
            if "-" in cols[0] or "." in cols[0]:
                continue  # multi-word token range / empty node: the words themselves follow
            if not words:
                start = lineno
            words.append(cols[1])
            tags.append((f"{file}:{lineno}", cols[3]))
    if words:
        sentences.append((f"{file}:{start}", words, tags))
    return sentences  # tags still carry their line for the label check


def read_conll(file: Path) -> list[Sentence]:
    """CoNLL-2003 columns: (file:line, words, (file:line, tag) per word) per sentence."""
    sentences: list[Sentence] = []
    words: list[str] = []
    tags: list[tuple[str, str]] = []
    start = 1
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("-DOCSTART-"):
                if words:
                    sentences.append((f"{file}:{start}", words, tags))
                words, tags = [], []
                continue
            cols = line.split()
            if len(cols) < 2:
                raise DataError(f"{file}:{lineno}: expected 'word ... tag' columns, got {line!r}")
            if not words:
                start = lineno
            words.append(cols[0])
            tags.append((f"{file}:{lineno}", cols[-1]))
    if words:
        sentences.append((f"{file}:{start}", words, tags))
    return sentences


@dataclasses.dataclass
class TaggingTask:
    name: str
    conllu: bool  # True: CoNLL-U UPOS; False: CoNLL-2003 columns
    labels: list[str] | None  # None: learned from the first split read (NER tag sets vary)
    kind: str = "tagging"
    eval_splits: tuple[str, ...] = ("dev",)

    @property
    def main_metric(self) -> str:
        return "accuracy" if self.conllu else "f1"

    def read(self, path: str | Path, split: str) -> list[Example]:
        suffixes = (".conllu",) if self.conllu else (".txt", ".conll", ".tsv", ".iob")
        p = Path(path)
        # Universal Dependencies names its files LANG_TREEBANK-ud-SPLIT.conllu (en_ewt-ud-dev.conllu)
        ud = sorted(p.glob(f"*-ud-{split}.conllu")) if self.conllu and p.is_dir() else []
        file = ud[0] if ud else find_split_file(p, split, suffixes)
        sentences = read_conllu(file) if self.conllu else read_conll(file)
        if self.labels is None:
            found = sorted({t for _, _, tags in sentences for _, t in tags})
            self.labels = (["O"] if "O" in found else []) + [t for t in found if t != "O"]
        out = [{"id": str(i), "source": where, "words": words,
                "tags": [label_id(t, self.labels, w) for w, t in tags], "label": None}
               for i, (where, words, tags) in enumerate(sentences)]
        return require_examples(out, file, split)

    def head(self, config: Any) -> dict[str, Any]:
        if getattr(config, "causal", False):
            raise InputError("tagging reads both directions; use an encoder, not a causal decoder")
        assert self.labels is not None, "read a split first: the tag set comes from the data"
        return {"head": "token-cls", "num_labels": len(self.labels)}

    def featurize(self, example: Example, tokenizer: Any, *, max_length: int,
                  decoder: DecoderTokens | None = None, training: bool = False) -> list[Feature]:
        if decoder is not None:
            raise InputError("tagging reads both directions; use an encoder, not a causal decoder")
        words = example["words"]
        if "ByteLevel" in repr(getattr(tokenizer.backend, "pre_tokenizer", None)):
            # byte-level BPE (GPT-2, RoBERTa) marks a word start with a leading space ("Ġ"); words given
            # one by one would lose it and look like word pieces (HF's add_prefix_space=True)
            words = [" " + w for w in words]
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length,
                        return_token_type_ids=True)
        word_ids = enc.word_ids(0)
        labels, previous = [], None
        for word in word_ids:
            # the first sub-token of a word carries its tag; the rest and the specials are ignored
            labels.append(IGNORE_INDEX if word is None or word == previous else example["tags"][word])
            previous = word
        kept = {w for w in word_ids if w is not None}
        return [{"input_ids": list(enc["input_ids"]), "attention_mask": list(enc["attention_mask"]),
                 "token_type_ids": list(enc["token_type_ids"]), "labels": labels, "word_ids": list(word_ids),
                 "truncated": len(kept) < len(example["words"])}]

    def collate(self, features: Sequence[Feature], *, pad_id: int) -> dict[str, torch.Tensor]:
        return collate_flat(features, pad_id=pad_id)

    def split_outputs(self, out: Any, batch: dict[str, torch.Tensor]) -> list[np.ndarray]:
        lengths = batch["attention_mask"].sum(-1).tolist()
        logits = out.logits.float().cpu().numpy()  # (B, L, C)
        return [logits[i, :n] for i, n in enumerate(lengths)]

    def postprocess(self, logits: Sequence[np.ndarray], features: Sequence[Feature],
                    examples: Sequence[Example]) -> list[list[int]]:
        """Tag ids per word, read at each word's first sub-token."""
        assert self.labels is not None
        fallback = self.labels.index("O") if "O" in self.labels else 0
        out = []
        for f, ex, lg in zip(features, examples, logits):
            tags = [fallback] * len(ex["words"])
            seen = set()
            for pos, word in enumerate(f["word_ids"]):
                if word is not None and word not in seen:
                    seen.add(word)
                    tags[word] = int(lg[pos].argmax())
            out.append(tags)
        return out

    def metric(self, predictions: Sequence[list[int]], references: Sequence[Example]) -> dict[str, float]:
        assert self.labels is not None
        if self.conllu:
            p = np.concatenate([np.asarray(x) for x in predictions])
            y = np.concatenate([np.asarray(ex["tags"]) for ex in references])
            return {"accuracy": metrics.accuracy(p, y)}
        names = self.labels
        return metrics.entity_scores([[names[i] for i in p] for p in predictions],
                                     [[names[i] for i in ex["tags"]] for ex in references])

    def prediction_text(self, prediction: list[int]) -> str:
        assert self.labels is not None
        return " ".join(self.labels[i] for i in prediction)


TAGGING_TASKS: dict[str, TaggingTask] = {
    "pos": TaggingTask("pos", conllu=True, labels=list(UPOS)),
    "ner": TaggingTask("ner", conllu=False, labels=None),
}
