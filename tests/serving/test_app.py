"""Each route of `lmforge serve` against the library call it wraps, on the real server over loopback:
completions == lmforge.generate (greedy, seeded sampling, n choices, stop strings, beam search), streaming
order and completeness, concurrent clients get their own outputs, embeddings == the body's pooled output,
fill-mask == lmforge.fill_mask, classify == the fine-tuned head (qa: == the squad task's own decoding)."""
from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from lmforge.generation import generate

from .conftest import client, load, running, sse


def reference(gpt, prompt: str, **kw) -> list[int]:
    """lmforge.generate's new tokens for one prompt alone (eos = GPT-2's <|endoftext|>)."""
    tok, model = gpt["tok"], gpt["model"]
    ids = torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])
    out = generate(model, ids, return_prompt=False, eos_token_id=tok.eos_token_id, return_scores=True, **kw)
    tokens = out.tokens[0].tolist()
    if out.stopped[0] == "eos":
        tokens = tokens[:tokens.index(tok.eos_token_id) + 1]
    return tokens


def complete(gpt, **body):
    r = gpt["http"].post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_greedy_completion_is_generate(gpt):
    out = complete(gpt, prompt="The capital of France is", max_tokens=12, temperature=0)
    ref = reference(gpt, "The capital of France is", max_new_tokens=12)
    choice = out["choices"][0]
    assert choice["token_ids"] == ref
    assert choice["text"] == gpt["tok"].decode(ref)
    assert choice["finish_reason"] == "length"
    assert out["object"] == "text_completion" and out["model"] == "gpt-tiny"
    n_prompt = len(gpt["tok"]("The capital of France is", add_special_tokens=False)["input_ids"])
    assert out["usage"] == {"prompt_tokens": n_prompt, "completion_tokens": 12, "total_tokens": n_prompt + 12}


def test_seeded_sampling_and_n_choices_are_generate(gpt):
    body = dict(prompt="Once upon a time", max_tokens=10, temperature=0.8, top_p=0.9, top_k=50, seed=7, n=3)
    out = complete(gpt, **body)
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    for i, choice in enumerate(out["choices"]):  # choice i samples with seed + i
        ref = reference(gpt, "Once upon a time", max_new_tokens=10, do_sample=True, temperature=0.8, top_p=0.9,
                        top_k=50, seed=7 + i)
        assert choice["token_ids"] == ref
    assert out["choices"][0]["token_ids"] != out["choices"][1]["token_ids"]
    again = complete(gpt, **body)  # same seed, same text
    assert [c["text"] for c in again["choices"]] == [c["text"] for c in out["choices"]]


def test_repetition_penalty_and_prompt_lists(gpt):
    out = complete(gpt, prompt=["Hello", "A B C"], max_tokens=6, temperature=0, repetition_penalty=1.5)
    for choice, prompt in zip(out["choices"], ["Hello", "A B C"], strict=True):
        assert choice["token_ids"] == reference(gpt, prompt, max_new_tokens=6, repetition_penalty=1.5)


