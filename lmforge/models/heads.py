"""Heads on top of the body: ``HEADS[name](config)`` builds one; the pooler lives in the body.

Every head takes the body's output plus a ``HeadContext`` (inputs, tied embedding) and returns a
``ModelOutput`` in HF's order (loss, logits, extras, past_key_values, hidden_states, attentions,
last_hidden_state). The loss for ``labels=`` comes from ``lmforge.nn.losses`` (defined once).
Module names are the state-dict names the HF converters map (``head.mlm.*``, ``head.classifier`` ...).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmforge.config import ModelConfig
from lmforge.errors import ConfigError, InputError
from lmforge.models.output import ModelOutput
from lmforge.nn.activations import ACTIVATIONS, Activation
from lmforge.nn import losses
from lmforge.nn.quantized import output_linear
from lmforge.nn.registry import Registry

Tensor = torch.Tensor


@dataclass
class HeadContext:
    """What a head needs besides the body output."""

    input_ids: Tensor  # (N, L); N = B * C when the input was (B, C, L)
    attention_mask: Tensor | None  # (N, L)
    num_choices: int | None  # C when the input was (B, C, L), else None
    word_embedding: nn.Embedding  # the body's token embedding (tied output layers read its weight)
    compute_logits: bool = True  # False: a fused loss may skip the (tokens, V) logits (CLM training)
    logits_to_keep: int = 0  # > 0: LM logits of the last k positions only (generation's prefill)
    padding_free: bool = False  # the body ran on the real tokens only (padded positions hold zeros)


def _dropout(config: ModelConfig) -> nn.Dropout:
    p = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout
    return nn.Dropout(p)


def _tail(body: ModelOutput) -> dict[str, object]:
    """The body fields a head output carries after its own (HF order)."""
    return dict(past_key_values=body.past_key_values, hidden_states=body.hidden_states, attentions=body.attentions,
                last_hidden_state=body.last_hidden_state, pooler_output=body.pooler_output)


def _no_extra(name: str, extra: dict[str, Tensor | None]) -> None:
    unknown = [k for k, v in extra.items() if v is not None]
    if unknown:
        raise InputError(f"the {name!r} head takes no input {', '.join(unknown)}.")


def last_token_index(ctx: HeadContext, pad_token_id: int | None) -> Tensor:
    """(N,) index of the last real token: HF GPT2ForSequenceClassification (rightmost non-pad id)."""
    ids = ctx.input_ids
    if pad_token_id is not None:
        real = ids.ne(pad_token_id)
    elif ctx.attention_mask is not None:
        real = ctx.attention_mask.bool()
    else:
        return torch.full((ids.size(0),), ids.size(1) - 1, device=ids.device, dtype=torch.long)
    positions = torch.arange(ids.size(1), device=ids.device)
    return (positions * real).argmax(-1)  # works for left and right padding


# --------------------------------------------------------------------------- language modelling
class LMPrediction(nn.Module):
    """MLM transform + decoder: dense H -> E, activation, LayerNorm, decoder (tied to the word embedding
    unless config.tie_word_embeddings is False), bias (V,)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        e = config.embed_size
        self.dense = nn.Linear(config.output_size, e)
        self.act = Activation(config.mlm_activation or config.activation)
        self.norm = nn.LayerNorm(e, eps=config.layer_norm_eps)
        self.decoder = None if config.tie_word_embeddings else nn.Linear(e, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: Tensor, word: nn.Embedding) -> Tensor:
        h = self.norm(self.act(self.dense(hidden)))  # (..., E)
        return output_linear(h, word if self.decoder is None else self.decoder, self.bias)  # (..., V)


