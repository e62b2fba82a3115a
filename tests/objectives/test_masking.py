"""MLM masking statistics over > 100k real tokens, special tokens, whole words, static vs dynamic."""
from __future__ import annotations

import numpy as np
import pytest

from lmforge.errors import ConfigError
from lmforge.objectives import BatchSource, MaskedLM, MaskingConfig
from lmforge.objectives.mlm import Masker, continuation_table


def masked_sequences(objective, dataset, *, epoch: int = 0, count: int | None = None):
    """(original, masked input, labels) for the first ``count`` sequences of an epoch."""
    ex = objective.examples(dataset)
    n = count or len(ex.ranges)
    for i in range(n):
        e = ex.example(i, seed=0, epoch=epoch)
        yield ex.sequence(i % len(ex.ranges)), e["input_ids"], e["labels"]


def stats(objective, dataset, special: set[int], mask_id: int, count: int | None = None) -> dict[str, float]:
    cand = sel = masked = rand = kept = special_hits = 0
    for orig, inp, lab in masked_sequences(objective, dataset, count=count):
        chosen = lab != -100
        is_special = np.isin(orig, list(special))
        assert np.array_equal(lab[chosen], orig[chosen])
        assert np.array_equal(inp[~chosen], orig[~chosen])  # nothing outside the selection changes
        special_hits += int((chosen & is_special).sum())
        cand += int((~is_special).sum())
        sel += int(chosen.sum())
        masked += int((inp[chosen] == mask_id).sum())
        kept += int((inp[chosen] == orig[chosen]).sum())
        rand += int(((inp[chosen] != mask_id) & (inp[chosen] != orig[chosen])).sum())
        assert not np.isin(inp[chosen & (inp != mask_id)], list(special)).any()  # random ids are not special
    return {"candidates": cand, "selected": sel / cand, "mask": masked / sel, "random": rand / sel,
            "kept": kept / sel, "special_hits": special_hits}


def test_default_masking_statistics(bert_tok, bert_train) -> None:
    s = stats(MaskedLM(tokenizer=bert_tok, seq_len=128), bert_train, set(bert_tok.all_special_ids),
              bert_tok.mask_token_id)
    assert s["candidates"] >= 100_000
    assert s["special_hits"] == 0
    assert abs(s["selected"] - 0.15) <= 0.005, s
    assert abs(s["mask"] - 0.80) <= 0.01 and abs(s["random"] - 0.10) <= 0.01 and abs(s["kept"] - 0.10) <= 0.01, s


def test_configured_probabilities(bert_tok, bert_train) -> None:
    cfg = MaskingConfig(mask_prob=0.3, mask_replace_prob=0.5, random_replace_prob=0.5)
    s = stats(MaskedLM(tokenizer=bert_tok, seq_len=128, masking=cfg), bert_train, set(bert_tok.all_special_ids),
              bert_tok.mask_token_id, count=1200)
    assert s["candidates"] >= 100_000
    assert abs(s["selected"] - 0.30) <= 0.005 and abs(s["mask"] - 0.5) <= 0.01 and abs(s["random"] - 0.5) <= 0.01
    assert s["kept"] < 0.001  # only a random draw equal to the original


def test_max_predictions_caps_each_sequence(bert_tok, bert_train) -> None:
    obj = MaskedLM(tokenizer=bert_tok, seq_len=128, masking=MaskingConfig(max_predictions=5))
    assert max(int((lab != -100).sum()) for _, _, lab in masked_sequences(obj, bert_train, count=200)) == 5


