"""generate(..., compile=...): the fixed-shape decode step (static cache, key mask, in-place inputs) gives the
eager loop's tokens for greedy, seeded sampling, padded batches and beam search; torch.compile on CPU; CUDA
graphs when a GPU is there; bad settings."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch

from lmforge.errors import InputError
from lmforge.generation import generate, static
from lmforge.models.model import Model
from lmforge.generation.static import CAPACITY_STEP, StaticDecoder

CUDA = torch.cuda.is_available()


def tiny_model(device: str = "cpu") -> Model:
    torch.manual_seed(0)
    m = Model.from_preset("gpt-tiny", head="clm", vocab_size=97, max_positions=300).eval()
    with torch.no_grad():  # larger weights: peaked, varied next-token choices
        for p in m.parameters():
            p.add_(torch.randn(p.shape) * 0.2)
    return m.to(device)


@pytest.fixture(scope="module")
def model() -> Model:
    return tiny_model()


def prompts(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, 97, (3, 10), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # a left-padded row
    mask[2, :1] = 0
    return ids.to(device), mask.to(device)


CASES = {  # name -> generate() keyword arguments
    "greedy": {"max_new_tokens": 24},
    "sample": {"max_new_tokens": 24, "do_sample": True, "top_k": 20, "top_p": 0.9, "temperature": 0.8, "seed": 3},
    "beam": {"max_new_tokens": 12, "num_beams": 3, "repetition_penalty": 1.3},
}


@pytest.fixture
def uncompiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """compile=True runs the fixed-shape step without torch.compile (the step's own logic, in seconds)."""
    monkeypatch.setattr(static, "compiled_step", lambda: static.decode_step)


@pytest.mark.parametrize("case", list(CASES))
def test_fixed_shape_step_gives_the_eager_tokens(model: Model, uncompiled: None, case: str) -> None:
    ids, mask = prompts()
    eager = generate(model, ids, attention_mask=mask, return_scores=True, **CASES[case])
    static = generate(model, ids, attention_mask=mask, return_scores=True, compile=True, **CASES[case])
    assert torch.equal(eager.tokens, static.tokens)
    assert eager.tokens.shape[1] == CASES[case]["max_new_tokens"]
    torch.testing.assert_close(eager.scores, static.scores, atol=1e-4, rtol=1e-4)
    # and without padding (positions from the cache length instead of the mask)
    assert torch.equal(generate(model, ids, **CASES[case]), generate(model, ids, compile=True, **CASES[case]))


def test_static_cache_shape_and_reorder(model: Model) -> None:
    decoder = StaticDecoder(model, model.body.embeddings.word.weight, mode="compile")
    cache = decoder.new_cache(batch=2, capacity=40)
    assert cache.capacity == CAPACITY_STEP  # rounded up: nearby lengths share one compiled step
    assert decoder.new_cache(batch=2, capacity=290).capacity == 300  # never past the position table
    assert all(float(t.abs().sum()) == 0 for t in (*cache.keys, *cache.values))  # zeroed, not garbage
    cache.keys[0][0].fill_(1.0)
    cache.keys_mask[0, :3] = True
    cache.reorder(torch.tensor([0, 0]))
    assert bool(cache.keys[0][1].eq(1.0).all()) and cache.keys_mask[1, :3].all() and not cache.keys_mask[1, 3:].any()


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile on CPU needs a C compiler (cc / gcc) for Inductor's kernels")
def test_torch_compile_on_cpu(model: Model) -> None:
    ids, mask = prompts()
    eager = generate(model, ids, attention_mask=mask, max_new_tokens=20)
    assert torch.equal(eager, generate(model, ids, attention_mask=mask, max_new_tokens=20, compile=True))


def test_one_row_linears_become_reductions() -> None:
    """The compiled step's graph rewrite: a linear of one float32 CPU row -> mul + sum (+ bias), the same
    numbers; linears of several rows are left alone."""
    import torch._dynamo

    seen = []

    def keep(gm, inputs):
        seen.append((gm, inputs))
        return gm.forward

    lin, w = torch.nn.Linear(16, 8), torch.randn(8, 16)
    for rows, rewritten in ((1, 2), (3, 0)):
        torch._dynamo.reset()
        torch.compile(lambda x: lin(x) + torch.nn.functional.linear(x, w), backend=keep, fullgraph=True)(
            torch.randn(1, rows, 16))
        gm, inputs = seen[-1]
        before = gm(*inputs)
        assert static.one_row_linears_as_reductions(gm) == rewritten
        assert torch.allclose(gm(*inputs)[0], before[0], atol=1e-5)
        assert any(n.target in static._LINEARS for n in gm.graph.nodes) == (not rewritten)
    torch._dynamo.reset()


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile on CPU needs a C compiler (cc / gcc) for Inductor's kernels")
def test_torch_compile_one_row_is_eager(model: Model) -> None:
    """One row: the compiled step runs the rewritten products (Inductor's GEMV); same tokens as eager."""
    ids, _ = prompts()
    eager = generate(model, ids[:1], max_new_tokens=20)
    assert torch.equal(eager, generate(model, ids[:1], max_new_tokens=20, compile=True))


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile on CPU needs a C compiler (cc / gcc) for Inductor's kernels")
def test_past_the_recompile_limit_decodes_uncompiled(model: Model) -> None:
    """A fullgraph compile raises once torch's recompile limit is reached; generate warns and decodes with
    the uncompiled step instead of failing (every new batch size compiles the step once more)."""
    import torch._dynamo

    ids, mask = prompts()
    generate(model, ids, attention_mask=mask, max_new_tokens=20, compile=True)  # at least one compiled shape
    two = ids[:2], mask[:2]  # a new batch size: would need one more compile
    eager = generate(model, two[0], attention_mask=two[1], max_new_tokens=20)
    with torch._dynamo.config.patch(recompile_limit=1), pytest.warns(UserWarning, match="recompile_limit"):
        out = generate(model, two[0], attention_mask=two[1], max_new_tokens=20, compile=True)
    assert torch.equal(out, eager)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (CUDA graph capture)")
@pytest.mark.parametrize("mode", ["graph", True])
@pytest.mark.parametrize("case", list(CASES))
def test_cuda_graph_modes(mode: bool | str, case: str) -> None:
    m = tiny_model("cuda")
    ids, mask = prompts("cuda")
    eager = generate(m, ids, attention_mask=mask, **CASES[case])
    assert torch.equal(eager, generate(m, ids, attention_mask=mask, compile=mode, **CASES[case]))
    again = generate(m, ids, attention_mask=mask, compile=mode, **CASES[case])  # a second call re-captures
    assert torch.equal(eager, again)


def test_bad_settings(model: Model) -> None:
    ids, _ = prompts()
    with pytest.raises(InputError, match="compile must be False, True or 'graph'"):
        generate(model, ids, max_new_tokens=2, compile="fast")
    with pytest.raises(InputError, match="needs the KV cache"):
        generate(model, ids, max_new_tokens=2, compile=True, use_cache=False)
    with pytest.raises(InputError, match="do not combine"):
        generate(model, ids, max_new_tokens=2, compile=True, pack_weights=True)
    if not CUDA:
        with pytest.raises(InputError, match="needs the model on a CUDA device"):
            generate(model, ids, max_new_tokens=2, compile="graph")


def test_compile_needs_a_lmforge_decoder() -> None:
    class OtherLM(torch.nn.Module):  # a causal LM that is not a lmforge Model (no lmforge body / LM weight)
        config = SimpleNamespace(head="clm", causal=True, max_positions=32)

        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(4, 4)

    with pytest.raises(InputError, match="lmforge decoder models"):
        generate(OtherLM(), torch.tensor([[1, 2, 3]]), max_new_tokens=2, compile=True)
