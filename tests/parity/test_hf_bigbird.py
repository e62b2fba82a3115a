"""BigBird against HF transformers: ``attention_kind="bigbird"`` = ``BigBirdModel(attention_type="block_sparse")``.

Random HF weights are loaded into lmforge (and lmforge models exported to HF) and the outputs compared at the
real token positions: eval mode at 1024, 2048 and 4096 tokens on a small shape and the bigbird-roberta-base shape
(one layer at 4096: ``slow``), train mode (HF draws its random blocks with numpy seeded by the layer index;
dropout off so only the pattern differs), padding, the short-sequence fallback and every encoder head HF has.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from encoder_cases import AUTO, NUM_LABELS, assert_close, hf_outputs, make_labels

transformers = pytest.importorskip("transformers")
Model = pytest.importorskip("lmforge.models.model").Model

VOCAB = 99
HEADS = {None: "BigBirdModel", "mlm": "BigBirdForMaskedLM", "pretraining": "BigBirdForPreTraining",
         "seq-cls": "BigBirdForSequenceClassification", "token-cls": "BigBirdForTokenClassification",
         "qa": "BigBirdForQuestionAnswering", "choice": "BigBirdForMultipleChoice"}


@pytest.fixture(autouse=True)
def quiet_hf():
    """HF logs a warning for every padded input and fallback; the assertions say what matters."""
    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    yield
    transformers.logging.set_verbosity(before)


def hf_config(**extra: Any) -> Any:
    kw: dict[str, Any] = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                              intermediate_size=37, max_position_embeddings=4096, attention_type="block_sparse",
                              hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, sep_token_id=7)
    kw.update(extra)
    return transformers.BigBirdConfig(**kw)


@torch.no_grad()
def _perturb(model: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=g) * 0.05)


def build_hf(tmp_path: Path, head: str | None = None, **extra: Any) -> Any:
    torch.manual_seed(0)
    if head in NUM_LABELS:
        extra["num_labels"] = NUM_LABELS[head]
    hf = getattr(transformers, HEADS[head])(hf_config(**extra)).eval()
    _perturb(hf)
    hf.save_pretrained(tmp_path)
    return hf


def batch_of(length: int, *, batch: int = 2, pad: int = 0, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ids (no sep token 7 but one, at position 5: a 'question'), the last row right-padded by ``pad``."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, VOCAB, (batch, length), generator=g)
    ids[:, 5] = 7
    mask = torch.ones(batch, length, dtype=torch.long)
    if pad:
        mask[-1, length - pad:] = 0
        ids[-1, length - pad:] = 0
    tt = torch.zeros(batch, length, dtype=torch.long)
    tt[:, 6:] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt.masked_fill(mask == 0, 0)}


def compare_hidden(hf: Any, ours: Any, batch: dict[str, torch.Tensor], what: str, *, atol: float = 2e-5) -> None:
    hf.base_model.set_attention_type("block_sparse")  # HF stays on full attention after a short input
    with torch.no_grad():
        ref = hf(**batch)
        out = ours(**batch)
    real = batch["attention_mask"].bool()
    assert_close(out.last_hidden_state[real], ref.last_hidden_state[real], f"{what}: hidden", atol=atol)
    assert_close(out.pooler_output, ref.pooler_output, f"{what}: pooler", atol=atol)


@pytest.mark.parametrize("length", [1024, 2048, 4096])
def test_block_sparse_eval_small_shape(length: int, tmp_path: Path) -> None:
    hf = build_hf(tmp_path)
    ours = Model.from_pretrained(tmp_path).eval()
    assert ours.config.attention_kind == "bigbird" and ours.config.block_size == 64
    compare_hidden(hf, ours, batch_of(length, batch=2 if length <= 1024 else 1, pad=100), f"eval {length}")


@pytest.mark.parametrize("length", [1024, 800, 333])
def test_block_sparse_train_mode_same_random_blocks(length: int, tmp_path: Path) -> None:
    """Dropout off, train mode: HF draws random blocks (seeded by the layer index); lmforge draws the same.
    1024 takes HF's "old plan" path, 800 and 333 (block 16) its general one."""
    hf = build_hf(tmp_path, block_size=16, num_random_blocks=2).train()
    ours = Model.from_pretrained(tmp_path).train()
    batch = batch_of(length, pad=37)
    compare_hidden(hf, ours, batch, f"train {length}")
    ours.eval()
    with torch.no_grad():  # and the pattern matters: eval mode (no random blocks) gives other outputs
        assert (ours(**batch).last_hidden_state - hf(**batch).last_hidden_state).abs().max() > 1e-3


