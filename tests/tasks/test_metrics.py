"""lmforge.tasks.metrics against scikit-learn / scipy (to 1e-9) and the official SQuAD / conlleval rules."""
from __future__ import annotations

import numpy as np
import pytest

from lmforge.tasks import metrics
from lmforge.errors import InputError

sklearn_metrics = pytest.importorskip("sklearn.metrics")
scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("seed", range(8))
def test_classification_metrics_equal_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y = rng.integers(0, 2, n)
    # mostly-right predictions on odd seeds, coin flips on even ones
    p = np.where(rng.random(n) < (0.8 if seed % 2 else 0.5), y, 1 - y)
    assert metrics.mcc(p, y) == pytest.approx(sklearn_metrics.matthews_corrcoef(y, p), abs=1e-9)
    assert metrics.accuracy(p, y) == pytest.approx(sklearn_metrics.accuracy_score(y, p), abs=1e-9)
    assert metrics.f1(p, y) == pytest.approx(sklearn_metrics.f1_score(y, p), abs=1e-9)
    k = 3 + seed % 3
    y3, p3 = rng.integers(0, k, n), rng.integers(0, k, n)
    assert metrics.mcc(p3, y3) == pytest.approx(sklearn_metrics.matthews_corrcoef(y3, p3), abs=1e-9)
    assert metrics.f1(p3, y3, average="macro") == pytest.approx(
        sklearn_metrics.f1_score(y3, p3, average="macro"), abs=1e-9)
    cm = sklearn_metrics.confusion_matrix(y3, p3, labels=list(range(k)))
    assert (metrics.confusion_matrix(p3, y3, k) == cm).all()


def test_degenerate_classification_cases_equal_sklearn():
    y = np.array([0, 1, 1, 0, 1])
    constant = np.ones_like(y)
    assert metrics.mcc(constant, y) == 0.0 == sklearn_metrics.matthews_corrcoef(y, constant)
    zeros = np.zeros_like(y)
    assert metrics.f1(zeros, y) == sklearn_metrics.f1_score(y, zeros) == 0.0
    assert metrics.f1(zeros, zeros) == sklearn_metrics.f1_score(zeros, zeros, zero_division=0) == 0.0
    # macro over labels seen only in the predictions counts them too
    assert metrics.f1(np.array([0, 2, 1]), np.array([0, 1, 1]), average="macro") == pytest.approx(
        sklearn_metrics.f1_score([0, 1, 1], [0, 2, 1], average="macro"), abs=1e-12)
    with pytest.raises(InputError):
        metrics.accuracy([], [])
    with pytest.raises(InputError):
        metrics.accuracy([1, 2], [1])


@pytest.mark.parametrize("seed", range(6))
def test_correlations_equal_scipy_with_ties(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(3, 400))
    y = rng.random(n) * 5
    p = y + rng.normal(0, 1 + seed, n)
    assert metrics.pearson(p, y) == pytest.approx(scipy_stats.pearsonr(p, y)[0], abs=1e-9)
    assert metrics.spearman(p, y) == pytest.approx(scipy_stats.spearmanr(p, y)[0], abs=1e-9)
    # heavy ties: STS-B style scores rounded to 0.2 steps / small integers
    y_t, p_t = np.round(y * 5) / 5, rng.integers(0, 4, n).astype(float)
    assert metrics.spearman(p_t, y_t) == pytest.approx(scipy_stats.spearmanr(p_t, y_t)[0], abs=1e-9)
    assert np.allclose(metrics.rankdata(p_t), scipy_stats.rankdata(p_t), atol=0)


