"""`lmforge serve` on what `lmforge compress` writes: int8 / int8-weight / bf16 and head-pruned models load from
their directories and each route gives the library call on that same compressed model (the batcher's per-layer
KV cache follows a pruned model's head counts)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lmforge.generation import generate

from .conftest import client, load, running


def _compressed(src: Path, out: Path, method: str, *, kernel: str | None = None, prune: bool = False) -> Path:
    from lmforge import Model
    from lmforge.compression import prune as pruning
    from lmforge.nn.quantized import available_kernels

    if kernel is not None and available_kernels(method)[kernel] is not None:
        pytest.skip(f"{method} kernel {kernel}: {available_kernels(method)[kernel]}")
    model = Model.from_pretrained(src)
    if prune:  # layer 0 keeps 1 of 2 heads: the served model has per-layer head counts
        model = pruning.prune(model, heads=[[1], [0, 1]])
    model.quantize(method, kernel=kernel).save_pretrained(out)
    for name in ("vocab.json", "merges.txt", "vocab.txt"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    return out


@pytest.mark.parametrize("method, kernel, prune", [("int8-weight", "int8pack-bf16", False), ("int8", None, True),
                                                   ("bf16", None, False)],
                         ids=["int8-weight", "pruned-int8", "bf16"])
def test_completions_of_a_compressed_decoder_are_its_generate(gpt_dir, tmp_path, method, kernel, prune):
    from lmforge.serving import ServeSettings, create_app

    d = _compressed(gpt_dir, tmp_path / method, method, kernel=kernel, prune=prune)
    model, tok = load(d)
    assert model.config.quantization["method"] == method
    assert model.config.layer_heads == ([1, 2] if prune else None)
    prompts = ["The capital of France is", "Once upon a time there"]
    settings = ServeSettings(model_name="q", max_new_tokens_limit=16, max_batch=4, batch_wait_ms=50)
    with running(create_app(model, tok, settings, model_dir=d)) as url, client(url, None) as http:
        outs = [http.post("/v1/completions", json={"prompt": p, "max_tokens": 8, "temperature": 0}) for p in prompts]
        both = http.post("/v1/completions", json={"prompt": prompts, "max_tokens": 8, "temperature": 0})
    for i, (r, prompt) in enumerate(zip(outs, prompts)):
        assert r.status_code == 200, r.text
        ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
        ref = generate(model, ids, max_new_tokens=8, return_prompt=False, eos_token_id=tok.eos_token_id,
                       return_scores=True)
        want = ref.tokens[0].tolist()
        if ref.stopped[0] == "eos":
            want = want[:want.index(tok.eos_token_id) + 1]
        assert r.json()["choices"][0]["token_ids"] == want
        if method != "bf16":  # a batch of two (left padding) gives the same tokens; bf16 rounding may differ
            assert both.json()["choices"][i]["token_ids"] == r.json()["choices"][0]["token_ids"]


def test_an_int8_encoder_serves_fill_mask_and_embeddings(bert_dir, tmp_path):
    from lmforge.prompting.fill_mask import fill_mask
    from lmforge.serving import ServeSettings, create_app

    d = _compressed(bert_dir, tmp_path / "int8", "int8")
    model, tok = load(d)
    assert model.body.layers[0].attn.qkv.weight.dtype == torch.int8
    text = "the man went to the [MASK]."
    with running(create_app(model, tok, ServeSettings(model_name="q"), model_dir=d)) as url, client(url, None) as http:
        filled = http.post("/v1/fill-mask", json={"input": text, "top_k": 3})
        emb = http.post("/v1/embeddings", json={"input": "a short one", "pooling": "cls"})
    assert filled.status_code == 200 and emb.status_code == 200, (filled.text, emb.text)
    ref = fill_mask(model, tok, text, top_k=3)
    assert [[c["token_id"] for c in m] for m in filled.json()["data"][0]["masks"]] == \
        [[c["token_id"] for c in m] for m in ref]
    with torch.no_grad():
        want = model.body(torch.tensor([tok("a short one")["input_ids"]])).last_hidden_state[0, 0]
    np.testing.assert_allclose(emb.json()["data"][0]["embedding"], want.numpy(), atol=1e-5, rtol=1e-5)