def test_every_sparse_impl_matches_hf(tmp_path: Path) -> None:
    """The gathered-blocks path, the dense-mask reference and FlexAttention (eager on CPU) give HF's outputs."""
    hf = build_hf(tmp_path, block_size=16, num_random_blocks=2)
    batch = batch_of(400, pad=50)
    for impl in ("blocks", "mask", "flex"):
        ours = Model.from_pretrained(tmp_path, sparse_impl=impl).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # eager flex warns that it is not compiled
            compare_hidden(hf, ours, batch, impl)


def test_short_sequences_fall_back_to_full_attention_and_say_so(tmp_path: Path) -> None:
    """<= (5 + 2r) x block tokens: HF switches to full attention silently; lmforge too, with one warning."""
    hf = build_hf(tmp_path, block_size=16, num_random_blocks=2)  # threshold (5 + 4) x 16 = 144
    ours = Model.from_pretrained(tmp_path).eval()
    assert ours.config.sparse_min_length == 144
    batch = batch_of(144, pad=10)
    with torch.no_grad():
        ref = hf(**batch)
    assert hf.attention_type == "original_full"
    with pytest.warns(UserWarning, match="full \\(dense\\) attention on sequences of at most sparse_min_length=144"):
        out = ours(**batch)
    real = batch["attention_mask"].bool()
    assert_close(out.last_hidden_state[real], ref.last_hidden_state[real], "fallback")
    strict = Model.from_pretrained(tmp_path, sparse_fallback="error").eval()
    with pytest.raises(Exception, match="too few for BigBird's block-sparse pattern"):
        strict(**batch)


@pytest.mark.slow
@pytest.mark.parametrize("length", [4096])
def test_bigbird_roberta_base_shape(length: int, tmp_path: Path) -> None:
    """bigbird-roberta-base's attention shape (H 768, 12 heads, block 64, r 3), one layer to keep it short."""
    hf = build_hf(tmp_path, hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=1,
                  hidden_act="gelu_new")
    ours = Model.from_pretrained(tmp_path).eval()
    compare_hidden(hf, ours, batch_of(length, batch=1), f"base shape {length}", atol=1e-4)


def _compare_heads(head: str | None, hf: Any, ours: Any, batch: dict[str, torch.Tensor]) -> None:
    hf.base_model.set_attention_type("block_sparse")
    with torch.no_grad():
        ref = hf_outputs(head, hf(**batch))
        out = ours(**batch)
        for name, tensor in ref.items():
            if name == "last_hidden_state":
                real = batch["attention_mask"].bool()
                tensor, got = tensor[real], out[name][real]
            else:
                got = out[name]
            assert_close(got, tensor, f"{head}: {name}")
        labels = make_labels(head, {k: v[:3] for k, v in batch.items()})
        if labels and head != "choice":
            sub = {k: v[:3] for k, v in batch.items()}
            assert_close(ours(**sub, **labels).loss, hf(**sub, **labels).loss, f"{head}: loss")


def head_batch(head: str | None) -> dict[str, torch.Tensor]:
    """Three rows of 160 tokens (sparse: > 9 blocks of 16), padded rows; (B, C, L) for choice."""
    batch = batch_of(160, batch=3, pad=20)
    batch["attention_mask"][1, 150:] = 0
    if head == "choice":
        batch = {k: torch.stack([v, v.roll(1, dims=0)], dim=1) for k, v in batch.items()}
    return batch


