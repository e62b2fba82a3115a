"""Featurize / postprocess: span windows and decoding, first-sub-token tagging, GPT-1 transforms."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lmforge.tasks import DecoderTokens, featurize_all, get_task
from lmforge.tasks.base import IGNORE_INDEX

transformers = pytest.importorskip("transformers")


def _one_hot_logits(feature, start, end):
    """Logits that point at (start, end) of one feature, everything else very negative."""
    n = len(feature["input_ids"])
    s, e = np.full(n, -10.0), np.full(n, -10.0)
    s[start], e[end] = 10.0, 10.0
    return s, e


def test_encoder_pair_matches_hf_bert_tokenizer(refdata, bert_tok):
    hf = transformers.BertTokenizerFast(str(refdata / "tokenizers/bert-base-uncased/vocab.txt"))
    task = get_task("glue-rte")
    ex = task.read(refdata / "glue" / "RTE", "val")[0]
    (f,) = task.featurize(ex, bert_tok, max_length=32)
    ref = hf(ex["text"], ex["text_pair"], truncation=True, max_length=32)
    assert f["input_ids"] == ref["input_ids"] and f["token_type_ids"] == ref["token_type_ids"]
    assert f["truncated"]  # the premise is longer than 32 tokens
    (g,) = task.featurize(ex, bert_tok, max_length=512)
    assert g["input_ids"] == hf(ex["text"], ex["text_pair"])["input_ids"] and not g["truncated"]


def test_squad_windows_labels_and_decoding_across_windows(refdata, bert_tok):
    task = get_task("squad-v2", doc_stride=16, max_query_length=16)
    examples = task.read(refdata / "squad", "dev")
    features, _ = featurize_all(task, examples, bert_tok, max_length=48)
    assert len(features) > 2 * len(examples)  # long contexts really are split into several windows
    windows_with_answer = 0
    for f in features:
        ex = examples[f["example_index"]]
        if f["start_positions"] == 0:
            continue
        windows_with_answer += 1
        start, end = f["offsets"][f["start_positions"]][0], f["offsets"][f["end_positions"]][1]
        # the labelled tokens cover exactly the answer's characters (answers are whole words here)
        assert ex["context"][start:end] == ex["answers"][0]
    # with a 16-token overlap some answers sit in two windows; each answerable question has >= 1
    answerable = [i for i, ex in enumerate(examples) if not ex["impossible"]]
    assert windows_with_answer >= len(answerable)
    # logits that point at the gold span in ONE window (the last that holds it), null elsewhere
    logits = []
    chosen = {}
    for i, f in enumerate(features):
        if f["start_positions"] != 0:
            chosen[f["example_index"]] = i
    for i, f in enumerate(features):
        if chosen.get(f["example_index"]) == i:
            logits.append(_one_hot_logits(f, f["start_positions"], f["end_positions"]))
        else:
            logits.append(_one_hot_logits(f, 0, 0) if examples[f["example_index"]]["impossible"]
                          else (np.full(len(f["input_ids"]), -10.0), np.full(len(f["input_ids"]), -10.0)))
    preds = task.postprocess(logits, features, examples)
    assert sum(1 for i in answerable if features[chosen[i]] is not features[
        min(j for j, f in enumerate(features) if f["example_index"] == i)]) > 0  # some answers are not in window 0
    for i, ex in enumerate(examples):
        if ex["impossible"]:
            assert task.answer(preds[i]) == ""
        else:
            assert task.answer(preds[i]) == ex["answers"][0]
    scores = task.metric(preds, examples)
    assert scores["exact"] == 100.0 and scores["f1"] == 100.0
    assert scores["HasAns_total"] == 8 and scores["NoAns_total"] == 6 and scores["best_f1"] == 100.0


def test_squad_n_best_respects_max_answer_length_and_order(bert_tok):
    task = get_task("squad", max_answer_length=2)
    ex = {"id": "q", "question": "Who?", "context": "one two three four five six", "answers": ["two"],
          "span": (4, 7), "impossible": False, "label": (4, 7)}
    (f,) = task.featurize(ex, bert_tok, max_length=64)
    f["example_index"] = 0
    ctx = [i for i, o in enumerate(f["offsets"]) if o is not None]
    s, e = np.zeros(len(f["input_ids"])), np.zeros(len(f["input_ids"]))
    s[ctx[0]], e[ctx[5]] = 5.0, 5.0  # best pairs (0,5), (0,2) are 6 and 3 tokens: too long
    s[ctx[1]], e[ctx[2]] = 4.0, 4.0  # 'two three': allowed
    e[ctx[0] - 1] = 9.0  # an end outside the context is never chosen
    (pred,) = task.postprocess([(s, e)], [f], [ex])
    assert pred["text"] == "two three"


def test_tagging_first_subtoken_labels_and_roundtrip(refdata, bert_tok):
    task = get_task("pos")
    examples = task.read(refdata / "ud_english_ewt", "dev")[:50]
    features, truncated = featurize_all(task, examples, bert_tok, max_length=128)
    assert truncated == 0
    for f, ex in zip(features, examples):
        firsts = [i for i, w in enumerate(f["word_ids"]) if w is not None and (i == 0 or f["word_ids"][i - 1] != w)]
        assert [f["labels"][i] for i in firsts] == ex["tags"]
        assert sum(lab != IGNORE_INDEX for lab in f["labels"]) == len(ex["words"])
    # logits that are one-hot at the gold tag give accuracy 1; a split word with mixed sub-token
    # predictions is read at its first sub-token only
    logits = []
    for f in features:
        lg = np.zeros((len(f["input_ids"]), len(task.labels)))
        for i, lab in enumerate(f["labels"]):
            lg[i, lab if lab != IGNORE_INDEX else 0] = 1.0
        logits.append(lg)
    preds = task.postprocess(logits, features, examples)
    assert task.metric(preds, examples) == {"accuracy": 1.0}
    # truncation: words past max_length are counted and predicted with the fallback tag
    _, cut = featurize_all(task, examples, bert_tok, max_length=8)
    assert cut == sum(1 for ex in examples if len(bert_tok.backend.encode(ex["words"], is_pretokenized=True).ids) > 8)


def test_gpt1_transforms(refdata, gpt2_tok):
    tokens = DecoderTokens(start=50257, delimiter=50258, extract=50259)
    rte = get_task("glue-rte")
    ex = rte.read(refdata / "glue" / "RTE", "val")[1]
    (f,) = rte.featurize(ex, gpt2_tok, max_length=512, decoder=tokens)
    ids = f["input_ids"]
    premise = gpt2_tok.backend.encode(ex["text"], add_special_tokens=False).ids
    hypothesis = gpt2_tok.backend.encode(ex["text_pair"], add_special_tokens=False).ids
    assert ids == [50257, *premise, 50258, *hypothesis, 50259]
    assert f["extract_positions"] == len(ids) - 1
    # truncation cuts the longer segment and keeps start / delim / extract
    (g,) = rte.featurize(ex, gpt2_tok, max_length=20, decoder=tokens)
    assert len(g["input_ids"]) == 20 and g["input_ids"][0] == 50257 and g["input_ids"][-1] == 50259 and g["truncated"]
    # similarity: both orders, collated as (B, 2, L)
    stsb = get_task("glue-stsb")
    pair = {"id": "0", "source": "x", "text": "A man plays.", "text_pair": "Someone is playing a guitar.", "label": 3.2}
    (h,) = stsb.featurize(pair, gpt2_tok, max_length=64, decoder=tokens)
    a, b = h["input_ids"]
    assert a[0] == b[0] == 50257 and a[-1] == b[-1] == 50259 and a != b and sorted(a) == sorted(b)
    batch = stsb.collate([h, h], pad_id=0)
    assert batch["input_ids"].shape == (2, 2, max(len(a), len(b))) and batch["labels"].dtype == torch.float32


def test_swag_choices_collate(refdata, bert_tok):
    task = get_task("swag")
    examples = task.read(refdata / "swag", "val")
    features, _ = featurize_all(task, examples, bert_tok, max_length=64)
    batch = task.collate(features[:3], pad_id=0)
    assert batch["input_ids"].shape[:2] == (3, 4) and batch["labels"].tolist() == [ex["label"] for ex in examples[:3]]
    logits = [torch.nn.functional.one_hot(torch.tensor(ex["label"]), 4).float() for ex in examples]
    assert task.metric(task.postprocess(logits, features, examples), examples) == {"accuracy": 1.0}


def test_truncation_is_counted_and_the_users_tokenizer_is_untouched(refdata, bert_tok):
    task = get_task("glue-rte")
    examples = task.read(refdata / "glue" / "RTE", "val")
    before = bert_tok.backend.truncation
    features, cut = featurize_all(task, examples, bert_tok, max_length=64)
    lengths = [len(bert_tok.backend.encode(ex["text"], ex["text_pair"]).ids) for ex in examples]
    assert cut == sum(n > 64 for n in lengths) > 0
    assert all(len(f["input_ids"]) <= 64 for f in features)
    assert bert_tok.backend.truncation == before  # the engine copy carries the truncation setting


def test_tuned_null_threshold():
    task = get_task("squad-v2")
    preds = [{"text": "a", "null_odds": -2.0}, {"text": "b", "null_odds": 1.0}]
    # the sweep improved on answering nothing: its threshold is used as is
    assert task.tuned_threshold({"best_f1": 75.0, "best_f1_thresh": -2.0, "NoAns_total": 1, "total": 2}, preds) == -2.0
    # answering nothing was best (official thresh 0.0 would still answer the first): go below every score
    assert task.tuned_threshold({"best_f1": 50.0, "best_f1_thresh": 0.0, "NoAns_total": 1, "total": 2}, preds) == -3.0


def test_byte_level_tagging_keeps_word_start_markers(refdata, gpt2_tok):
    task = get_task("pos")
    ex = task.read(refdata / "ud_english_ewt", "dev")[1]
    (f,) = task.featurize(ex, gpt2_tok, max_length=128)
    running = gpt2_tok.backend.encode(" " + " ".join(ex["words"])).ids
    assert f["input_ids"] == running  # the same ids as the running text with a leading space
    assert sum(lab != IGNORE_INDEX for lab in f["labels"]) == len(ex["words"])


def test_squad_with_a_byte_level_tokenizer_answers_without_the_leading_space(refdata, gpt2_tok):
    # byte-level offsets include the space before a word (" William"): labels still cover the answer,
    # and the decoded text is exactly the gold answer, as predictions.json should hold it
    task = get_task("squad-v2", doc_stride=16, max_query_length=16)
    examples = task.read(refdata / "squad", "dev")
    features, _ = featurize_all(task, examples, gpt2_tok, max_length=64)
    chosen = {f["example_index"]: i for i, f in enumerate(features) if f["start_positions"] != 0}
    assert any(examples[f["example_index"]]["context"][f["offsets"][f["start_positions"]][0]] == " "
               for f in features if f["start_positions"] != 0)  # the case this test is about occurs
    logits = [_one_hot_logits(f, f["start_positions"], f["end_positions"]) if chosen.get(f["example_index"]) == i
              else (np.full(len(f["input_ids"]), -10.0), np.full(len(f["input_ids"]), -10.0))
              for i, f in enumerate(features)]
    preds = task.postprocess(logits, features, examples)
    for e in chosen:
        assert preds[e]["text"] == examples[e]["answers"][0]
