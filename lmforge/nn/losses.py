"""The standard loss functions, defined once.

Heads (``lmforge/models/heads.py``) call these when a model is given ``labels=``; objectives and tasks
call them too (they live in nn/ so that models/ never imports objectives/). Each matches the loss HF transformers computes for the same head (mean over the
non-ignored targets), so a converted checkpoint gives the same loss as the reference.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label value that contributes nothing to a loss (HF / PyTorch convention)


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the masked positions.

    ``logits`` is either gathered, (N, V) with ``labels`` (N,), or full, (B, L, V) with ``labels``
    (B, L) holding -100 at unmasked positions. The mean is over the labels that are not -100.
    """
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy; shifts inside, as HF does: position t predicts ``labels[:, t + 1]``.

    logits (B, L, V), labels (B, L) (usually the input ids; -100 where nothing is to be predicted).
    """
    shift_logits = logits[:, :-1, :]  # (B, L-1, V)
    shift_labels = labels[:, 1:]  # (B, L-1)
    return F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)).float(),
                           shift_labels.reshape(-1), ignore_index=IGNORE_INDEX)


def sentence_pair_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """NSP / SOP: 2-way cross-entropy. logits (B, 2), labels (B,) with 1 = random / swapped."""
    return F.cross_entropy(logits.reshape(-1, 2).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX)


def pretraining_loss(mlm_logits: torch.Tensor, labels: torch.Tensor, pair_logits: torch.Tensor,
                     next_sentence_label: torch.Tensor) -> torch.Tensor:
    """BERT / ALBERT pre-training: MLM loss + sentence-pair loss, summed (HF BertForPreTraining)."""
    return masked_lm_loss(mlm_logits, labels) + sentence_pair_loss(pair_logits, next_sentence_label)


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy for classes; mean squared error for regression (one output, float labels)."""
    if logits.size(-1) == 1:
        return F.mse_loss(logits.reshape(-1).float(), labels.reshape(-1).to(torch.float32))
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def token_classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy. logits (B, L, C), labels (B, L) with -100 on ignored sub-tokens."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def span_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: torch.Tensor,
              end_positions: torch.Tensor) -> torch.Tensor:
    """Extractive QA: mean of start and end cross-entropies (HF BertForQuestionAnswering).

    start/end logits (B, L); positions (B,). Positions outside the sequence are clamped to L and
    ignored, which is what HF does for spans cut off by truncation.
    """
    ignored = start_logits.size(1)
    start = start_positions.reshape(-1).clamp(0, ignored)
    end = end_positions.reshape(-1).clamp(0, ignored)
    start_loss = F.cross_entropy(start_logits.float(), start, ignore_index=ignored)
    end_loss = F.cross_entropy(end_logits.float(), end, ignore_index=ignored)
    return (start_loss + end_loss) / 2