@pytest.mark.parametrize("head", list(HEADS), ids=[h or "base" for h in HEADS])
def test_heads_load_and_export(head: str | None, tmp_path: Path) -> None:
    hf = build_hf(tmp_path / "hf", head, block_size=16, num_random_blocks=1)
    ours = Model.from_pretrained(tmp_path / "hf").eval()
    assert ours.config.family == "bigbird" and ours.config.head == head
    batch = head_batch(head)
    _compare_heads(head, hf, ours, batch)
    ours.export_hf(tmp_path / "out")
    back, info = getattr(transformers, AUTO[head]).from_pretrained(tmp_path / "out", output_loading_info=True)
    assert type(back).__name__ == HEADS[head]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert back.config.attention_type == "block_sparse" and back.config.block_size == 16
    _compare_heads(head, back.eval(), ours, batch)


def test_qa_head_hides_the_question(tmp_path: Path) -> None:
    """BigBird's QA logits: the question (up to the first sep) at -1e6, [CLS] kept, as HF."""
    build_hf(tmp_path, "qa", block_size=16, num_random_blocks=1)
    ours = Model.from_pretrained(tmp_path).eval()
    assert ours.config.qa_head == "bigbird" and ours.config.sep_token_id == 7
    with torch.no_grad():
        out = ours(**batch_of(160))
    assert (out.start_logits[:, 1:6] < -1e5).all() and (out.start_logits[:, 0] > -1e5).all()
    assert (out.start_logits[:, 6:] > -1e5).all()


def test_preset_exports_as_block_sparse(tmp_path: Path) -> None:
    """The bigbird-roberta-base preset (small sizes) is HF's block-sparse BigBird: same outputs after export."""
    torch.manual_seed(0)
    ours = Model.from_preset("bigbird-roberta-base", head="seq-cls", vocab_size=VOCAB, hidden_size=32, num_layers=2,
                             num_heads=4, intermediate_size=37, block_size=16, num_random_blocks=1, sep_token_id=7,
                             num_labels=3, max_positions=512).eval()
    _perturb(ours)
    ours.export_hf(tmp_path)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert hf.config.attention_type == "block_sparse" and hf.config.hidden_act == "gelu_new"
    _compare_heads("seq-cls", hf, ours, head_batch("seq-cls"))


@pytest.mark.parametrize("length", [1024, 4096, 832, 1600])
def test_random_blocks_are_hfs_own(length: int) -> None:
    """The ported rules against HF's own methods (numpy seeded by the layer index, as HF's forward does)."""
    import numpy as np

    from lmforge import ModelConfig
    from lmforge.nn.attention.bigbird import random_blocks

    hf_cfg = hf_config(num_attention_heads=4)
    attn = transformers.models.big_bird.modeling_big_bird.BigBirdBlockSparseAttention(hf_cfg, seed=3).train()
    np.random.seed(3)
    nb, r = length // 64, 3
    if length in (1024, 3072, 4096):
        ref = [attn._bigbird_block_rand_mask(4096, 4096, 64, 64, r, last_idx=1024)[: nb - 2] for _ in range(4)]
    else:
        plan = attn._get_rand_attn_plan(length, 64, r)
        ref = attn._bigbird_block_rand_mask_with_head(length, length, 64, 64, 4, *plan)
    ours = random_blocks(ModelConfig(family="bigbird", vocab_size=VOCAB, hidden_size=32, num_heads=4,
                                     max_positions=4096, attention_kind="bigbird"),
                         layer=3, length=length, training=True)
    assert np.array_equal(ours, np.stack(ref)) and ours.shape == (4, nb - 2, r)


def test_original_full_is_dense_both_ways(tmp_path: Path) -> None:
    """HF attention_type="original_full" loads as attention_kind="dense" and exports back as it."""
    hf = build_hf(tmp_path / "hf", attention_type="original_full")
    ours = Model.from_pretrained(tmp_path / "hf").eval()
    assert ours.config.attention_kind == "dense"
    batch = batch_of(900, pad=30)
    with torch.no_grad():
        real = batch["attention_mask"].bool()
        assert_close(ours(**batch).last_hidden_state[real], hf(**batch).last_hidden_state[real], "original_full")
    ours.export_hf(tmp_path / "out")
    assert transformers.AutoConfig.from_pretrained(tmp_path / "out").attention_type == "original_full"