class MaskedLMHead(nn.Module):
    """MLM. With labels, vocabulary logits only at the labelled positions: logits (num_masked, V)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.mlm = LMPrediction(config)

    def mlm_logits(self, hidden: Tensor, ctx: HeadContext, labels: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if labels is None:
            return self.mlm(hidden, ctx.word_embedding), None  # (B, L, V)
        keep = labels.ne(losses.IGNORE_INDEX)  # (B, L)
        if hidden.dim() == 3:  # else (N, H) already: the body computed the labelled rows only (output_rows)
            hidden = hidden[keep]  # (num_masked, H)
        logits = self.mlm(hidden, ctx.word_embedding)  # (num_masked, V): gathered before the decoder
        return logits, losses.masked_lm_loss(logits, labels[keep])

    def forward(self, body: ModelOutput, ctx: HeadContext, labels: Tensor | None = None) -> ModelOutput:
        logits, loss = self.mlm_logits(body.last_hidden_state, ctx, labels)
        return ModelOutput(loss=loss, logits=logits, **_tail(body))


class PretrainingHead(MaskedLMHead):
    """BertForPreTraining / AlbertForPreTraining: MLM + a 2-way pair head (NSP / SOP) on the pooled output."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if not config.has_pooler:
            raise ConfigError("ModelConfig.head='pretraining' needs the pooler (pooler=True): the pair head reads it.")
        self.pair = nn.Linear(config.hidden_size, 2)

    def forward(self, body: ModelOutput, ctx: HeadContext, labels: Tensor | None = None,
                next_sentence_label: Tensor | None = None) -> ModelOutput:
        logits, loss = self.mlm_logits(body.last_hidden_state, ctx, labels)
        pair_logits = self.pair(body.pooler_output)  # (B, 2)
        if next_sentence_label is not None:
            pair_loss = losses.sentence_pair_loss(pair_logits, next_sentence_label)
            loss = pair_loss if loss is None else loss + pair_loss
        return ModelOutput(loss=loss, logits=logits, pair_logits=pair_logits, **_tail(body))


def _lm_logits(decoder: nn.Linear | None, hidden: Tensor, ctx: HeadContext) -> Tensor:
    if ctx.logits_to_keep > 0:
        hidden = hidden[..., -ctx.logits_to_keep:, :]
    return output_linear(hidden, ctx.word_embedding if decoder is None else decoder)  # (..., L, V)


def _check_lm_tying(config: ModelConfig) -> None:
    if config.tie_word_embeddings and config.embed_size != config.hidden_size:
        raise ConfigError(f"ModelConfig.tie_word_embeddings=True needs embedding_size == hidden_size for a causal "
                          f"LM head (got {config.embed_size} vs {config.hidden_size}); untie or use equal sizes.")


class CausalLMHead(nn.Module):
    """Next-token logits through the (tied) embedding matrix, no bias (GPT). Labels shift inside the loss."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        _check_lm_tying(config)
        self.decoder = None if config.tie_word_embeddings else nn.Linear(config.output_size, config.vocab_size,
                                                                         bias=False)
        # HF Reformer's LM head has a bias (ModelConfig.lm_head_bias); GPT's has none
        self.bias = nn.Parameter(torch.zeros(config.vocab_size)) if config.lm_head_bias else None

    def forward(self, body: ModelOutput, ctx: HeadContext, labels: Tensor | None = None) -> ModelOutput:
        hidden = body.last_hidden_state
        loss = logits = None
        weight = ctx.word_embedding.weight if self.decoder is None else self.decoder.weight
        if self.bias is not None:  # the fused loss has no bias: through the logits
            logits = _lm_logits(self.decoder, hidden, ctx) + self.bias
            loss = losses.causal_lm_loss(logits, labels) if labels is not None else None
        elif labels is not None and not ctx.compute_logits and weight.is_floating_point():  # (int8: logits first)
            loss = losses.causal_lm_loss_from_hidden(hidden, weight, labels)  # fused: no (B, L, V) tensor
        else:
            logits = _lm_logits(self.decoder, hidden, ctx)
            if labels is not None:
                loss = losses.causal_lm_loss(logits, labels)
        return ModelOutput(loss=loss, logits=logits, **_tail(body))


# --------------------------------------------------------------------------- per-token heads
class ReplacedTokenHead(nn.Module):
    """ELECTRA discriminator: dense + activation + one logit per token (1 = replaced)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = Activation(config.activation)
        self.classifier = nn.Linear(config.hidden_size, 1)

    def forward(self, body: ModelOutput, ctx: HeadContext, labels: Tensor | None = None) -> ModelOutput:
        logits = self.classifier(self.act(self.dense(body.last_hidden_state))).squeeze(-1)  # (B, L)
        loss = None if labels is None else losses.replaced_token_loss(logits, labels, ctx.attention_mask)
        return ModelOutput(loss=loss, logits=logits, **_tail(body))


