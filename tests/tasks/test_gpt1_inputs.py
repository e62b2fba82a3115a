"""GPT-1 input transforms through a tiny decoder: similarity reads both orders and SUMS the two extract
states before the classifier (STS-B, MRPC, QQP); entailment / classification read one sequence; the
fine-tuning loss is the task loss + lm_weight x the language-model loss over every input sequence."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.models.model import Model
from lmforge.tasks import DecoderTokens, get_task
from lmforge.tasks.base import IGNORE_INDEX

PAIR = {"id": "0", "source": "x", "text": "A man is playing a guitar.", "text_pair": "Someone plays music.",
        "label": None}


@pytest.fixture(scope="module")
def decoder_tokens(gpt2_tok):
    n = len(gpt2_tok)
    return DecoderTokens(start=n, delimiter=n + 1, extract=n + 2)  # the 3 ids add_decoder_tokens appends


def tiny_decoder(task, gpt2_tok):
    """A random tiny GPT-2 layout decoder with the task's head (as finetune.load_model builds it)."""
    from lmforge import ModelConfig

    torch.manual_seed(0)
    config = ModelConfig.from_preset("gpt2", vocab_size=len(gpt2_tok) + 3, hidden_size=32, num_layers=2,
                                     num_heads=2, intermediate_size=64, max_positions=64, pad_token_id=None)
    return Model(config.replace(**task.head(config))).eval()


def extract_state(model, ids: list[int]) -> torch.Tensor:
    """The last hidden state of one unpadded sequence at its final (extract) token: (H,)."""
    with torch.no_grad():
        return model.body(torch.tensor([ids])).last_hidden_state[0, -1]


@pytest.mark.parametrize("name,label", [("glue-stsb", 3.2), ("glue-mrpc", 1), ("glue-qqp", 0)])
def test_similarity_sums_both_orders_before_the_classifier(name, label, gpt2_tok, decoder_tokens):
    task = get_task(name)
    assert task.transform == "similarity"
    model = tiny_decoder(task, gpt2_tok)
    assert model.config.head == "extract" and model.config.extract_combine == "sum"
    assert model.config.num_labels == (1 if name == "glue-stsb" else 2)
    t = decoder_tokens
    a_ids = gpt2_tok.backend.encode(PAIR["text"], add_special_tokens=False).ids
    b_ids = gpt2_tok.backend.encode(PAIR["text_pair"], add_special_tokens=False).ids
    (f,) = task.featurize({**PAIR, "label": label}, gpt2_tok, max_length=64, decoder=t)
    # both orders: start a delim b extract, and start b delim a extract
    assert f["input_ids"] == [[t.start, *a_ids, t.delimiter, *b_ids, t.extract],
                              [t.start, *b_ids, t.delimiter, *a_ids, t.extract]]
    batch = task.collate([f], pad_id=0)  # the shorter order is padded: (1, 2, L)
    with torch.no_grad():
        out = model(**batch)
    # reference: each order on its own (no padding), extract states added, then the classifier
    summed = extract_state(model, f["input_ids"][0]) + extract_state(model, f["input_ids"][1])
    expected = model.head.classifier(summed)
    assert out.logits.shape == (1, model.config.num_labels)
    torch.testing.assert_close(out.logits[0], expected, rtol=1e-5, atol=1e-6)
    # one order alone would be a different representation: the sum really uses both
    assert not torch.allclose(model.head.classifier(2 * extract_state(model, f["input_ids"][0])), expected, atol=1e-4)
    # and a similarity score does not depend on which sentence comes first
    (g,) = task.featurize({**PAIR, "text": PAIR["text_pair"], "text_pair": PAIR["text"], "label": label}, gpt2_tok,
                          max_length=64, decoder=t)
    with torch.no_grad():
        swapped = model(**task.collate([g], pad_id=0)).logits
    torch.testing.assert_close(swapped, out.logits, rtol=1e-5, atol=1e-6)
    # the head's loss for the label: MSE for STS-B's score, cross-entropy for MRPC / QQP classes
    ref = F.mse_loss(expected.reshape(1), torch.tensor([label], dtype=torch.float32)) if name == "glue-stsb" \
        else F.cross_entropy(expected[None], torch.tensor([label]))
    torch.testing.assert_close(out.loss, ref, rtol=1e-5, atol=1e-6)


def test_entailment_reads_one_sequence_at_the_extract_token(gpt2_tok, decoder_tokens):
    task = get_task("glue-rte")
    model = tiny_decoder(task, gpt2_tok)
    (f,) = task.featurize({**PAIR, "label": 0}, gpt2_tok, max_length=64, decoder=decoder_tokens)
    assert f["input_ids"][0] == decoder_tokens.start and f["input_ids"][-1] == decoder_tokens.extract
    short = {**PAIR, "text_pair": "Music.", "label": 1}
    (g,) = task.featurize(short, gpt2_tok, max_length=64, decoder=decoder_tokens)
    batch = task.collate([f, g], pad_id=0)  # g is right-padded: its extract token is not the last position
    with torch.no_grad():
        out = model(**batch)
    for row, feat in enumerate((f, g)):
        torch.testing.assert_close(out.logits[row], model.head.classifier(extract_state(model, feat["input_ids"])),
                                   rtol=1e-5, atol=1e-6)


def test_finetune_loss_is_task_loss_plus_half_the_lm_loss_over_both_orders(gpt2_tok, decoder_tokens):
    from lmforge.recipes.finetune import TaskObjective

    task = get_task("glue-stsb")
    model = tiny_decoder(task, gpt2_tok)
    feats = [task.featurize({**PAIR, "label": 3.2}, gpt2_tok, max_length=64, decoder=decoder_tokens)[0],
             task.featurize({**PAIR, "text_pair": "Music.", "label": 1.0}, gpt2_tok, max_length=64,
                            decoder=decoder_tokens)[0]]
    objective = TaskObjective(task, pad_id=0, decoder=decoder_tokens, lm_weight=0.5)
    batch = objective.collate(feats)
    with torch.no_grad():
        loss, logged = objective.loss(model, batch)
        out = model(**batch)
    # reference LM loss: every real token after the first, predicted from the one before, in both orders
    ids, mask = batch["input_ids"].flatten(0, 1), batch["attention_mask"].flatten(0, 1)  # (B * 2, L)
    lm_logits = out.lm_logits.flatten(0, 1)  # (B * 2, L, V)
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE_INDEX)
    lm = F.cross_entropy(lm_logits[:, :-1].reshape(-1, lm_logits.size(-1)), targets.reshape(-1),
                         ignore_index=IGNORE_INDEX)
    task_loss = F.mse_loss(out.logits.reshape(-1), batch["labels"])
    torch.testing.assert_close(loss, task_loss + 0.5 * lm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logged["lm_loss"], lm, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logged["task_loss"], task_loss, rtol=1e-5, atol=1e-6)


def test_classification_transform_is_start_text_extract(gpt2_tok, decoder_tokens):
    t = decoder_tokens
    for name in ("glue-cola", "glue-sst2", "text"):
        task = get_task(name, labels=["0", "1"]) if name == "text" else get_task(name)
        (f,) = task.featurize({**PAIR, "text_pair": None, "label": 1}, gpt2_tok, max_length=64, decoder=t)
        text = gpt2_tok.backend.encode(PAIR["text"], add_special_tokens=False).ids
        assert f["input_ids"] == [t.start, *text, t.extract] and f["extract_positions"] == len(text) + 1, name