def test_pearson_of_constant_is_nan_like_scipy():
    assert np.isnan(metrics.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


# ----------------------------------------------------------------------- SQuAD, official rules

def test_normalize_answer_official_rules():
    # lower case, punctuation out, articles a/an/the out (whole words only), whitespace collapsed
    assert metrics.normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert metrics.normalize_answer("An apple, a day") == "apple day"
    assert metrics.normalize_answer("Theory of another") == "theory of another"  # 'the'/'an' inside words stay
    # punctuation is removed before articles, so 'the-end' -> 'theend' (not an article)
    assert metrics.normalize_answer("the-end") == "theend"
    assert metrics.normalize_answer("  A  ") == ""


def test_squad_em_f1_hand_checked():
    golds = ["Saint Bernadette Soubirous", "Bernadette"]
    assert metrics.squad_exact("saint bernadette soubirous.", golds) == 1
    assert metrics.squad_exact("Bernadette Soubirous", golds) == 0
    # F1 vs gold 1: common 2, P = 2/2, R = 2/3 -> 0.8; vs gold 2: P = 1/2, R = 1 -> 2/3; max = 0.8
    assert metrics.squad_f1("Bernadette Soubirous", golds) == pytest.approx(0.8)
    # repeated tokens count with multiplicity (Counter intersection): pred 'a b b', gold 'b b c'
    assert metrics.squad_f1("x y y", ["y y z"]) == pytest.approx(2 / 3)
    assert metrics.squad_f1("nothing alike", golds) == 0.0
    # an answer that normalises to nothing is dropped from the golds; with none left the gold is ''
    assert metrics.squad_exact("", ["the"]) == 1 and metrics.squad_f1("", []) == 1.0
    assert metrics.squad_f1("France", []) == 0.0


def test_squad_evaluate_v2_splits_and_threshold():
    refs = {"a": ["France"], "b": ["10th and 11th centuries"], "c": [], "d": []}
    preds = {"a": "France", "b": "11th centuries", "c": "Rollo", "d": ""}
    out = metrics.squad_evaluate(preds, refs)
    # a: EM 1 F1 1; b: EM 0, F1: common {11th, centuries}=2, P=1, R=2/4 -> 2/3; c: 0 0; d: 1 1
    assert out["exact"] == pytest.approx(100 * 2 / 4)
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0 + 1) / 4)
    assert out["total"] == 4 and out["HasAns_total"] == 2 and out["NoAns_total"] == 2
    assert out["HasAns_exact"] == pytest.approx(50.0) and out["NoAns_exact"] == pytest.approx(50.0)
    assert "best_f1" not in out
    # with no-answer scores: sorted by score a(0.1) b(0.3) c(0.6) d(0.9); start at 2 (both NoAns right)
    # +1 (a) = 3 -> thresh 0.1; +0 (b, EM) = 3; -1 (c answered) = 2; +0 (d empty) -> best_exact 75 @ 0.1
    na = {"a": 0.1, "b": 0.3, "c": 0.6, "d": 0.9}
    out = metrics.squad_evaluate(preds, refs, na_probs=na, na_prob_thresh=0.5)
    assert out["best_exact"] == pytest.approx(75.0) and out["best_exact_thresh"] == pytest.approx(0.1)
    # F1: 2 + 1 (a) = 3 @0.1; + 2/3 (b) = 3.667 @0.3; -1 (c) ...; best 91.67 @ 0.3
    assert out["best_f1"] == pytest.approx(100 * (3 + 2 / 3) / 4) and out["best_f1_thresh"] == pytest.approx(0.3)
    # thresholding at 0.5: c and d are predicted unanswerable -> both right; a, b keep their scores
    assert out["exact"] == pytest.approx(100 * 3 / 4)
    assert out["NoAns_exact"] == pytest.approx(100.0)


# ----------------------------------------------------------------------- entity-level (seqeval)

def test_get_entities_iob2_and_iob1():
    # IOB2 (seqeval README example)
    assert metrics.get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    # IOB1: entities start with I-; B- only splits two adjacent entities of the same type
    assert metrics.get_entities(["I-PER", "I-PER", "B-PER", "O", "I-LOC", "I-ORG"]) == [
        ("PER", 0, 1), ("PER", 2, 2), ("LOC", 4, 4), ("ORG", 5, 5)]


def test_entity_scores_hand_checked_and_seqeval_example():
    # seqeval README: y_true has 3 entities (MISC, PER, PER... ), y_pred finds 2 correct of 3 predicted
    y_true = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    y_pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    out = metrics.entity_scores(y_pred, y_true)
    assert out["precision"] == 0.5 and out["recall"] == 0.5 and out["f1"] == 0.5  # seqeval: 0.50
    assert out["accuracy"] == pytest.approx(0.8)  # seqeval accuracy_score: 8 / 10
    with pytest.raises(InputError):
        metrics.entity_scores([["O"]], [["O", "O"]])


@pytest.mark.parametrize("seed", range(4))
def test_entity_scores_equal_seqeval_when_installed(seed):
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = np.random.default_rng(seed)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG"]
    refs = [[tags[i] for i in rng.integers(0, len(tags), rng.integers(1, 12))] for _ in range(40)]
    preds = [[t if rng.random() < 0.7 else tags[rng.integers(0, len(tags))] for t in s] for s in refs]
    out = metrics.entity_scores(preds, refs)
    assert out["f1"] == pytest.approx(seqeval.f1_score(refs, preds), abs=1e-9)
    assert out["precision"] == pytest.approx(seqeval.precision_score(refs, preds), abs=1e-9)
    assert out["recall"] == pytest.approx(seqeval.recall_score(refs, preds), abs=1e-9)


def test_squad_has_answer_follows_the_answer_list_like_the_official_script():
    # the gold '.' normalises to '' (so an empty prediction matches it), but the question still counts
    # as answerable: thresholded to "no answer" it scores 0, as in evaluate-v2.0.py
    refs, preds = {"a": ["."], "b": []}, {"a": "", "b": ""}
    out = metrics.squad_evaluate(preds, refs, na_probs={"a": 0.9, "b": 0.9}, na_prob_thresh=0.5)
    assert out["HasAns_total"] == 1 and out["NoAns_total"] == 1
    assert out["HasAns_exact"] == 0.0 and out["NoAns_exact"] == 100.0
    assert metrics.squad_evaluate(preds, refs)["exact"] == 100.0  # unthresholded, '' matches the '' gold