class TokenClassificationHead(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dropout = _dropout(config)
        self.classifier = nn.Linear(config.output_size, config.num_labels)

    def forward(self, body: ModelOutput, ctx: HeadContext, labels: Tensor | None = None) -> ModelOutput:
        logits = self.classifier(self.dropout(body.last_hidden_state))  # (B, L, C)
        loss = None if labels is None else losses.token_classification_loss(logits, labels)
        return ModelOutput(loss=loss, logits=logits, **_tail(body))


class QATransform(nn.Module):
    """HF BigBirdForQuestionAnsweringHead before its Linear: dropout, dense F + activation, dense H, dropout,
    residual + LayerNorm (the shape of a Transformer layer's MLP)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.fc1 = nn.Linear(config.hidden_size, config.ffn_size)
        self.act = Activation(config.activation)
        self.fc2 = nn.Linear(config.ffn_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden: Tensor) -> Tensor:
        h = self.fc2(self.act(self.fc1(self.dropout(hidden))))  # (B, L, H)
        return self.norm(self.dropout(h) + hidden)


def question_mask(input_ids: Tensor, sep_token_id: int) -> Tensor:
    """(B, L) bool, True on the question: positions 1 .. the first sep token (HF BigBirdForQuestionAnswering:
    question_lengths = first sep + 1, position 0 ([CLS], the no-answer span) stays)."""
    lengths = input_ids.eq(sep_token_id).int().argmax(dim=-1) + 1  # (B,); no sep: 1, nothing masked
    positions = torch.arange(input_ids.size(1), device=input_ids.device)
    return (positions[None, :] < lengths[:, None]) & (positions[None, :] > 0)


class QuestionAnsweringHead(nn.Module):
    """Extractive QA: start / end logits per token; ``logits`` is the two stacked (B, L, 2).
    ``qa_head="bigbird"`` adds BigBird's transform and hides the question from the span logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.transform = QATransform(config) if config.qa_head == "bigbird" else None
        self.sep_token_id = config.sep_token_id if config.qa_head == "bigbird" else None
        self.qa = nn.Linear(config.hidden_size, 2)

    def forward(self, body: ModelOutput, ctx: HeadContext, labels: Tensor | None = None,
                start_positions: Tensor | None = None, end_positions: Tensor | None = None) -> ModelOutput:
        if labels is not None:
            raise InputError("the 'qa' head takes start_positions= and end_positions=, not labels=.")
        hidden = body.last_hidden_state
        if self.transform is not None:
            hidden = self.transform(hidden)
        logits = self.qa(hidden)  # (B, L, 2)
        if self.sep_token_id is not None:
            logits = logits - question_mask(ctx.input_ids, self.sep_token_id)[..., None].to(logits.dtype) * 1e6
        start, end = logits[..., 0].contiguous(), logits[..., 1].contiguous()  # (B, L) each
        loss = None
        if start_positions is not None and end_positions is not None:
            s_in, e_in = start, end
            if ctx.padding_free and ctx.attention_mask is not None:
                # padded positions are no answer candidates: out of the softmax (the padded path's loss
                # depends on the batch's padding width, through the pads' hidden states)
                pad = ctx.attention_mask.eq(0)
                low = torch.finfo(start.dtype).min
                s_in, e_in = start.masked_fill(pad, low), end.masked_fill(pad, low)
            loss = losses.span_loss(s_in, e_in, start_positions, end_positions)
        return ModelOutput(loss=loss, start_logits=start, end_logits=end, logits=logits, **_tail(body))


# --------------------------------------------------------------------------- sequence heads
def summary_token(config: ModelConfig) -> str:
    """Which hidden state the seq-cls / choice head reads (``SequenceSummary``).

    Multiple choice reads the pooler whenever the body has one and ``classifier_token`` is not set:
    every HF ``*ForMultipleChoice`` of a family with a pooler classifies the pooled output (BERT,
    ALBERT, BigBird and RoBERTa, whose seq-cls head has its own dense + tanh on <s> instead).
    """
    if config.head == "choice" and config.classifier_token is None and config.has_pooler:
        return "pooler"
    return config.seq_cls_token


class SequenceSummary(nn.Module):
    """The one vector a sequence classifier reads (``summary_token(config)``):
    "pooler" = the body's pooled output (BERT, ALBERT; every choice head on a body with a pooler);
    "first" = dense + activation over the first token (RoBERTa tanh, ELECTRA gelu, DistilBERT relu);
    "last" = the last real token (GPT-2)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.token = summary_token(config)
        self.pad_token_id = config.pad_token_id
        if self.token == "first":
            self.dense = nn.Linear(config.hidden_size, config.hidden_size)
            self.act = Activation(config.classifier_activation or "tanh")
        self.dropout = _dropout(config)

    def forward(self, body: ModelOutput, ctx: HeadContext) -> Tensor:
        if self.token == "pooler":
            return self.dropout(body.pooler_output)  # (N, H)
        hidden = body.last_hidden_state
        if self.token == "first":
            return self.dropout(self.act(self.dense(self.dropout(hidden[:, 0]))))  # (N, H)
        rows = torch.arange(hidden.size(0), device=hidden.device)
        return hidden[rows, last_token_index(ctx, self.pad_token_id)]  # (N, H)


class SequenceClassificationHead(nn.Module):
    """num_labels classes (cross-entropy) or one score (num_labels = 1: MSE regression)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.summary = SequenceSummary(config)
        # GPT2ForSequenceClassification's score layer has no bias
        self.classifier = nn.Linear(config.hidden_size, config.num_labels, bias=config.seq_cls_token != "last")

    def forward(self, body: ModelOutput, ctx: HeadContext, labels: Tensor | None = None) -> ModelOutput:
        logits = self.classifier(self.summary(body, ctx))  # (B, C)
        loss = None if labels is None else losses.sequence_classification_loss(logits, labels)
        return ModelOutput(loss=loss, logits=logits, **_tail(body))


class MultipleChoiceHead(nn.Module):
    """Input (B, C, L): one score per choice -> logits (B, C); labels (B,) the right choice."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.summary = SequenceSummary(config)
        self.classifier = nn.Linear(config.hidden_size, 1)

    def forward(self, body: ModelOutput, ctx: HeadContext, labels: Tensor | None = None) -> ModelOutput:
        scores = self.classifier(self.summary(body, ctx)).squeeze(-1)  # (B * C,)
        logits = scores.view(-1, ctx.num_choices or 1)  # (B, C)
        loss = None
        if labels is not None:
            loss = (losses.sequence_classification_loss(logits, labels) if labels.is_floating_point()
                    else losses.multiple_choice_loss(logits, labels))
        return ModelOutput(loss=loss, logits=logits, **_tail(body))


class ExtractHead(nn.Module):
    """GPT-1 fine-tuning head: a classifier on the hidden state of the extract token plus the LM logits
    (``lm_logits``) for the auxiliary language-model loss, which the fine-tuning objective weighs
    (``lm_weight``, 0.5 in the paper); the head's own loss is the classification loss.

    ``extract_positions`` (B,) or (B, C) says where the extract token is (default: the last real token).
    Input (B, C, L): ``extract_combine`` "choice" scores each sequence -> (B, C) (multiple choice, HF
    DoubleHeads); "sum" adds the C extract states before the classifier -> (B, num_labels) (similarity).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        _check_lm_tying(config)
        combine = config.extract_combine
        self.combine = ("choice" if config.num_labels == 1 else "sum") if combine == "auto" else combine
        self.pad_token_id = config.pad_token_id
        self.decoder = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size,
                                                                         bias=False)
        self.dropout = _dropout(config)
        self.classifier = nn.Linear(config.hidden_size, 1 if self.combine == "choice" else config.num_labels)

    def forward(self, body: ModelOutput, ctx: HeadContext, labels: Tensor | None = None,
                extract_positions: Tensor | None = None) -> ModelOutput:
        hidden = body.last_hidden_state  # (N, L, H)
        N, L, _ = hidden.shape
        if extract_positions is None:
            index = last_token_index(ctx, self.pad_token_id)
        else:
            index = extract_positions.reshape(-1).to(hidden.device)
            if index.numel() != N:
                raise InputError(f"extract_positions has {index.numel()} entries for {N} sequences.")
            if index.device.type != "meta" and (int(index.max()) >= L or int(index.min()) < 0):
                raise InputError(f"extract_positions must be in [0, {L}), got {int(index.max())}.")
        rows = torch.arange(N, device=hidden.device)
        extract = self.dropout(hidden[rows, index])  # (N, H)
        C = ctx.num_choices
        if C is not None and self.combine == "sum":
            logits = self.classifier(extract.view(-1, C, extract.size(-1)).sum(1))  # (B, K)
        elif C is not None:
            logits = self.classifier(extract).view(-1, C)  # (B, C)
        else:
            logits = self.classifier(extract)  # (B, K)
        lm_logits = _lm_logits(self.decoder, hidden, ctx)  # (N, L, V)
        if C is not None:
            lm_logits = lm_logits.view(-1, C, *lm_logits.shape[1:])  # (B, C, L, V)
        loss = None
        if labels is not None:
            choice = C is not None and self.combine == "choice" and not labels.is_floating_point()
            loss = (losses.multiple_choice_loss(logits, labels) if choice
                    else losses.sequence_classification_loss(logits, labels))
        return ModelOutput(loss=loss, logits=logits, lm_logits=lm_logits, **_tail(body))