def test_stop_string_ends_the_choice_as_the_cli_does(gpt):
    from lmforge.recipes.completion import complete as cli_complete

    free = complete(gpt, prompt="Hello", max_tokens=10, temperature=0)["choices"][0]["text"]
    stop = free[len(free) // 2: len(free) // 2 + 2]
    assert stop.strip(), free
    out = complete(gpt, prompt="Hello", max_tokens=10, temperature=0, stop=[stop])["choices"][0]
    assert out["finish_reason"] == "stop" and stop not in out["text"] and free.startswith(out["text"])
    options = dict(max_new_tokens=10, do_sample=False, temperature=1.0, top_k=0, top_p=1.0, num_beams=1,
                   repetition_penalty=1.0, seed=None, truncate_prompt=False, compile=False)
    record = cli_complete(gpt["model"], gpt["tok"], ["Hello"], options, stop=[stop], stream=False, json_out=True)[0]
    assert out["text"] == record["completion"]


def test_beam_search_extension_is_generate(gpt):
    out = complete(gpt, prompt="The cat", max_tokens=8, num_beams=3)["choices"][0]
    assert out["token_ids"] == reference(gpt, "The cat", max_new_tokens=8, num_beams=3)


def test_stream_delivers_every_token_in_order_then_done(gpt):
    body = dict(prompt="One two three", max_tokens=15, temperature=0.7, seed=3, stream=True,
                stream_options={"include_usage": True})
    with gpt["http"].stream("POST", "/v1/completions", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse(r.iter_lines())
    assert events[-1] == "[DONE]"
    *chunks, usage = events[:-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 15
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"][0] == {"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}
    streamed = "".join(c["choices"][0]["text"] for c in chunks)
    ref = reference(gpt, "One two three", max_new_tokens=15, do_sample=True, temperature=0.7, seed=3)
    assert streamed == gpt["tok"].decode(ref)
    assert len({c["id"] for c in chunks}) == 1
    assert len(chunks) >= 8  # token by token, not one blob at the end


def test_concurrent_clients_get_their_own_outputs(gpt):
    """16 clients at once (streaming and not, different lengths, so rows leave and join mid-batch): each
    answer is what generate gives that prompt alone."""
    prompts = [f"Story number {i}: the {w}" for i, w in enumerate(
        "dog cat bird fish king queen river stone wind fire snow rain moon sun tree road".split())]

    def ask(i: int) -> tuple[int, list[int] | str]:
        body = dict(prompt=prompts[i], max_tokens=4 + (i * 7) % 19, temperature=0)
        if i % 2:
            with gpt["http"].stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
                events = sse(r.iter_lines())
            return i, "".join(e["choices"][0]["text"] for e in events[:-1])
        return i, complete(gpt, **body)["choices"][0]["token_ids"]

    with ThreadPoolExecutor(16) as pool:
        answers = dict(pool.map(ask, range(16)))
    for i, got in answers.items():
        ref = reference(gpt, prompts[i], max_new_tokens=4 + (i * 7) % 19)
        assert got == (gpt["tok"].decode(ref) if i % 2 else ref), prompts[i]
    text = gpt["http"].get("/metrics").text
    rows = [line for line in text.splitlines() if line.startswith('lmforge_batch_rows_bucket{kind="decode",le="1"}')]
    total = [line for line in text.splitlines() if line.startswith('lmforge_batch_rows_count{kind="decode"}')]
    assert int(rows[0].split()[-1]) < int(total[0].split()[-1])  # some decode steps ran several rows


def test_embeddings_are_the_pooled_body_output(gpt, bert):
    for served in (gpt, bert):
        model, tok = served["model"], served["tok"]
        texts = ["a short one", "a somewhat longer sentence with more words in it", "x"]
        for pooling in ("mean", "cls", "last"):
            r = served["http"].post("/v1/embeddings", json={"input": texts, "pooling": pooling})
            assert r.status_code == 200, r.text
            data = r.json()["data"]
            for i, text in enumerate(texts):
                ids = torch.tensor([tok(text)["input_ids"]])
                with torch.no_grad():
                    hidden = model.body(ids).last_hidden_state[0]  # alone, unpadded
                want = {"mean": hidden.mean(0), "cls": hidden[0], "last": hidden[-1]}[pooling]
                assert data[i]["index"] == i
                np.testing.assert_allclose(data[i]["embedding"], want.numpy(), atol=1e-5, rtol=1e-5)
    r = bert["http"].post("/v1/embeddings", json={"input": "a b", "normalize": True, "encoding_format": "base64"})
    vector = np.frombuffer(base64.b64decode(r.json()["data"][0]["embedding"]), dtype="<f4")
    plain = np.array(bert["http"].post("/v1/embeddings", json={"input": "a b"}).json()["data"][0]["embedding"])
    np.testing.assert_allclose(vector, plain / np.linalg.norm(plain), atol=1e-6)
    assert r.json()["usage"]["prompt_tokens"] == len(bert["tok"]("a b")["input_ids"])


def test_fill_mask_is_the_library_call(bert):
    from lmforge.prompting.fill_mask import fill_mask

    texts = ["the man went to the [MASK].", "paris is the [MASK] of [MASK] and a much longer text around it."]
    r = bert["http"].post("/v1/fill-mask", json={"input": texts, "top_k": 4})
    assert r.status_code == 200, r.text
    for i, text in enumerate(texts):
        ref = fill_mask(bert["model"], bert["tok"], text, top_k=4)
        got = r.json()["data"][i]["masks"]
        assert [[c["token_id"] for c in m] for m in got] == [[c["token_id"] for c in m] for m in ref]
        assert [[c["sequence"] for c in m] for m in got] == [[c["sequence"] for c in m] for m in ref]
        np.testing.assert_allclose([c["score"] for m in got for c in m], [c["score"] for m in ref for c in m],
                                   atol=1e-5)


@pytest.fixture(scope="module")
def heads(bert_dir, tmp_path_factory):
    """bert-tiny checkpoints with seq-cls (task.json labels), token-cls and qa heads."""
    import shutil

    from lmforge import Model

    out = {}
    for head, labels in (("seq-cls", ["negative", "neutral", "positive"]), ("token-cls", ["O", "B-X", "I-X"]),
                         ("qa", None)):
        d = tmp_path_factory.mktemp(head)
        torch.manual_seed(1)
        Model.from_pretrained(bert_dir, head=head, num_labels=len(labels or [0, 0])).save_pretrained(d)
        shutil.copy(bert_dir / "vocab.txt", d / "vocab.txt")
        if labels:
            (d / "task.json").write_text(json.dumps({"task": "custom", "labels": labels}))
        out[head] = (d, labels)
    return out


def test_classify_heads(heads):
    from lmforge.recipes.finetune import predict
    from lmforge.serving import ServeSettings, create_app
    from lmforge.tasks.squad import SquadTask

    for head, (d, labels) in heads.items():
        model, tok = load(d)
        with running(create_app(model, tok, ServeSettings(), model_dir=d)) as url, client(url, None) as http:
            assert http.get("/v1/models").json()["data"][0]["lmforge"]["labels"] == labels
            if head == "seq-cls":
                texts, pairs = ["a fine film", "dull and long, far too long"], ["yes", "no"]
                r = http.post("/v1/classify", json={"input": texts, "text_pair": pairs}).json()
                for i in range(2):
                    enc = tok(texts[i], pairs[i], return_tensors="pt")
                    with torch.no_grad():
                        probs = model(**enc)["logits"][0].softmax(-1)
                    got = {x["label"]: x["score"] for x in r["data"][i]["labels"]}
                    assert list(got) == [labels[j] for j in probs.argsort(descending=True).tolist()]
                    np.testing.assert_allclose([got[x] for x in labels], probs.numpy(), atol=1e-5)
                assert len(http.post("/v1/classify", json={"input": "x", "top_k": 1}).json()["data"][0]["labels"]) == 1
            elif head == "token-cls":
                text = "Ada Lovelace wrote notes"
                r = http.post("/v1/classify", json={"input": text}).json()["data"][0]["tokens"]
                enc = tok(text, return_tensors="pt")
                with torch.no_grad():
                    best = model(**enc)["logits"][0, 1:-1].argmax(-1).tolist()  # no [CLS] / [SEP]
                assert [t["label"] for t in r] == [labels[j] for j in best]
                assert [t["token"] for t in r] == [text[t["start"]:t["end"]] for t in r]  # text pieces, not ids
                assert "".join(t["token"] for t in r) == text.replace(" ", "") and r[0]["token"] == "Ada"
            else:
                question, context = "who wrote the notes?", "Ada Lovelace wrote the notes on the engine in 1843."
                r = http.post("/v1/classify", json={"input": question, "text_pair": context}).json()["data"][0]
                task = SquadTask(n_best=64)
                example = {"id": "0", "question": question, "context": context, "answers": [], "span": None,
                           "impossible": False}
                features = task.featurize(example, tok, max_length=128)
                for f in features:
                    f["example_index"] = 0
                want = predict(model, task, [example], features, pad_id=tok.pad_token_id)[0]["text"]
                assert r["answer"] == want and context[r["start"]:r["end"]] == want and 0 < r["score"] <= 1


def test_health_answers_while_a_batch_decodes(gpt_dir):
    """The worker is held inside a decode step; /health and /metrics still answer, then the request ends."""
    from lmforge.serving import ServeSettings, create_app

    model, tok = load(gpt_dir)
    gate, inside = threading.Event(), threading.Event()
    forward = model.body.forward

    def held(*args, **kwargs):
        inside.set()
        assert gate.wait(30)
        return forward(*args, **kwargs)

    model.body.forward = held
    with running(create_app(model, tok, ServeSettings())) as url, client(url, None) as http:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(http.post, "/v1/completions", json={"prompt": "hi", "max_tokens": 3})
            assert inside.wait(30)
            health = http.get("/health", timeout=5)
            assert health.status_code == 200 and health.json()["status"] == "ok"
            assert "lmforge_queue_depth" in http.get("/metrics", timeout=5).text
            assert not pending.done()
            gate.set()
            assert pending.result(30).status_code == 200
