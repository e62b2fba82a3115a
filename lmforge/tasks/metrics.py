"""Evaluation metrics for the fine-tuning tasks, written to the references' exact definitions.

- ``accuracy``, ``f1`` (binary / macro), ``mcc``: scikit-learn's ``accuracy_score``, ``f1_score``
  and ``matthews_corrcoef`` (zero division gives 0, as sklearn's default does after its warning).
- ``pearson``, ``spearman``: scipy's ``pearsonr`` / ``spearmanr``; Spearman ranks ties by their
  average rank (``scipy.stats.rankdata(method="average")``).
- SQuAD: the official evaluator's rules (v1.1 and v2.0 ``evaluate-v2.0.py``): answers are
  normalised (lower case, punctuation removed, articles a/an/the removed, whitespace collapsed), EM
  and token F1 take the max over the gold answers, an unanswerable question's only gold answer is
  the empty string, v2 reports ``HasAns_*`` / ``NoAns_*`` splits and, given no-answer scores, the
  best threshold (``best_exact``, ``best_f1`` and their ``*_thresh``).
- ``entity_scores``: seqeval's default (conlleval) chunking for IOB1 / IOB2 tags and micro P/R/F1
  over exact (type, start, end) entities.

Plain numpy/python: no torch, so metrics can be used on saved predictions anywhere.
"""
from __future__ import annotations

import collections
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np

from lmforge.errors import InputError

ArrayLike = Sequence[float] | Sequence[int] | np.ndarray


