"""Every client mistake gets its 4xx with an OpenAI-style error body (never a 500), a request past the
timeout or whose client left frees its batch slot, and the auth / metrics routes behave."""
from __future__ import annotations

import socket
import time

import pytest

from .conftest import KEY, client, load, running

LONG = "word " * 80  # > 64 positions of the tiny GPT

BAD = [  # (name, method, path, body (dict, or raw bytes), headers, status, code)
    ("malformed json", "POST", "/v1/completions", b'{"prompt": "a",', None, 400, "json_invalid"),
    ("not an object", "POST", "/v1/completions", b'"hello"', None, 400, "model_attributes_type"),
    ("no body", "POST", "/v1/completions", b"", None, 400, "missing"),
    ("unknown field", "POST", "/v1/completions", {"prompt": "a", "max_token": 5}, None, 400, "extra_forbidden"),
    ("string for int", "POST", "/v1/completions", {"prompt": "a", "max_tokens": "5"}, None, 400, "int_type"),
    ("float for int", "POST", "/v1/completions", {"prompt": "a", "n": 1.5}, None, 400, "int_type"),
    ("token-id prompt", "POST", "/v1/completions", {"prompt": [1, 2]}, None, 400, "string_type"),
    ("missing prompt", "POST", "/v1/completions", {"max_tokens": 5}, None, 400, "missing"),
    ("negative temperature", "POST", "/v1/completions", {"prompt": "a", "temperature": -1}, None, 400,
     "greater_than_equal"),
    ("top_p 0", "POST", "/v1/completions", {"prompt": "a", "top_p": 0}, None, 400, "greater_than"),
    ("max_tokens 0", "POST", "/v1/completions", {"prompt": "a", "max_tokens": 0}, None, 400, "greater_than_equal"),
    ("max_tokens over the limit", "POST", "/v1/completions", {"prompt": "a", "max_tokens": 41}, None, 400,
     "max_tokens_over_limit"),
    ("prompt too long", "POST", "/v1/completions", {"prompt": LONG, "max_tokens": 5}, None, 400,
     "context_length_exceeded"),
    ("prompt + max_tokens too long", "POST", "/v1/completions", {"prompt": "word " * 30, "max_tokens": 40}, None,
     400, "context_length_exceeded"),
    ("empty prompt list", "POST", "/v1/completions", {"prompt": []}, None, 400, None),
    ("five stop strings", "POST", "/v1/completions", {"prompt": "a", "stop": list("abcde")}, None, 400, None),
    ("beam search streamed", "POST", "/v1/completions", {"prompt": "a", "num_beams": 2, "stream": True}, None,
     400, None),
    ("another model", "POST", "/v1/completions", {"prompt": "a", "model": "gpt-4"}, None, 404, "model_not_found"),
    ("route the head cannot serve", "POST", "/v1/fill-mask", {"input": "a [MASK]"}, None, 400, "unsupported_route"),
    ("classify without a head", "POST", "/v1/classify", {"input": "a"}, None, 400, "unsupported_route"),
    ("embedding input too long", "POST", "/v1/embeddings", {"input": LONG}, None, 400, "context_length_exceeded"),
    ("empty embedding input", "POST", "/v1/embeddings", {"input": ""}, None, 400, None),
    ("bad pooling", "POST", "/v1/embeddings", {"input": "a", "pooling": "max"}, None, 400, "literal_error"),
    ("body too large", "POST", "/v1/embeddings", {"input": "a" * 30_000}, None, 413, "body_too_large"),
    ("no api key", "POST", "/v1/completions", {"prompt": "a"}, {"Authorization": ""}, 401, "missing_api_key"),
    ("wrong api key", "POST", "/v1/completions", {"prompt": "a"}, {"Authorization": "Bearer nope"}, 401,
     "invalid_api_key"),
    ("wrong scheme", "GET", "/v1/models", None, {"Authorization": f"Basic {KEY}"}, 401, "invalid_api_key"),
    ("metrics need the key", "GET", "/metrics", None, {"Authorization": ""}, 401, "missing_api_key"),
    ("unknown route", "POST", "/v1/chat/completions", {"messages": []}, None, 404, None),
    ("wrong method", "GET", "/v1/completions", None, None, 405, None),
]


@pytest.mark.parametrize("name,method,path,body,headers,status,code", BAD, ids=[b[0] for b in BAD])
def test_client_mistakes_get_their_4xx(gpt, name, method, path, body, headers, status, code):
    http = gpt["http"]
    kwargs = {"content": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, bytes) else \
        {"json": body} if body is not None else {}
    if headers:
        kwargs["headers"] = {**kwargs.get("headers", {}), **headers}
    r = http.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code, error


def test_messages_say_what_to_do(gpt):
    http = gpt["http"]
    error = http.post("/v1/completions", json={"prompt": "word " * 30, "max_tokens": 40}).json()["error"]
    assert "maximum context length is 64 tokens" in error["message"] and "max_tokens" in error["message"]
    error = http.post("/v1/completions", json={"prompt": "a", "max_token": 5}).json()["error"]
    assert error["param"] == "max_token" and "unknown field" in error["message"]
    error = http.post("/v1/completions", json={"prompt": "a"}, headers={"Authorization": ""}).json()["error"]
    assert "Authorization: Bearer" in error["message"]


