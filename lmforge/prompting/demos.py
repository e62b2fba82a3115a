"""k-shot choice prompts in the formats of the toy corpus's natural demonstrations (data/toyland/demos.py), scored
by log-likelihood: what `lmforge lab fewshot` / `translation` and the quickstart's few-shot stage measure.

  named_accuracy    "Review: <sentence> Sentiment:"; the higher of the two verdicts (the prompt names the task)
  neutral_accuracy  "Input: <sentence> Output:"; the right verdict must beat all six answer words of the io tasks,
                    so the model must also tell from the shots which task is asked (GPT-3 figure 1.2's prompt-less
                    curves)

Shots are one line each, joined by spaces, as in the corpus; a prompt longer than the context loses its oldest shots.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Example = dict[str, Any]


def encode(tok: Any, text: str) -> list[int]:
    return list(tok(text, add_special_tokens=False)["input_ids"])


def fit_shots(tok: Any, shots: list[str], query: str, *, limit: int, longest: int) -> tuple[list[int], int]:
    """The ids of ``shots`` (rendered demonstrations, oldest first) and ``query`` joined by spaces, dropping shots from
    the front until the prompt plus the longest candidate (``longest`` tokens) fits ``limit`` positions; returns
    (ids, shots dropped) so that a result can say how many it lost."""
    dropped = 0
    while True:
        ids = encode(tok, " ".join([*shots[dropped:], query]))
        if len(ids) + longest <= limit or dropped == len(shots):
            return ids, dropped
        dropped += 1


def choice_accuracy(model: Any, tok: Any, examples: Sequence[Example], pool: Sequence[Example], k: int, seed: int, *,
                    words: Sequence[str], shot: Callable[[str, int], str], query: str) -> tuple[float, float, int]:
    """(accuracy, share of answers among the first two words, shots dropped): the highest sum of log p among
    ``words`` (label i is word i) after k shots (``shot(text, label)``, drawn from ``pool`` per example and seed)
    and ``query`` with the sentence in place of ``{}``."""
    from lmforge.prompting.fewshot import score_continuations

    candidates = [encode(tok, f" {w}") for w in words]
    limit = int(model.config.max_positions)
    right = on_task = dropped = 0
    for i, ex in enumerate(examples):
        demos = random.Random(f"{seed}:{i}").sample(list(pool), k)
        prompt, lost = fit_shots(tok, [shot(d["text"], int(d["label"])) for d in demos], query.format(ex["text"]),
                                 limit=limit, longest=max(map(len, candidates)))
        dropped += lost
        best = int(np.argmax([s for s, _ in score_continuations(model, prompt, candidates)]))
        right += int(best == int(ex["label"]))
        on_task += int(best < 2)
    return right / len(examples), on_task / len(examples), dropped


def named_accuracy(model: Any, tok: Any, examples: Sequence[Example], pool: Sequence[Example], k: int,
                   seed: int) -> tuple[float, int]:
    """k-shot sentiment accuracy, task named: (accuracy, shots dropped)."""
    from lmforge.data.toyland.demos import VERDICTS, review_line

    acc, _, dropped = choice_accuracy(model, tok, examples, pool, k, seed, words=VERDICTS, shot=review_line,
                                      query="Review: {} Sentiment:")
    return acc, dropped


def neutral_accuracy(model: Any, tok: Any, examples: Sequence[Example], pool: Sequence[Example], k: int,
                     seed: int) -> tuple[float, float, int]:
    """k-shot sentiment accuracy in the task-neutral format: (right verdict above all six io answer words, share of
    answers that are a verdict word at all, i.e. how often the model took the shots' task to be sentiment, shots
    dropped)."""
    from lmforge.data.toyland.demos import IO_TASKS, io_line

    words = [w for pair in IO_TASKS.values() for w in pair]  # sentiment's two first: label i is word i
    return choice_accuracy(model, tok, examples, pool, k, seed, words=words, query="Input: {} Output:",
                           shot=lambda text, label: io_line("sentiment", text, label))


__all__ = ["choice_accuracy", "encode", "fit_shots", "named_accuracy", "neutral_accuracy"]
