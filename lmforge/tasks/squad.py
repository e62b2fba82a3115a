"""Extractive question answering: SQuAD v1.1 and v2.0 (official JSON layout).

Featurize: the question (cut to ``max_query_length`` tokens) is paired with the context, and a long
context is split into overlapping windows (``doc_stride`` = tokens shared by consecutive windows, as
HF ``run_qa``); each window keeps its token -> character offsets. The answer's character span is
mapped to start / end token labels through the offsets; a window that does not hold the whole answer,
and an unanswerable question, point at [CLS] (index 0).

Postprocess: over every window of a question, the ``n_best`` best starts and ends give candidate spans
(in the context, end >= start, at most ``max_answer_length`` tokens); the best-scoring span's text is
cut from the context through the offsets. v2: the null score is [CLS]'s start + end logit (smallest
over the windows); ``null_odds = null score - best span score``, and a question is answered "" when
``null_odds > null_threshold``. Evaluation also sweeps the threshold like the official script
(``best_f1_thresh``); fine-tuning stores it for ``lmforge predict``.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.errors import DataError, InputError
import lmforge.tasks.metrics as metrics
from lmforge.tasks.base import DecoderTokens, Example, Feature, collate_flat, find_split_file, require_examples


@dataclasses.dataclass
class SquadTask:
    name: str = "squad"
    version_2: bool = False
    doc_stride: int = 128
    max_query_length: int = 64
    n_best: int = 20
    max_answer_length: int = 30
    null_threshold: float = 0.0  # v2: answer "" when null_odds exceeds this (tuned on dev by finetune)
    kind: str = "span"
    labels: list[str] | None = None
    eval_splits: tuple[str, ...] = ("dev",)
    messages: list[str] = dataclasses.field(default_factory=list)  # reader notes (skipped answers)

    @property
    def main_metric(self) -> str:
        return "f1"

    # ------------------------------------------------------------ reading
    def read(self, path: str | Path, split: str) -> list[Example]:
        file = find_split_file(path, split, (".json",))
        try:
            with open(file, encoding="utf-8") as f:
                data = json.load(f)["data"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{file}: not a SQuAD JSON file ({err}); expected {{\"data\": [articles]}}") from None
        examples: list[Example] = []
        mismatched: list[str] = []
        for article in data:
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    answers = qa.get("answers", [])
                    impossible = bool(qa.get("is_impossible", False)) or not answers
                    if impossible and not self.version_2:
                        raise DataError(f"{file}: question {qa['id']} has no answer; use --task squad-v2 "
                                        "for data with unanswerable questions")
                    # the span label needs an answer whose text really is at answer_start
                    span = None
                    for a in answers:
                        start = int(a["answer_start"])
                        if context[start:start + len(a["text"])] == a["text"]:
                            span = (start, start + len(a["text"]))
                            break
                    if answers and span is None:
                        mismatched.append(qa["id"])
                    examples.append({
                        "id": qa["id"], "source": f"{file}#{qa['id']}", "question": qa["question"],
                        "context": context, "answers": [a["text"] for a in answers], "span": span,
                        "impossible": impossible, "label": None if impossible else span,
                    })
        self.messages = []
        if mismatched:
            self.messages.append(
                f"warning: {file}: {len(mismatched)} question(s) whose answer text is not in the context at "
                f"answer_start were skipped for training (first: {', '.join(mismatched[:5])}); they are "
                "still scored against their answer texts")
        return require_examples(examples, file, split)

    # ------------------------------------------------------------ model side
    def head(self, config: Any) -> dict[str, Any]:
        if getattr(config, "causal", False):
            raise InputError("span QA needs a bidirectional encoder; this model is a causal decoder")
        return {"head": "qa", "num_labels": 2}

    def _limits(self, max_length: int) -> tuple[int, int]:
        """(question token limit, stride): the stride must be smaller than the room left for the context."""
        q_limit = min(self.max_query_length, max_length // 2)
        room = max_length - q_limit - 4  # [CLS] q [SEP] c [SEP] (+1 spare for other templates)
        if room < 8:
            raise InputError(f"--max-length {max_length} leaves no room for the context; raise it")
        return q_limit, min(self.doc_stride, room // 2)

    def featurize(self, example: Example, tokenizer: Any, *, max_length: int,
                  decoder: DecoderTokens | None = None, training: bool = False) -> list[Feature]:
        """One feature per window. ``training`` drops questions whose answer could not be located."""
        if decoder is not None:
            raise InputError("span QA needs a bidirectional encoder; this model is a causal decoder")
        if training and not example["impossible"] and example["span"] is None:
            return []
        question = example["question"].lstrip()  # leading spaces make windows needlessly short
        q_limit, stride = self._limits(max_length)
        q = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
        cut = len(q["input_ids"]) > q_limit
        if cut:
            question = question[: q["offset_mapping"][q_limit - 1][1]]
        enc = tokenizer(question, example["context"], truncation="only_second", max_length=max_length,
                        stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                        return_token_type_ids=True)
        features = []
        for w in range(len(enc["input_ids"])):  # one row per window of the context
            seq = enc.sequence_ids(w)
            window_offsets = enc["offset_mapping"][w]
            ctx = [i for i, s in enumerate(seq) if s == 1]
            offsets = [tuple(o) if s == 1 else None for o, s in zip(window_offsets, seq)]
            start_pos = end_pos = 0  # [CLS]: no answer in this window
            span = example["span"]
            if span is not None and ctx:
                first, last = ctx[0], ctx[-1]
                if window_offsets[first][0] <= span[0] and window_offsets[last][1] >= span[1]:
                    start_pos = first
                    while start_pos <= last and window_offsets[start_pos][0] <= span[0]:
                        start_pos += 1
                    start_pos -= 1
                    end_pos = last
                    while end_pos >= first and window_offsets[end_pos][1] >= span[1]:
                        end_pos -= 1
                    end_pos += 1
            features.append({
                "input_ids": list(enc["input_ids"][w]), "attention_mask": list(enc["attention_mask"][w]),
                "token_type_ids": list(enc["token_type_ids"][w]), "start_positions": start_pos,
                "end_positions": end_pos, "offsets": offsets, "truncated": cut,
            })
        return features

    def collate(self, features: Sequence[Feature], *, pad_id: int) -> dict[str, torch.Tensor]:
        return collate_flat(features, pad_id=pad_id)

    def split_outputs(self, out: Any, batch: dict[str, torch.Tensor]) -> list[Any]:
        """Per feature: (start_logits, end_logits) numpy arrays of its unpadded length."""
        lengths = batch["attention_mask"].sum(-1).tolist()
        start, end = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
        return [(start[i, :n], end[i, :n]) for i, n in enumerate(lengths)]

    # ------------------------------------------------------------ decoding and scoring
    def postprocess(self, logits: Sequence[tuple[np.ndarray, np.ndarray]], features: Sequence[Feature],
                    examples: Sequence[Example]) -> list[dict[str, Any]]:
        """Per example {"text": best span, "null_odds": null score - best span score}."""
        by_example: dict[int, list[int]] = {}
        for i, f in enumerate(features):
            by_example.setdefault(f["example_index"], []).append(i)
        out = []
        for e, example in enumerate(examples):
            best_score, best_span = -np.inf, None
            null_score = np.inf
            for i in by_example.get(e, []):
                start, end = logits[i]
                offsets = features[i]["offsets"]
                null_score = min(null_score, float(start[0] + end[0]))
                starts = np.argsort(start)[::-1][: self.n_best]
                ends = np.argsort(end)[::-1][: self.n_best]
                for s in starts:
                    if s >= len(offsets) or offsets[s] is None:
                        continue
                    for t in ends:
                        if t >= len(offsets) or offsets[t] is None or t < s or t - s + 1 > self.max_answer_length:
                            continue
                        score = float(start[s] + end[t])
                        if score > best_score:
                            best_score, best_span = score, (offsets[s][0], offsets[t][1])
            # byte-level BPE offsets (GPT-2 style, no trim_offsets) start at the space before a word
            text = "" if best_span is None else example["context"][best_span[0]:best_span[1]].strip()
            out.append({"text": text, "null_odds": null_score - best_score})
        return out

    def answer(self, prediction: dict[str, Any]) -> str:
        """The text predictions.json holds: v2 says "" when the null answer wins."""
        if self.version_2 and prediction["null_odds"] > self.null_threshold:
            return ""
        return prediction["text"]

    def prediction_text(self, prediction: dict[str, Any]) -> str:
        return self.answer(prediction)

    def tuned_threshold(self, scores: dict[str, float], predictions: Sequence[dict[str, Any]]) -> float:
        """The null threshold to predict with: the official sweep's ``best_f1_thresh``, except when the
        best is to answer nothing. The official script then reports 0.0 (its scores are probabilities,
        >= 0); null_odds can be negative, so the threshold goes below every null_odds instead."""
        start = 100.0 * scores.get("NoAns_total", 0) / scores["total"]
        if scores["best_f1"] <= start + 1e-9:
            return float(min(p["null_odds"] for p in predictions)) - 1.0
        return float(scores["best_f1_thresh"])

    def metric(self, predictions: Sequence[dict[str, Any]], references: Sequence[Example]) -> dict[str, float]:
        refs = {ex["id"]: ex["answers"] for ex in references}
        preds = {ex["id"]: p["text"] for ex, p in zip(references, predictions)}
        if not self.version_2:
            out = metrics.squad_evaluate(preds, refs)
            return {"exact": out["exact"], "f1": out["f1"], "total": out["total"]}
        na = {ex["id"]: float(p["null_odds"]) for ex, p in zip(references, predictions)}
        return metrics.squad_evaluate(preds, refs, na_probs=na, na_prob_thresh=self.null_threshold)


SQUAD_TASKS: dict[str, SquadTask] = {
    "squad": SquadTask("squad"),
    "squad-v2": SquadTask("squad-v2", version_2=True),
}
