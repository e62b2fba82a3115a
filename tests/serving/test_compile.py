"""`lmforge serve --compile`: completions decode through the torch.compile'd step (generation.static.BatchStep),
compiled at start-up ("all": for one row and for several; "auto" on a CPU float32 model: one row, the other
steps eager); a greedy or seeded completion gives lmforge.generate's tokens (streamed too), batches of
changing size and cache width reuse the start-up graphs (no request pays a compile), torch's recompile limit
falls back to the eager step with one log line, and settings that cannot work are refused with one message
(exit 2). The compiles make this module slow (~15-50 s each on the shared 2-core machine)."""
from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from lmforge.errors import ConfigError
from lmforge.generation import static

from .conftest import KEY, client, load, running, sse
from .test_app import complete, reference


def graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compiled(gpt_dir):
    """gpt-tiny served with compile="all" (the warm-up compiles twice, in the fixture)."""
    from lmforge.serving import ServeSettings, create_app

    import torch

    # the compiled step guards on torch's thread count: warm up under the one thread the tests run with
    # (conftest's autouse fixture sets it per test, after this module-scoped fixture)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tok = load(gpt_dir)
    settings = ServeSettings(model_name="gpt-tiny", api_key=KEY, max_new_tokens_limit=40, max_batch=8,
                             batch_wait_ms=20, compile="all")
    try:
        app = create_app(model, tok, settings, model_dir=gpt_dir)
        after_warm_up = graphs()
        with running(app) as url:
            with client(url) as http:
                yield {"url": url, "http": http, "model": model, "tok": tok, "graphs": after_warm_up}
    finally:
        torch.set_num_threads(before)


def test_greedy_seeded_and_streamed_completions_are_generate(compiled):
    out = complete(compiled, prompt="The capital of France is", max_tokens=12, temperature=0)["choices"][0]
    assert out["token_ids"] == reference(compiled, "The capital of France is", max_new_tokens=12)
    body = dict(prompt="Once upon a time", max_tokens=10, temperature=0.8, top_p=0.9, top_k=50, seed=7, n=2)
    for i, choice in enumerate(complete(compiled, **body)["choices"]):  # choice i samples with seed + i
        assert choice["token_ids"] == reference(compiled, "Once upon a time", max_new_tokens=10, do_sample=True,
                                                temperature=0.8, top_p=0.9, top_k=50, seed=7 + i)
    with compiled["http"].stream("POST", "/v1/completions",
                                 json=dict(prompt="One two three", max_tokens=15, temperature=0, stream=True)) as r:
        events = sse(r.iter_lines())
    assert events[-1] == "[DONE]" and len(events) >= 8
    streamed = "".join(e["choices"][0]["text"] for e in events[:-1])
    assert streamed == compiled["tok"].decode(reference(compiled, "One two three", max_new_tokens=15))


def test_changing_batches_reuse_the_start_up_graphs(compiled):
    """12 concurrent clients of different lengths: rows join and leave, the batch and its cache width change
    every few steps; every answer is generate's, and nothing was compiled after start-up."""
    prompts = [f"Item {i}: a {w}" for i, w in enumerate("red blue green old new big small far near hot cold dry".split())]

    def ask(i: int) -> tuple[int, list[int]]:
        return i, complete(compiled, prompt=prompts[i], max_tokens=3 + (i * 5) % 17, temperature=0)["choices"][0][
            "token_ids"]

    with ThreadPoolExecutor(12) as pool:
        answers = dict(pool.map(ask, range(12)))
    for i, got in answers.items():
        assert got == reference(compiled, prompts[i], max_new_tokens=3 + (i * 5) % 17), prompts[i]
    assert graphs() == compiled["graphs"]  # the start-up graphs served every batch size and width
    text = compiled["http"].get("/metrics").text
    several = [line for line in text.splitlines() if line.startswith('lmforge_batch_rows_bucket{kind="decode",le="1"}')]
    total = [line for line in text.splitlines() if line.startswith('lmforge_batch_rows_count{kind="decode"}')]
    assert int(several[0].split()[-1]) < int(total[0].split()[-1])  # some steps ran several rows