def multiple_choice_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SWAG-style choice: logits (B, C), labels (B,) the index of the right ending."""
    return F.cross_entropy(logits.float(), labels.reshape(-1))


def replaced_token_loss(logits: torch.Tensor, labels: torch.Tensor,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """ELECTRA discriminator: binary cross-entropy per token, over real (non-pad, non -100) tokens.

    logits (B, L), labels (B, L) with 1 = replaced, 0 = original, -100 = ignored.
    """
    active = labels != IGNORE_INDEX
    if attention_mask is not None:
        active = active & (attention_mask == 1)
    return F.binary_cross_entropy_with_logits(logits[active].float(), labels[active].float())


# ---------------------------------------------------------------------------------------------------
# Vocabulary projection + cross-entropy, fused and chunked: peak memory is one chunk of logits, not (N, V).
# How the loop is built and what each choice saved: docs/pretraining.md, "The fused loss, chunk by chunk".

COMPILED_LIMIT = 2**31  # rows x padded vocabulary above which a compiled model runs this loss eagerly (below)


def _product_dtype(weight: torch.Tensor) -> torch.dtype:
    """The dtype the unfused path multiplies in: autocast's (bf16 / fp16) when it is on, else the weight's."""
    kind = weight.device.type
    if torch.is_autocast_enabled(kind) and weight.is_floating_point():
        return torch.get_autocast_dtype(kind)
    return weight.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk: int, align: int):  # hidden (N, H), weight (V, H)
        n, v = hidden.shape[0], weight.shape[0]
        acc = torch.promote_types(weight.dtype, torch.float32)  # logits / sums at >= fp32 (bf16 weights too)
        mm = _product_dtype(weight)  # every product in the dtype the unfused path would use
        direct = mm == acc and hidden.dtype == acc  # fp32 throughout: products written into the buffers
        # The weight cast once per call (not per chunk) and, on a GPU, padded with zero rows to a multiple of
        # ``align``: an odd V (GPT-2's 50,257) leaves the (c, V) operands' leading dimension unaligned and
        # cuBLAS's tensor-core kernels much slower (nanoGPT pads the vocabulary to 50,304 for this). Padded
        # columns get logit -inf, so softmax, loss and gradients are unchanged.
        pad = -v % align
        w = weight.detach().to(mm)
        if pad:
            w = torch.cat([w, w.new_zeros(pad, w.shape[1])])
        valid = labels != IGNORE_INDEX
        scale = valid.to(acc) / valid.sum().clamp(min=1).to(acc)  # (N,) each row's weight in the mean
        target = labels.clamp(min=0)
        g_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device)
        g_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        g_bias = torch.zeros(v, dtype=acc, device=weight.device) if bias is not None else None
        nll = torch.empty(n, dtype=acc, device=hidden.device)  # -log p(target) per row
        buffer = torch.empty((min(chunk, n), v + pad), dtype=acc, device=hidden.device)  # (c, V + pad)
        rows = torch.arange(buffer.shape[0], device=hidden.device)
        for start in range(0, n, chunk):
            h, y = hidden[start:start + chunk], target[start:start + chunk]  # (c, H), (c,)
            c = h.shape[0]
            row_scale = scale[start:start + c, None]  # (c, 1)
            logits = buffer[:c]
            if direct:
                torch.mm(h, w.t(), out=logits)
            else:
                logits.copy_(h.to(mm) @ w.t())
            if bias is not None:
                logits[:, :v] += bias
            if pad:
                logits[:, v:] = float("-inf")
            torch.log_softmax(logits, dim=-1, out=logits)  # in place, row by row
            nll[start:start + c] = logits.gather(1, y[:, None]).squeeze(1).neg()
            grad = logits.exp_()  # softmax
            grad[rows[:c], y] -= 1.0  # d loss_row / d logits, before the row's weight
            scaled_h = h.to(acc) * row_scale  # (c, H)
            if direct:
                torch.mm(grad, w, out=g_hidden[start:start + c]).mul_(row_scale)
                g_weight.addmm_(grad.t()[:v], scaled_h)  # (V, c) @ (c, H)
            else:  # low-precision products (as autocast's), each chunk's share of d weight summed at fp32
                low = grad.to(mm)
                g_hidden[start:start + c] = low @ w
                g_hidden[start:start + c].mul_(row_scale.to(hidden.dtype))
                g_weight += (low.t() @ scaled_h.to(mm))[:v]
            if g_bias is not None:
                g_bias.addmv_(grad.t()[:v], row_scale.squeeze(1))
        ctx.save_for_backward(g_hidden, g_weight.to(weight.dtype),
                              g_bias.to(bias.dtype) if g_bias is not None else None)
        return (torch.where(valid, nll, 0) * scale).sum()  # ignored rows: 0 even if their row overflowed

    @staticmethod
    def backward(ctx, grad_out):
        g_hidden, g_weight, g_bias = ctx.saved_tensors
        return (g_hidden * grad_out.to(g_hidden.dtype), g_weight * grad_out.to(g_weight.dtype),
                None if g_bias is None else g_bias * grad_out.to(g_bias.dtype), None, None, None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         bias: torch.Tensor | None = None, *, chunk: int | None = None,
                         align: int | None = None) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T + bias, labels, ignore_index=-100)`` without the (N, V) logits.

    hidden (..., H), labels (...) with -100 ignored, weight (V, H) (the tied embedding / decoder),
    bias (V,) or None. The mean is over the non-ignored labels (0 when there are none, as a sum).
    ``chunk`` rows of logits at a time (default 1,024 on a CPU, where a chunk stays near the caches, and
    4,096 on a GPU, where bigger products run closer to peak); ``align`` pads the vocabulary inside to a
    multiple (default 64 on a GPU, 1 elsewhere), which changes no result.
    """
    hidden = hidden.reshape(-1, hidden.shape[-1])
    labels = labels.reshape(-1)
    gpu = hidden.device.type == "cuda"
    chunk = chunk or (4096 if gpu else 1024)
    align = align or (64 if gpu else 1)
    needs_grad = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad
                                              or (bias is not None and bias.requires_grad))
    if not needs_grad:  # evaluation: the loss only, still chunked
        acc = torch.promote_types(weight.dtype, torch.float32)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            logits = F.linear(hidden[start:start + chunk], weight, bias).to(acc)
            total += F.cross_entropy(logits, labels[start:start + chunk], ignore_index=IGNORE_INDEX,
                                     reduction="sum")
        return total / (labels != IGNORE_INDEX).sum().clamp(min=1)
    if torch.compiler.is_compiling() and hidden.shape[0] * (weight.shape[0] + -weight.shape[0] % align) >= COMPILED_LIMIT:
        # Compiled, GPT-2 at 64 x 1024 tokens (rows x padded vocabulary 3.3e9) died of an illegal memory access in
        # an Inductor kernel of this loop, and 32 x 1024 (1.6e9) ran: 32-bit indexing, it seems. Past 2^31 the
        # loop runs eagerly (a graph break): measured 37.6% MFU there against 40.5% compiled at 32 x 1024.
        return _eager(hidden, weight, bias, labels, chunk, align)
    return _LinearCrossEntropy.apply(hidden, weight, bias, labels, chunk, align)


