"""Logits processors against hand-computed cases (standard definitions), and argument checks."""
from __future__ import annotations

import math

import pytest
import torch

from lmforge.errors import InputError
from lmforge.generation import (apply_repetition_penalty, check_sampling_args, process_logits, top_k_filter,
                                top_p_filter)

PROBS = [0.5, 0.2, 0.15, 0.1, 0.05]


def kept(scores: torch.Tensor) -> list[int]:
    return torch.nonzero(torch.isfinite(scores[0])).flatten().tolist()


def test_top_k_keeps_the_k_largest() -> None:
    scores = torch.tensor([[1.0, 3.0, 2.0, 5.0, 4.0]])
    assert kept(top_k_filter(scores, 2)) == [3, 4]
    assert kept(top_k_filter(scores, 1)) == [3]
    assert kept(top_k_filter(scores, 0)) == [0, 1, 2, 3, 4]  # 0 = off
    assert kept(top_k_filter(scores, 9)) == [0, 1, 2, 3, 4]  # k >= V keeps everything
    # ties at the k-th value are all kept (a logit is removed only when strictly smaller)
    assert kept(top_k_filter(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), 2)) == [1, 2]
    # kept logits are unchanged
    assert top_k_filter(scores, 2)[0, 3].item() == 5.0


@pytest.mark.parametrize(("p", "expected"), [
    (0.45, [0]),           # 0.5 alone reaches 0.45
    (0.6, [0, 1]),         # 0.5 < 0.6 <= 0.5 + 0.2
    (0.75, [0, 1, 2]),     # 0.7 < 0.75 <= 0.85
    (0.97, [0, 1, 2, 3, 4]),  # needs every token (0.95 < 0.97)
    (1.0, [0, 1, 2, 3, 4]),
])
def test_top_p_keeps_the_smallest_set_reaching_p(p: float, expected: list[int]) -> None:
    # shuffled order, so the filter must sort
    order = [3, 0, 4, 2, 1]
    scores = torch.tensor([[math.log(PROBS[i]) for i in order]])
    got = sorted(order[j] for j in kept(top_p_filter(scores, p)))
    assert got == expected


def test_top_p_always_keeps_the_most_likely_token() -> None:
    scores = torch.tensor([[10.0, 0.0, 0.0]])
    assert kept(top_p_filter(scores, 1e-6)) == [0]


def test_repetition_penalty_ctrl_rule() -> None:
    scores = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    seen = torch.tensor([[0, 1, 1]])  # repeated ids are penalised once
    out = apply_repetition_penalty(scores, seen, 2.0)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    assert apply_repetition_penalty(scores, seen, 1.0) is scores


def test_process_order_temperature_before_filters() -> None:
    scores = torch.log(torch.tensor([PROBS]))
    # temperature 0.5 sharpens: p = 0.5**2 / sum(p**2) = 0.25 / 0.335 ~ 0.746 for the top token
    out = process_logits(scores, torch.zeros((1, 0), dtype=torch.long), do_sample=True, temperature=0.5,
                         top_k=0, top_p=0.7, repetition_penalty=1.0)
    assert kept(out) == [0]
    greedy = process_logits(scores, torch.zeros((1, 0), dtype=torch.long), do_sample=False, temperature=0.5,
                            top_k=1, top_p=0.1, repetition_penalty=1.0)
    assert torch.equal(greedy, scores)  # warpers apply to sampling only (as HF)


@pytest.mark.parametrize(("options", "needle"), [
    (dict(do_sample=True, temperature=0.0), "temperature"),
    (dict(do_sample=True, temperature=-1.0), "temperature"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=-1), "top_k"),
    (dict(num_beams=0), "num_beams"),
    (dict(num_beams=2, do_sample=True), "beam"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(max_new_tokens=-3), "max_new_tokens"),
])
def test_bad_decoding_arguments(options: dict, needle: str) -> None:
    base = dict(do_sample=False, temperature=1.0, top_k=0, top_p=1.0, num_beams=1, repetition_penalty=1.0,
                max_new_tokens=5)
    with pytest.raises(InputError, match=needle):
        check_sampling_args(**{**base, **options})
