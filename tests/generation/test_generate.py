"""generate(): the KV cache against recomputation, HF transformers' generate on the same random tiny
GPT-2 / GPT-1 weights (greedy, beam, repetition penalty, eos), left padding, seeds, bad input."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from lmforge.errors import InputError
from lmforge.generation import GenerationWarning, generate

transformers = pytest.importorskip("transformers")
Model = pytest.importorskip("lmforge.models.model").Model

VOCAB = 61
PAD = 1  # HF fills finished beams with pad (or eos when pad is 0); keep it nonzero and distinct


def tiny_hf(family: str, path: Path, *, positions: int = 48, seed: int = 0) -> Any:
    """A random tiny HF LM head model with large-ish weights (peaked, varied next-token choices)."""
    torch.manual_seed(seed)
    if family == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=positions, n_embd=32, n_layer=2, n_head=4,
                                      bos_token_id=0, eos_token_id=2, pad_token_id=PAD)
        hf = transformers.GPT2LMHeadModel(cfg)
    else:
        cfg = transformers.OpenAIGPTConfig(vocab_size=VOCAB, n_positions=positions, n_embd=32, n_layer=2, n_head=4)
        hf = transformers.OpenAIGPTLMHeadModel(cfg)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    hf.eval().save_pretrained(path)
    return hf


@pytest.fixture(scope="module", params=["gpt2", "openai-gpt"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    path = tmp_path_factory.mktemp(request.param)
    hf = tiny_hf(request.param, path)
    return hf, Model.from_pretrained(path).eval()


def prompts(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """3 left-padded prompts of lengths 7, 4, 2."""
    ids = torch.randint(3, VOCAB, (3, 7), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :5] = 0
    return ids.masked_fill(mask == 0, PAD), mask


def hf_new(hf: Any, ids: torch.Tensor, mask: torch.Tensor, **kw: Any) -> torch.Tensor:
    out = hf.generate(ids, attention_mask=mask, do_sample=False, pad_token_id=PAD, **kw)
    return out[:, ids.shape[1]:]


@pytest.mark.parametrize("options", [
    dict(),
    dict(repetition_penalty=1.8),
    dict(num_beams=3),
    dict(num_beams=2, repetition_penalty=1.3),
], ids=["greedy", "greedy-repetition", "beam3", "beam2-repetition"])
def test_same_tokens_as_hf_generate(pair: tuple[Any, Any], options: dict[str, Any]) -> None:
    hf, ours = pair
    ids, mask = prompts()
    ref = hf_new(hf, ids, mask, max_new_tokens=12, eos_token_id=None, **options)
    got = generate(ours, ids, attention_mask=mask, max_new_tokens=12, pad_token_id=PAD, return_prompt=False,
                   eos_token_id=[], **options)
    assert torch.equal(got, ref), f"\nlmforge {got}\nHF      {ref}"


def test_eos_defaults_to_the_models_own_as_hf(pair: tuple[Any, Any]) -> None:
    """Neither side is given an eos id: both stop on the model's configured one (HF: generation_config)."""
    hf, ours = pair
    ids, mask = prompts(seed=4)
    free = generate(ours, ids, attention_mask=mask, max_new_tokens=10, pad_token_id=PAD, return_prompt=False,
                    eos_token_id=[])
    eos = int(free[0, 2])  # a token the model really produces early
    saved = hf.generation_config.eos_token_id, ours.config.eos_token_id
    hf.generation_config.eos_token_id, ours.config.eos_token_id = eos, eos
    try:
        ref = hf_new(hf, ids, mask, max_new_tokens=10)
        got = generate(ours, ids, attention_mask=mask, max_new_tokens=10, pad_token_id=PAD, return_prompt=False)
    finally:
        hf.generation_config.eos_token_id, ours.config.eos_token_id = saved
    assert torch.equal(got, ref), f"\nlmforge {got}\nHF      {ref}"
    assert got.shape[1] < free.shape[1] or (got[0, 3:] == PAD).all()  # row 0 really ended at its eos