@torch.compiler.disable
def _eager(hidden, weight, bias, labels, chunk, align):
    return _LinearCrossEntropy.apply(hidden, weight, bias, labels, chunk, align)


def causal_lm_loss_from_hidden(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                               bias: torch.Tensor | None = None, *, chunk: int | None = None) -> torch.Tensor:
    """``causal_lm_loss`` from the last hidden states (B, L, H) and the LM head weight, fused.

    Position t predicts ``labels[:, t + 1]``; the last position predicts nothing and is skipped.
    """
    return linear_cross_entropy(hidden[:, :-1], weight, labels[:, 1:], bias, chunk=chunk)


# --------------------------------------------------------------------------- distillation (lmforge distill)
def distillation_kl_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                         temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), summed over the vocabulary and averaged over
    the rows (HF distillation/distiller.py: ``KLDivLoss(reduction="batchmean")`` on the selected rows, times
    ``temperature ** 2`` so the gradient scale does not depend on T; Hinton et al. 2015).
    Both (N, V): one row per position taking part (masked tokens, or every real token)."""
    t = temperature
    s = F.log_softmax(student_logits.float() / t, dim=-1)
    p = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(s, p, reduction="batchmean", log_target=True) * (t * t)


def cosine_embedding_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor) -> torch.Tensor:
    """DistilBERT's L_cos: mean over rows of 1 - cos(student, teacher) (``CosineEmbeddingLoss`` with target 1
    on the last hidden states of the real tokens, distiller.py). Both (N, H)."""
    return (1.0 - F.cosine_similarity(student_hidden.float(), teacher_hidden.float(), dim=-1)).mean()


def attention_score_loss(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                         key_padding: torch.Tensor | None = None) -> torch.Tensor:
    """TinyBERT's attention loss for one layer pair: MSE of the pre-softmax scores (B, nh, T, T) with the
    entries of padding keys zeroed in both (general_distill.py / task_distill.py zero what the -10000 mask
    made <= -1e2). ``key_padding`` (B, T), True = real token; None = no padding."""
    s, t = student_scores.float(), teacher_scores.float()
    if key_padding is not None:
        keep = key_padding.bool()[:, None, None, :]  # (B, 1, 1, T)
        s, t = s.masked_fill(~keep, 0.0), t.masked_fill(~keep, 0.0)
    return F.mse_loss(s, t)


def hidden_state_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                      projection: torch.nn.Module | None = None) -> torch.Tensor:
    """TinyBERT's hidden / embedding loss for one layer pair: MSE(student @ W + b, teacher), W the learned
    (H_student -> H_teacher) projection (``fit_dense``), over every position as the reference does."""
    s = projection(student_hidden) if projection is not None else student_hidden
    return F.mse_loss(s.float(), teacher_hidden.float())


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
                       temperature: float = 1.0) -> torch.Tensor:
    """TinyBERT's prediction-layer loss (task_distill.py ``soft_cross_entropy``):
    mean over every (row, class) element of -softmax(teacher / T) * log_softmax(student / T)."""
    t = temperature
    target = F.softmax(teacher_logits.float() / t, dim=-1)
    return (-target * F.log_softmax(student_logits.float() / t, dim=-1)).mean()


def topk_distillation_kl_loss(student_logits: torch.Tensor, teacher_values: torch.Tensor,
                              teacher_indices: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """``distillation_kl_loss`` against cached teacher logits kept for the top k ids of each row only: the
    teacher's distribution is softmax(values / T) renormalised over those k ids, the student's log-probabilities
    are its full softmax read at the same ids. With k = V it is the full KL. student (N, V); values, indices (N, k)."""
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1).gather(-1, teacher_indices.long())  # (N, k)
    log_q = F.log_softmax(teacher_values.float() / t, dim=-1)  # (N, k)
    return (log_q.exp() * (log_q - log_p_student)).sum(-1).mean() * (t * t)