def test_whole_word_masking_takes_all_pieces_of_a_word(bert_tok, bert_train) -> None:
    obj = MaskedLM(tokenizer=bert_tok, seq_len=128, masking=MaskingConfig(whole_word=True))
    cont = continuation_table(bert_tok)
    vocab = bert_tok.get_vocab()
    assert cont[vocab["##ing"]] and not cont[vocab["king"]] and not cont[vocab["[CLS]"]]
    pieces = selected = total = 0
    for orig, _, lab in masked_sequences(obj, bert_train, count=1500):
        chosen = lab != -100
        # a continuation piece is chosen exactly when the piece before it is
        follows = cont[orig[1:]]
        assert np.array_equal(chosen[1:][follows], chosen[:-1][follows])
        pieces += int(follows.sum())
        selected += int(chosen.sum())
        total += int((~np.isin(orig, bert_tok.all_special_ids)).sum())
    assert pieces > 1000  # the corpus has many multi-piece words, so the check above means something
    assert abs(selected / total - 0.15) <= 0.01


def test_special_tokens_never_selected_even_at_high_rate(bert_tok) -> None:
    masker = Masker.from_tokenizer(bert_tok, MaskingConfig(mask_prob=0.99))
    ids = np.array([bert_tok.cls_token_id, 2023, 2003, bert_tok.sep_token_id, 1037, bert_tok.sep_token_id,
                    bert_tok.pad_token_id])
    rng = np.random.default_rng(0)
    for _ in range(200):
        _, labels = masker(ids, rng)
        assert (labels[[0, 3, 5, 6]] == -100).all()


def test_static_masks_repeat_across_epochs_dynamic_do_not(bert_tok, bert_train) -> None:
    static = MaskedLM(tokenizer=bert_tok, seq_len=64, masking=MaskingConfig(mode="static", dupe_factor=3))
    dynamic = MaskedLM(tokenizer=bert_tok, seq_len=64)
    s_src = BatchSource(static, bert_train, batch_size=16, seed=7)
    d_src = BatchSource(dynamic, bert_train, batch_size=16, seed=7)
    n = len(s_src.examples.ranges)
    assert s_src.examples_per_epoch == 3 * n and d_src.examples_per_epoch == n

    def seen(src, epoch, ids):
        return {int(i): src.examples.example(int(i), seed=7, epoch=epoch)["input_ids"].tobytes() for i in ids}

    ids = range(0, 3 * n, 97)
    e0, e1 = seen(s_src, 0, ids), seen(s_src, 1, ids)
    assert e0 == e1  # static: every epoch sees the same masked copies
    copies = [s_src.examples.example(i, seed=7, epoch=0)["input_ids"].tobytes() for i in (5, 5 + n, 5 + 2 * n)]
    assert len(set(copies)) == 3  # ... and the copies of one sequence differ
    assert sorted(s_src.order(0)) == sorted(s_src.order(1)) and not np.array_equal(s_src.order(0), s_src.order(1))
    d0, d1 = seen(d_src, 0, range(0, n, 7)), seen(d_src, 1, range(0, n, 7))
    assert sum(d0[i] == d1[i] for i in d0) <= len(d0) // 50  # dynamic: new masks every epoch


def test_bad_masking_config() -> None:
    with pytest.raises(ConfigError, match="mask_prob"):
        MaskingConfig(mask_prob=1.5)
    with pytest.raises(ConfigError, match="sum to at most 1"):
        MaskingConfig(mask_replace_prob=0.9, random_replace_prob=0.2)
    with pytest.raises(ConfigError, match="'static' or 'dynamic'"):
        MaskingConfig(mode="sometimes")  # type: ignore[arg-type]


def test_continuation_table_for_byte_level_bpe(gpt2_tok) -> None:
    cont = continuation_table(gpt2_tok)
    vocab = gpt2_tok.get_vocab()
    ids = gpt2_tok.backend.encode(" unbelievable tokenization.", add_special_tokens=False).ids
    pieces = [gpt2_tok.backend.id_to_token(i) for i in ids]
    assert pieces[0].startswith("Ġ") and not cont[ids[0]]
    assert any(cont[i] for i in ids)  # multi-piece words continue without the Ġ marker
    assert not cont[vocab["Ġwant"]] and not cont[vocab["."]] and cont[vocab["ing"]]
