"""Fixtures for the server tests: the real app on uvicorn in a thread, listening on 127.0.0.1 on a port the
OS picks (loopback only), over the tiny GPT / BERT checkpoints of tests/conftest.py."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="httpx (test extra) is not installed")

KEY = "test-key"


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    """Tiny models: on a shared 2-core machine two threads per op only fight each other (and the worker)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@contextmanager
def running(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread; yields its base URL; stops it (graceful) on exit."""
    import uvicorn

    from lmforge.recipes.serve import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def load(path: Path) -> tuple[Any, Any]:
    from lmforge.recipes.loading import load_model_and_tokenizer

    return load_model_and_tokenizer(path)


def client(url: str, key: str | None = KEY) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def gpt(gpt_dir: Path) -> Iterator[dict[str, Any]]:
    """A served gpt-tiny (64 positions, real GPT-2 vocabulary) with an API key; the same model object for
    the library-side references."""
    from lmforge.serving import ServeSettings, create_app

    model, tok = load(gpt_dir)
    settings = ServeSettings(model_name="gpt-tiny", api_key=KEY, max_new_tokens_limit=40, max_batch=8,
                             batch_wait_ms=20, max_body_bytes=20_000)
    with running(create_app(model, tok, settings, model_dir=gpt_dir)) as url:
        with client(url) as http:
            yield {"url": url, "http": http, "model": model, "tok": tok}


@pytest.fixture(scope="module")
def bert(bert_dir: Path) -> Iterator[dict[str, Any]]:
    from lmforge.serving import ServeSettings, create_app

    model, tok = load(bert_dir)
    with running(create_app(model, tok, ServeSettings(model_name="bert-tiny"), model_dir=bert_dir)) as url:
        with client(url, None) as http:
            yield {"url": url, "http": http, "model": model, "tok": tok}


def sse(lines: Iterator[str]) -> list[Any]:
    """The data payloads of a server-sent-event stream, JSON-decoded ("[DONE]" kept as the string)."""
    import json

    out = []
    for line in lines:
        if line.startswith("data: "):
            payload = line[len("data: "):]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out
