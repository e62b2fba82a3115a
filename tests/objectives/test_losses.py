"""The loss functions match HF transformers' own loss functions on the same tensors."""
from __future__ import annotations

import pytest
import torch

from lmforge.nn import losses

loss_utils = pytest.importorskip("transformers.loss.loss_utils")


def test_causal_lm_loss_matches_hf() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=g)
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[0, 4] = -100
    ref = loss_utils.ForCausalLMLoss(logits, labels, vocab_size=11)
    torch.testing.assert_close(losses.causal_lm_loss(logits, labels), ref)


def test_masked_lm_loss_gathered_equals_full_and_hf() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 9, 13, generator=g)
    labels = torch.full((2, 9), -100)
    labels[0, 2], labels[1, 5], labels[1, 8] = 4, 7, 12
    ref = loss_utils.ForMaskedLMLoss(logits, labels, vocab_size=13)
    keep = labels != -100
    torch.testing.assert_close(losses.masked_lm_loss(logits, labels), ref)
    torch.testing.assert_close(losses.masked_lm_loss(logits[keep], labels[keep]), ref)


def test_span_and_token_losses_match_hf() -> None:
    g = torch.Generator().manual_seed(2)
    start, end = torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)
    sp, ep = torch.tensor([1, 3, 12, 0]), torch.tensor([2, 9, 15, 0])  # 12/15 fall outside: ignored
    torch.testing.assert_close(losses.span_loss(start, end, sp, ep),
                               loss_utils.ForQuestionAnsweringLoss(start, end, sp, ep))
    logits = torch.randn(2, 5, 3, generator=g)
    labels = torch.tensor([[0, 1, -100, 2, 1], [2, -100, -100, 0, 0]])

    class Cfg:
        num_labels = 3

    torch.testing.assert_close(losses.token_classification_loss(logits, labels),
                               loss_utils.ForTokenClassification(logits, labels, Cfg()))


def test_sequence_classification_regression_and_classes() -> None:
    g = torch.Generator().manual_seed(3)

    class Cfg:
        problem_type = None

    for n in (1, 3):
        cfg = Cfg()
        cfg.num_labels = n
        logits = torch.randn(5, n, generator=g)
        labels = torch.rand(5, generator=g) if n == 1 else torch.randint(0, n, (5,), generator=g)
        torch.testing.assert_close(losses.sequence_classification_loss(logits, labels),
                                   loss_utils.ForSequenceClassificationLoss(labels, logits, cfg))


def test_replaced_token_loss_ignores_padding() -> None:
    logits = torch.tensor([[2.0, -1.0, 5.0]])
    labels = torch.tensor([[1, 0, -100]])
    ref = torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(losses.replaced_token_loss(logits, labels), ref)
    mask = torch.tensor([[1, 0, 1]])
    torch.testing.assert_close(losses.replaced_token_loss(logits, labels, mask),
                               torch.nn.functional.binary_cross_entropy_with_logits(torch.tensor([2.0]), torch.tensor([1.0])))