def _pair(predictions: ArrayLike, references: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p, r = np.asarray(predictions), np.asarray(references)
    if p.shape != r.shape or p.ndim != 1:
        raise InputError(f"predictions {p.shape} and references {r.shape} must be 1-D and the same length")
    if p.size == 0:
        raise InputError("no predictions to score: the evaluated split is empty")
    return p, r


def accuracy(predictions: ArrayLike, references: ArrayLike) -> float:
    """Fraction of exact matches (sklearn ``accuracy_score``)."""
    p, r = _pair(predictions, references)
    return float(np.mean(p == r))


def _prf(tp: float, n_pred: float, n_true: float) -> tuple[float, float, float]:
    """Precision, recall, F1 from counts; 0 where a denominator is 0 (sklearn's zero_division)."""
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    denom = n_pred + n_true
    f1 = 2.0 * tp / denom if denom else 0.0
    return precision, recall, f1


def f1(predictions: ArrayLike, references: ArrayLike, *, average: str = "binary", pos_label: int = 1) -> float:
    """F1 as sklearn ``f1_score``: ``average="binary"`` scores ``pos_label``; ``"macro"`` averages
    the per-class F1 over every label seen in either predictions or references."""
    p, r = _pair(predictions, references)
    if average == "binary":
        tp = float(np.sum((p == pos_label) & (r == pos_label)))
        return _prf(tp, float(np.sum(p == pos_label)), float(np.sum(r == pos_label)))[2]
    if average == "macro":
        labels = np.union1d(p, r)
        scores = [_prf(float(np.sum((p == c) & (r == c))), float(np.sum(p == c)), float(np.sum(r == c)))[2]
                  for c in labels]
        return float(np.mean(scores))
    raise InputError(f"unknown F1 average {average!r}; use 'binary' or 'macro'")


def mcc(predictions: ArrayLike, references: ArrayLike) -> float:
    """Matthews correlation coefficient, multi-class form (Gorodkin 2004), as sklearn computes it."""
    p, r = _pair(predictions, references)
    labels, inverse = np.unique(np.concatenate([r, p]), return_inverse=True)
    k = len(labels)
    ri, pi = inverse[: len(r)], inverse[len(r):]
    cm = np.zeros((k, k), dtype=np.float64)
    np.add.at(cm, (ri, pi), 1.0)
    t_sum, p_sum = cm.sum(axis=1), cm.sum(axis=0)
    correct, n = np.trace(cm), cm.sum()
    cov_ytyp = correct * n - np.dot(t_sum, p_sum)
    cov_ypyp = n * n - np.dot(p_sum, p_sum)
    cov_ytyt = n * n - np.dot(t_sum, t_sum)
    if cov_ypyp * cov_ytyt == 0:
        return 0.0  # one side is constant: sklearn returns 0
    return float(cov_ytyp / np.sqrt(cov_ytyt * cov_ypyp))


def confusion_matrix(predictions: ArrayLike, references: ArrayLike, num_labels: int) -> np.ndarray:
    """(num_labels, num_labels) counts, rows = reference, columns = prediction (sklearn's layout)."""
    p, r = _pair(predictions, references)
    cm = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(cm, (r.astype(np.int64), p.astype(np.int64)), 1)
    return cm


def pearson(predictions: ArrayLike, references: ArrayLike) -> float:
    """Pearson's r (scipy ``pearsonr``); nan when either side is constant, as scipy."""
    p, r = _pair(predictions, references)
    x, y = p.astype(np.float64), r.astype(np.float64)
    xm, ym = x - x.mean(), y - y.mean()
    nx, ny = np.linalg.norm(xm), np.linalg.norm(ym)
    if nx == 0 or ny == 0:
        return float("nan")
    # normalise before the dot product, as scipy does, to stay accurate for large values
    return float(np.clip(np.dot(xm / nx, ym / ny), -1.0, 1.0))


def rankdata(values: ArrayLike) -> np.ndarray:
    """1-based ranks; tied values share the average of the ranks they span (scipy ``method="average"``)."""
    a = np.asarray(values, dtype=np.float64)
    order = np.argsort(a, kind="mergesort")
    sorted_a = a[order]
    # a new group starts wherever the sorted value changes
    starts = np.r_[True, sorted_a[1:] != sorted_a[:-1]]
    group = np.cumsum(starts) - 1  # group id per sorted position
    bounds = np.r_[np.flatnonzero(starts), a.size]  # group g spans sorted positions bounds[g]..bounds[g+1]-1
    avg_rank = (bounds[:-1] + bounds[1:] + 1) / 2.0  # mean of 1-based ranks bounds[g]+1 .. bounds[g+1]
    ranks = np.empty(a.size, dtype=np.float64)
    ranks[order] = avg_rank[group]
    return ranks


def spearman(predictions: ArrayLike, references: ArrayLike) -> float:
    """Spearman's rho (scipy ``spearmanr``): Pearson's r of the average ranks."""
    p, r = _pair(predictions, references)
    return pearson(rankdata(p), rankdata(r))


# ---------------------------------------------------------------- SQuAD (official evaluator rules)

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official order)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def _exact(gold: str, pred: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(pred))


def _f1(gold: str, pred: str) -> float:
    gold_toks, pred_toks = _tokens(gold), _tokens(pred)
    if not gold_toks or not pred_toks:
        # no-answer on either side: F1 is 1 when both are empty, else 0
        return float(gold_toks == pred_toks)
    same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_toks), same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def _golds(answers: Sequence[str]) -> list[str]:
    """Gold answers that survive normalisation; an unanswerable question's only gold is ''."""
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def squad_exact(prediction: str, answers: Sequence[str]) -> int:
    """1 when the normalised prediction equals any normalised gold answer (max over golds)."""
    return max(_exact(a, prediction) for a in _golds(answers))


def squad_f1(prediction: str, answers: Sequence[str]) -> float:
    """Bag-of-tokens F1 against the best-matching gold answer."""
    return max(_f1(a, prediction) for a in _golds(answers))