def test_fill_mask_without_a_mask_token(bert):
    r = bert["http"].post("/v1/fill-mask", json={"input": ["a [MASK] b", "no mask here"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_mask_token"
    assert "input 1" in r.json()["error"]["message"] and "[MASK]" in r.json()["error"]["message"]


def test_open_routes_and_models(gpt):
    bare = client(gpt["url"], None)
    assert bare.get("/health").json()["status"] == "ok"
    assert "lmforge playground" in bare.get("/").text
    schema = bare.get("/openapi.json").json()
    assert {"/v1/completions", "/v1/embeddings", "/v1/fill-mask", "/v1/classify"} <= set(schema["paths"])
    models = gpt["http"].get("/v1/models").json()["data"][0]
    assert models["id"] == "gpt-tiny" and models["lmforge"]["routes"] == ["/v1/embeddings", "/v1/completions"]


def _slow(model, seconds: float) -> None:
    forward = model.body.forward

    def slow(*args, **kwargs):
        time.sleep(seconds)
        return forward(*args, **kwargs)

    model.body.forward = slow


def _wait_idle(http, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if http.get("/health").json()["running"] == 0:
            return True
        time.sleep(0.05)
    return False


def test_timeout_and_disconnect_free_the_slot(gpt_dir):
    """Each decode step takes 50 ms: a 40-token completion would run 2 s. A 0.5 s timeout ends it with 408
    (and an error event when streaming); a client that closes its stream frees the row within a few steps."""
    from lmforge.serving import ServeSettings, create_app

    model, tok = load(gpt_dir)
    _slow(model, 0.05)
    with running(create_app(model, tok, ServeSettings(request_timeout=0.5, batch_wait_ms=0))) as url:
        http = client(url, None)
        start = time.monotonic()
        r = http.post("/v1/completions", json={"prompt": "a", "max_tokens": 40, "temperature": 0})
        assert r.status_code == 408 and r.json()["error"]["code"] == "timeout"
        assert time.monotonic() - start < 1.8
        assert _wait_idle(http, 1.0)
        with http.stream("POST", "/v1/completions", json={"prompt": "a", "max_tokens": 40, "stream": True}) as s:
            lines = [line for line in s.iter_lines() if line.startswith("data: ")]
        assert '"code": "timeout"' in lines[-2] and lines[-1] == "data: [DONE]"


def test_client_disconnect_frees_the_slot(gpt_dir):
    from lmforge.serving import ServeSettings, create_app

    model, tok = load(gpt_dir)
    _slow(model, 0.05)
    with running(create_app(model, tok, ServeSettings(batch_wait_ms=0))) as url:
        http = client(url, None)
        host, port = url.removeprefix("http://").split(":")
        body = b'{"prompt": "a", "max_tokens": 40, "stream": true}'
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            seen = b""
            while b"data: " not in seen:  # the stream started
                chunk = raw.recv(4096)
                assert chunk, seen
                seen += chunk
            end = time.monotonic() + 5  # the first token comes out of the prefill, just before the row joins
            while http.get("/health").json()["running"] != 1:
                assert time.monotonic() < end
                time.sleep(0.01)
        start = time.monotonic()
        assert _wait_idle(http, 1.5)  # the full completion would take ~2 s more
        assert time.monotonic() - start < 1.5


def test_max_input_tokens_and_a_full_queue(gpt_dir):
    """--max-input-tokens caps inputs below the model's positions; with the worker busy and --max-queue
    requests waiting, the next one gets 503 instead of waiting without bound."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from lmforge.serving import ServeSettings, create_app

    model, tok = load(gpt_dir)
    gate, inside = threading.Event(), threading.Event()
    forward = model.body.forward

    def held(*args, **kwargs):
        inside.set()
        assert gate.wait(30)
        return forward(*args, **kwargs)

    with running(create_app(model, tok, ServeSettings(max_input_tokens=4, max_queue=1, batch_wait_ms=0))) as url:
        http = client(url, None)
        r = http.post("/v1/embeddings", json={"input": "one two three four five six"})
        assert r.status_code == 400 and "--max-input-tokens" in r.json()["error"]["message"]
        assert http.post("/v1/embeddings", json={"input": "one two"}).status_code == 200
        model.body.forward = held
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(http.post, "/v1/embeddings", json={"input": "a"})  # the worker holds it
            assert inside.wait(30)
            second = pool.submit(http.post, "/v1/embeddings", json={"input": "b"})  # waits in the queue
            end = time.monotonic() + 10
            while http.get("/health").json()["queued"] < 1:
                assert time.monotonic() < end
                time.sleep(0.01)
            third = http.post("/v1/embeddings", json={"input": "c"})
            assert third.status_code == 503 and third.json()["error"]["code"] == "overloaded"
            gate.set()
            assert first.result(30).status_code == 200 and second.result(30).status_code == 200