def test_auto_compiles_the_one_row_step_on_cpu(gpt_dir, monkeypatch):
    """On a CPU float32 model "auto" compiles only the one-row step (Inductor's GEMV); steps of several rows
    run eagerly through the packed GEMMs. Alone or together, every request gets generate's tokens."""
    from lmforge.serving import Batcher, CompletionJob

    model, tok = load(gpt_dir)
    before = graphs()
    batcher = Batcher(model, tok, max_batch=4, wait_ms=100, compile=True)
    assert batcher.decoder.compiled_rows == 1 and batcher.warmup_seconds > 0 and graphs() <= before + 1
    rows = []
    call = static.BatchStep.__call__

    def counted(self, token, *args):
        rows.append(token.shape[0])
        return call(self, token, *args)

    monkeypatch.setattr(static.BatchStep, "__call__", counted)
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in ("alone here", "two", "and three")]
    results: dict[int, list[int]] = {}
    ended = threading.Semaphore(0)

    def sink(i):
        def put(event):
            if event[0] == "done":
                results[i] = event[1]["token_ids"]
                ended.release()
        return put

    batcher.start()
    try:
        batcher.submit(CompletionJob(sink=sink(0), prompt=prompts[0], max_new=6))
        assert ended.acquire(timeout=30)
        assert rows == [1] * 5  # the prefill made the first token, the compiled step the other five
        rows.clear()
        for i in (1, 2):  # together: two rows, eager steps
            batcher.submit(CompletionJob(sink=sink(i), prompt=prompts[i], max_new=6))
        assert ended.acquire(timeout=30) and ended.acquire(timeout=30)
    finally:
        batcher.stop()
    assert rows == [] and graphs() <= before + 1
    ref = {"tok": tok, "model": model}
    for i, prompt in enumerate(("alone here", "two", "and three")):
        assert results[i] == reference(ref, prompt, max_new_tokens=6)


def test_past_the_recompile_limit_it_decodes_eagerly_after_one_log_line(gpt_dir, monkeypatch, caplog):
    from lmforge.serving import Batcher, CompletionJob

    error = static._recompile_limit_errors()[0]

    def refuse(self):
        def step(*args):
            raise error("limit")
        return step

    monkeypatch.setattr(static.BatchStep, "_step_fn", refuse)
    model, tok = load(gpt_dir)
    with caplog.at_level(logging.WARNING, logger="lmforge.serve"):
        batcher = Batcher(model, tok, max_batch=4, wait_ms=0, compile="all")
    assert not batcher.decoder.compiled.active
    done = []
    prompt = tok("hello there", add_special_tokens=False)["input_ids"]
    batcher.start()
    try:
        for _ in range(2):
            ended = threading.Event()
            batcher.submit(CompletionJob(sink=lambda e, ended=ended: (done.append(e), e[0] == "done" and ended.set()),
                                         prompt=prompt, max_new=8))
            assert ended.wait(30)
    finally:
        batcher.stop()
    ref = reference({"tok": tok, "model": model}, "hello there", max_new_tokens=8)
    assert [e[1]["token_ids"] for e in done if e[0] == "done"] == [ref, ref]
    lines = [r for r in caplog.records if r.name == "lmforge.serve"]
    assert len(lines) == 1 and "recompile_limit" in lines[0].getMessage()


def test_bad_combinations_are_refused(gpt_dir, bert_dir, tmp_path, capsys):
    from lmforge import cli
    from lmforge.serving import ServeSettings, create_app

    model, tok = load(bert_dir)
    with pytest.raises(ConfigError, match="--compile speeds up completions, which this model cannot serve"):
        create_app(model, tok, ServeSettings(compile=True))
    assert cli.main(["serve", "--model", str(bert_dir), "--compile", "--port", "0"]) == 2  # "auto"
    err = capsys.readouterr().err
    assert "--compile speeds up completions" in err and "leave --compile out" in err
    model, tok = load(gpt_dir)
    with pytest.raises(ConfigError, match="compile must be False, True / 'auto' or 'all'"):
        create_app(model, tok, ServeSettings(compile="fast"))
    model = model.quantize("int8")
    with pytest.raises(ConfigError, match="int8 model decodes with compile=False.*serve this model without --compile"):
        create_app(model, tok, ServeSettings(compile=True))
    assert torch.is_grad_enabled()
