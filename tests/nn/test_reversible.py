"""Reformer's chunked feed-forward and reversible residual layers (lmforge/nn/block.py, nn/reversible.py):
chunked = unchunked; the reversible backward (inputs recomputed from outputs, dropout replayed from saved
generator states) gives the gradients of the same two-stream stack run with stored activations."""
from __future__ import annotations

import pytest
import torch

from lmforge import Model, ModelConfig
from lmforge.errors import ConfigError
from lmforge.nn.reversible import run_plain, run_reversible


def config(**kw) -> ModelConfig:
    fields = dict(family="custom", vocab_size=50, hidden_size=16, num_layers=3, num_heads=2, max_positions=64,
                  norm_placement="pre", causal=True, type_vocab_size=0, embedding_norm=False, pad_token_id=None,
                  head="clm", tie_word_embeddings=False, reversible=True, hidden_dropout=0.2, attention_dropout=0.2)
    return ModelConfig(**{**fields, **kw})


def test_chunked_feed_forward_equals_unchunked():
    torch.manual_seed(0)
    m = Model(config(reversible=False, ff_chunk_size=0)).eval()
    chunked = Model(config(reversible=False, ff_chunk_size=3)).eval()
    chunked.load_state_dict(m.state_dict())
    ids = torch.randint(0, 50, (2, 17))  # 17 = 5 chunks of 3 and a last one of 2
    torch.testing.assert_close(chunked(ids).logits, m(ids).logits, atol=1e-6, rtol=1e-6)
    x = torch.randn(2, 17, 16, dtype=torch.float64)
    mlp = chunked.body.layers[0].mlp.double()
    assert mlp.chunk_size == 3
    torch.testing.assert_close(mlp(x), mlp.fc2(mlp.act(mlp.fc1(x))), atol=1e-15, rtol=1e-12)  # GEMM blocking


def grads(model: Model, loss_fn) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss_fn().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("groups,kind", [(None, "dense"), (1, "dense"), (None, "local")])
def test_reversible_gradients_equal_the_stored_activation_stack(groups, kind):
    """float64, dropout on: the reversible backward = autograd through the same math (run_plain), for every
    parameter and the embeddings; with layer sharing too (a stored layer applied three times)."""
    torch.manual_seed(0)
    m = Model(config(num_layer_groups=groups, attention_kind=kind, local_chunk_length=4)).double().train()
    ids = torch.randint(0, 50, (2, 12))
    blocks = [m.body.layers[m.config.layer_index(i)] for i in range(m.config.num_layers)]
    mask = m.body.attention_mask(None, 2, 12, 0, torch.device("cpu"))

    def loss(reversible: bool):
        def run():
            torch.manual_seed(1)  # the same dropout masks in both runs
            x = m.body.embeddings(ids, position_ids=torch.arange(12)[None].expand(2, -1))
            if reversible:
                y1, y2 = run_reversible(blocks, x, x, mask=mask)
            else:
                y = run_plain(blocks, x, x, mask=mask)
                y1, y2 = y.y1, y.y2
            w = torch.linspace(-1, 1, 32, dtype=torch.float64)
            return (torch.cat([y1, y2], -1) * w).sin().sum()
        return run

    plain = grads(m, loss(False))
    rev = grads(m, loss(True))
    assert plain.keys() == rev.keys() and len(plain) == len(list(m.body.parameters())) - 2  # not final_norm
    for name in plain:
        torch.testing.assert_close(rev[name], plain[name], atol=1e-10, rtol=1e-9, msg=name)
    # the dropout really was on: another seed gives other gradients
    torch.manual_seed(5)
    assert not torch.allclose(grads(m, lambda: m(ids, labels=ids).loss)["body.layers.0.mlp.fc1.weight"],
                              grads(m, lambda: m(ids, labels=ids).loss)["body.layers.0.mlp.fc1.weight"])


def test_reversible_model_trains_and_evaluates_the_same_function():
    """Through the Model: training mode uses the reversible function; with dropout 0 its output equals the
    evaluation (plain) path, and the generator is left where a stored-activation run leaves it."""
    torch.manual_seed(0)
    m = Model(config(hidden_dropout=0.0, attention_dropout=0.0)).train()
    ids = torch.randint(0, 50, (2, 10))
    out = m(ids, labels=ids)
    out.loss.backward()
    with torch.no_grad():
        ref = m(ids, labels=ids)
    torch.testing.assert_close(out.loss, ref.loss)
    assert out.logits is None or out.logits.shape[-1] == 50
    assert m.body(ids).last_hidden_state.shape == (2, 10, 32)  # both streams, LayerNorm over 2H
    assert all(p.grad is not None for p in m.parameters())


def test_reversible_bad_configs():
    with pytest.raises(ConfigError, match="norm_placement='pre'"):
        config(norm_placement="post")
    with pytest.raises(ConfigError, match="tie_word_embeddings=False"):
        config(tie_word_embeddings=True)
    with pytest.raises(ConfigError, match="heads clm, mlm and token-cls"):
        config(head="seq-cls")


def test_reversible_lsh_encoder_mlm_rows_and_padding():
    """An MLM training step (only the labelled rows computed at the end, the length padded to the chunk) gives
    the loss of the full evaluation forward; the MLM head reads the 2H-wide output."""
    torch.manual_seed(0)
    m = Model(config(causal=False, head="mlm", attention_pattern=["lsh", "local"], lsh_chunk_length=8,
                     local_chunk_length=4, num_buckets=4, hash_seed=2, hidden_dropout=0.0, attention_dropout=0.0,
                     num_layers=2, pad_token_id=0))
    ids = torch.randint(1, 50, (2, 21))
    labels = torch.full_like(ids, -100)
    labels[:, ::3] = ids[:, ::3]
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # padded 21 -> 24
        train_loss = m.train()(ids, labels=labels).loss
        train_loss.backward()
        with torch.no_grad():
            eval_loss = m.eval()(ids, labels=labels).loss
    torch.testing.assert_close(train_loss, eval_loss, atol=1e-5, rtol=1e-5)
    assert m.head.mlm.dense.weight.grad is not None and m.body.layers[0].attn.qk.weight.grad is not None