def _find_best_thresh(preds: Mapping[str, str], scores: Mapping[str, float], na_probs: Mapping[str, float],
                      has_ans: Mapping[str, bool]) -> tuple[float, float]:
    """The official sweep: start by answering nothing, then answer questions in increasing no-answer
    score order, keeping the threshold (a no-answer score) that maximises the total."""
    cur = best = float(sum(1 for q in has_ans if not has_ans[q]))
    best_thresh = 0.0
    for qid in sorted(na_probs, key=lambda q: na_probs[q]):
        if qid not in scores:
            continue
        if has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1.0 if preds[qid] else 0.0
        cur += diff
        if cur > best:
            best, best_thresh = cur, na_probs[qid]
    return 100.0 * best / len(scores), best_thresh


def squad_evaluate(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]], *,
                   na_probs: Mapping[str, float] | None = None, na_prob_thresh: float = 1.0) -> dict[str, float]:
    """The official SQuAD v2.0 evaluator on in-memory data (on v1.1 data its exact/f1 equal v1.1's).

    ``references``: question id -> gold answer texts (empty for an unanswerable question).
    ``predictions``: question id -> answer text ('' = no answer). A missing prediction counts as ''.
    ``na_probs``: question id -> no-answer score; a question whose score exceeds ``na_prob_thresh``
    is predicted unanswerable, and the best-threshold sweep is added (``best_exact``, ``best_f1``,
    ``best_exact_thresh``, ``best_f1_thresh``). Scores are percentages, as the official script.
    """
    if not references:
        raise InputError("no SQuAD questions to score: the evaluated split is empty")
    preds = {qid: predictions.get(qid, "") for qid in references}
    # as the official script: a question "has an answer" when its answer list is non-empty (even if
    # every answer normalises to nothing)
    has_ans = {qid: bool(ans) for qid, ans in references.items()}
    exact_raw = {qid: float(squad_exact(preds[qid], references[qid])) for qid in references}
    f1_raw = {qid: squad_f1(preds[qid], references[qid]) for qid in references}
    probs = {qid: 0.0 for qid in references} if na_probs is None else {qid: float(na_probs[qid]) for qid in references}

    def thresholded(scores: dict[str, float]) -> dict[str, float]:
        return {qid: float(not has_ans[qid]) if probs[qid] > na_prob_thresh else s for qid, s in scores.items()}

    exact, f1_ = thresholded(exact_raw), thresholded(f1_raw)
    out: dict[str, float] = {}

    def add(prefix: str, qids: list[str]) -> None:
        if not qids:
            return
        out[f"{prefix}exact"] = 100.0 * sum(exact[q] for q in qids) / len(qids)
        out[f"{prefix}f1"] = 100.0 * sum(f1_[q] for q in qids) / len(qids)
        out[f"{prefix}total"] = len(qids)

    add("", list(references))
    add("HasAns_", [q for q in references if has_ans[q]])
    add("NoAns_", [q for q in references if not has_ans[q]])
    if na_probs is not None:
        out["best_exact"], out["best_exact_thresh"] = _find_best_thresh(preds, exact_raw, probs, has_ans)
        out["best_f1"], out["best_f1_thresh"] = _find_best_thresh(preds, f1_raw, probs, has_ans)
    return out


# ---------------------------------------------------------------- entity-level tagging (seqeval)

