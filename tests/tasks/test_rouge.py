"""ROUGE-1 / 2 / L against google-research's rouge-score (the package the summarisation papers report with)."""
from __future__ import annotations

import random

import pytest

from lmforge.tasks.metrics import rouge

rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")

WORDS = "the a fox owl eats runs Ada 's cake cake. , TL;DR: 42 Über day-long x".split()


def _pairs():
    rng = random.Random(0)
    yield "The fox eats the cake.", "the fox eats a cake"
    yield "", "anything"
    yield "Ada's cake!", ""
    yield "a a a b", "a b a b a"
    for _ in range(200):
        yield (" ".join(rng.choices(WORDS, k=rng.randint(0, 12))), " ".join(rng.choices(WORDS, k=rng.randint(0, 12))))


def test_rouge_matches_rouge_score():
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    for reference, prediction in _pairs():
        ours, theirs = rouge(reference, prediction), scorer.score(reference, prediction)
        for key in ("rouge1", "rouge2", "rougeL"):
            t = theirs[key]
            assert ours[key] == pytest.approx({"precision": t.precision, "recall": t.recall,
                                               "fmeasure": t.fmeasure}, abs=1e-12), (reference, prediction, key)