@pytest.mark.parametrize("num_beams", [1, 3])
def test_eos_ends_rows_as_hf(pair: tuple[Any, Any], num_beams: int) -> None:
    """eos = a token the model really produces early, so rows end at different steps."""
    hf, ours = pair
    ids, mask = prompts(seed=4)
    free = generate(ours, ids, attention_mask=mask, max_new_tokens=10, pad_token_id=PAD, return_prompt=False)
    eos = int(free[0, 2])
    ref = hf_new(hf, ids, mask, max_new_tokens=10, eos_token_id=eos, num_beams=num_beams)
    got = generate(ours, ids, attention_mask=mask, max_new_tokens=10, eos_token_id=eos, pad_token_id=PAD,
                   num_beams=num_beams, return_prompt=False)
    assert torch.equal(got, ref), f"\nlmforge {got}\nHF      {ref}"
    assert (got == eos).any()


def test_cache_equals_recomputation(pair: tuple[Any, Any]) -> None:
    _, ours = pair
    ids, mask = prompts(seed=2)
    cached = generate(ours, ids, attention_mask=mask, max_new_tokens=15, pad_token_id=PAD, return_scores=True)
    full = generate(ours, ids, attention_mask=mask, max_new_tokens=15, pad_token_id=PAD, use_cache=False,
                    return_scores=True)
    assert torch.equal(cached.tokens, full.tokens)
    torch.testing.assert_close(cached.scores, full.scores, atol=1e-5, rtol=0)


def test_left_padded_row_equals_the_row_alone(pair: tuple[Any, Any]) -> None:
    _, ours = pair
    ids, mask = prompts(seed=3)
    batch = generate(ours, ids, attention_mask=mask, max_new_tokens=8, return_prompt=False)
    alone = generate(ours, ids[2:, 5:], max_new_tokens=8, return_prompt=False)
    assert torch.equal(batch[2:], alone)


def test_sampling_seed_reproduces(pair: tuple[Any, Any]) -> None:
    _, ours = pair
    ids, mask = prompts()
    kw = dict(attention_mask=mask, max_new_tokens=20, do_sample=True, top_k=10, top_p=0.9, temperature=1.5)
    a = generate(ours, ids, seed=7, **kw)
    b = generate(ours, ids, seed=7, **kw)
    c = generate(ours, ids, seed=8, **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sampling_respects_top_k(pair: tuple[Any, Any]) -> None:
    """With top_k=1 sampling is greedy whatever the seed."""
    _, ours = pair
    ids, mask = prompts()
    greedy = generate(ours, ids, attention_mask=mask, max_new_tokens=10)
    for seed in (0, 1):
        assert torch.equal(generate(ours, ids, attention_mask=mask, max_new_tokens=10, do_sample=True, top_k=1,
                                    seed=seed), greedy)


def test_model_generate_method(pair: tuple[Any, Any]) -> None:
    _, ours = pair
    ids, mask = prompts()
    assert torch.equal(ours.generate(ids, attention_mask=mask, max_new_tokens=5),
                       generate(ours, ids, attention_mask=mask, max_new_tokens=5))


def test_position_limit_stops_and_says_so(tmp_path: Path) -> None:
    tiny_hf("gpt2", tmp_path, positions=16)
    ours = Model.from_pretrained(tmp_path).eval()
    ids = torch.randint(3, VOCAB, (1, 10))
    with pytest.warns(GenerationWarning, match="stops after 6 new tokens"):
        out = generate(ours, ids, max_new_tokens=50, return_scores=True)
    assert out.tokens.shape == (1, 6) and out.stopped == ["position_limit"]
    with pytest.raises(InputError, match="context is 16 positions"):
        generate(ours, torch.randint(3, VOCAB, (1, 16)), max_new_tokens=2)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        out = generate(ours, torch.randint(3, VOCAB, (1, 40)), max_new_tokens=4, truncate_prompt=True,
                       return_prompt=False)
    assert out.shape == (1, 4)


def test_bad_inputs(tmp_path: Path) -> None:
    tiny_hf("gpt2", tmp_path)
    ours = Model.from_pretrained(tmp_path).eval()
    ids = torch.randint(3, VOCAB, (2, 5))
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with pytest.raises(InputError, match="LEFT-padded"):
        generate(ours, ids, attention_mask=right, max_new_tokens=3)
    with pytest.raises(InputError, match="temperature"):
        generate(ours, ids, max_new_tokens=3, do_sample=True, temperature=0)
    with pytest.raises(InputError, match="stop strings need the tokenizer"):
        generate(ours, ids, max_new_tokens=3, stop=["\n"])
    classifier = Model.from_pretrained(tmp_path, head="seq-cls", num_labels=2)
    with pytest.raises(InputError, match="has head 'seq-cls'"):
        generate(classifier, ids, max_new_tokens=3)