def _split_tag(tag: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'O' -> ('O', '_'); a bare 'PER' -> ('P', 'ER') as seqeval does."""
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


def _end_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if prev_tag in ("E", "S"):
        return True
    if prev_tag in ("B", "I") and tag in ("B", "S", "O"):
        return True
    return prev_tag not in ("O", ".") and prev_type != type_


def _start_of_chunk(prev_tag: str, tag: str, prev_type: str, type_: str) -> bool:
    if tag in ("B", "S"):
        return True
    if prev_tag in ("E", "S", "O") and tag in ("E", "I"):
        return True  # an I/E after O, or after a finished chunk, opens one (IOB1 style)
    return tag not in ("O", ".") and prev_type != type_


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, last) token spans of one tag sequence, seqeval's default (conlleval) rules.

    The same rules read IOB1 (``B-`` only separates two adjacent same-type entities) and IOB2
    (every entity starts with ``B-``): an ``I-`` after ``O`` or after another type opens an entity.
    """
    chunks: list[tuple[str, int, int]] = []
    prev_tag, prev_type, begin = "O", "", 0
    for i, chunk in enumerate([*tags, "O"]):
        tag, type_ = _split_tag(chunk)
        if _end_of_chunk(prev_tag, tag, prev_type, type_):
            chunks.append((prev_type, begin, i - 1))
        if _start_of_chunk(prev_tag, tag, prev_type, type_):
            begin = i
        prev_tag, prev_type = tag, type_
    return chunks


def entity_scores(predictions: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro precision / recall / F1 over exact entity matches, plus token accuracy (seqeval's
    ``precision_score``, ``recall_score``, ``f1_score``, ``accuracy_score``).

    Sentences are scored independently: an entity never spans two sentences.
    """
    if len(predictions) != len(references):
        raise InputError(f"{len(predictions)} predicted sentences but {len(references)} reference sentences")
    if not references:
        raise InputError("no sentences to score: the evaluated split is empty")
    tp = n_pred = n_true = 0
    correct_tokens = total_tokens = 0
    for k, (pred, ref) in enumerate(zip(predictions, references)):
        if len(pred) != len(ref):
            raise InputError(f"sentence {k}: {len(pred)} predicted tags but {len(ref)} reference tags")
        pred_entities, true_entities = set(get_entities(pred)), set(get_entities(ref))
        tp += len(pred_entities & true_entities)
        n_pred += len(pred_entities)
        n_true += len(true_entities)
        correct_tokens += sum(p == r for p, r in zip(pred, ref))
        total_tokens += len(ref)
    precision, recall, f1_ = _prf(tp, n_pred, n_true)
    return {"precision": precision, "recall": recall, "f1": f1_,
            "accuracy": correct_tokens / total_tokens if total_tokens else 0.0}


# --------------------------------------------------------------------------- ROUGE
def rouge_tokens(text: str) -> list[str]:
    """google-research rouge-score's tokenizer without stemming: lower case, runs of [a-z0-9] are the tokens."""
    return re.findall(r"[a-z0-9]+", text.lower())


def _rouge_prf(overlap: int, n_pred: int, n_ref: int) -> dict[str, float]:
    p, r = overlap / max(n_pred, 1), overlap / max(n_ref, 1)
    return {"precision": p, "recall": r, "fmeasure": 2 * p * r / (p + r) if p + r > 0 else 0.0}


def rouge(reference: str, prediction: str) -> dict[str, dict[str, float]]:
    """ROUGE-1, ROUGE-2 and ROUGE-L (precision / recall / F) as rouge-score's ``RougeScorer(["rouge1", "rouge2",
    "rougeL"], use_stemmer=False).score(reference, prediction)`` computes them (rouge_scorer.py: clipped n-gram
    overlap; L = longest common subsequence over the whole text)."""
    ref, pred = rouge_tokens(reference), rouge_tokens(prediction)
    out = {}
    for n in (1, 2):
        r = collections.Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        p = collections.Counter(tuple(pred[i:i + n]) for i in range(len(pred) - n + 1))
        out[f"rouge{n}"] = _rouge_prf(sum(min(c, p[g]) for g, c in r.items()), sum(p.values()), sum(r.values()))
    if not ref or not pred:
        out["rougeL"] = {"precision": 0.0, "recall": 0.0, "fmeasure": 0.0}
        return out
    prev = [0] * (len(pred) + 1)
    for a in ref:  # LCS length, one row of the table at a time
        row = [0]
        for j, b in enumerate(pred, 1):
            row.append(prev[j - 1] + 1 if a == b else max(prev[j], row[-1]))
        prev = row
    out["rougeL"] = _rouge_prf(prev[-1], len(pred), len(ref))
    return out