# ModelConfig.head -> head module. Heads whose forward takes extra keyword inputs list them in HEAD_INPUTS.
HEADS: Registry[type[nn.Module]] = Registry("head", {
    "mlm": MaskedLMHead,
    "clm": CausalLMHead,
    "pretraining": PretrainingHead,
    "rtd": ReplacedTokenHead,
    "seq-cls": SequenceClassificationHead,
    "token-cls": TokenClassificationHead,
    "qa": QuestionAnsweringHead,
    "choice": MultipleChoiceHead,
    "extract": ExtractHead,
})
HEAD_INPUTS: dict[str, tuple[str, ...]] = {
    "pretraining": ("next_sentence_label",),
    "qa": ("start_positions", "end_positions"),
    "extract": ("extract_positions",),
}
CHOICE_HEADS = ("choice", "extract")  # accept (B, C, L) inputs
ROW_HEADS = ("mlm", "pretraining")  # a training loss reads the labelled rows only (and the pooler)
SUMMARY_HEADS = ("seq-cls", "choice")  # read one vector per sequence (SequenceSummary)
# heads whose loss never reads the pooler: with labels the body skips it, so its parameters are unused
# rather than used-without-gradient, which DDP (find_unused_parameters) cannot tell apart from a hang
POOLER_FREE_HEADS = ("mlm", "clm", "rtd", "token-cls", "qa")


def build_head(config: ModelConfig) -> nn.Module | None:
    """The head of ``config`` (None for the bare model); unknown names raise ConfigError naming the field."""
    # read by some heads only; a misspelt one fails whatever the head, as it did when ModelConfig checked it
    for field in ("mlm_activation", "classifier_activation"):
        if getattr(config, field) is not None:
            ACTIVATIONS.lookup(getattr(config, field), field)
    return None if config.head is None else HEADS[config.head](config)
