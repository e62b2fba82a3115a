"""The HTTP API of `lmforge serve` (FastAPI on uvicorn): routes, validation, auth, errors, streaming.

``create_app(model, tokenizer, settings)`` returns the ASGI app; its lifespan starts and stops the model
worker (``serving.batcher.Batcher``). The event loop only validates, tokenizes and relays: every model
call runs on the worker thread, so ``/health`` and ``/metrics`` answer while a batch decodes.

Errors have OpenAI's body ``{"error": {"message", "type", "param", "code"}}``: a client mistake is a 4xx
that says what to do (malformed JSON, unknown field or wrong type 400; missing / wrong API key 401; a
model that is not the served one 404; a body over the size limit 413; the worker's queue full 503; a
request past --request-timeout 408); a 500 means a bug.
"""
from __future__ import annotations

import asyncio
import base64
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lmforge.errors import ConfigError, LmforgeError
from lmforge.generation import encode_prompts, lm_field
from lmforge.prompting.fill_mask import MLM_HEADS, fill_mask_ids
from lmforge.serving.batcher import Batcher, CompletionJob, EncodeJob, Job
from lmforge.serving.inference import CLASSIFY_HEADS, classify, embed, label_names
from lmforge.serving.metrics import BATCH_BUCKETS, Metrics
from lmforge.serving.schemas import ClassifyRequest, CompletionRequest, EmbeddingRequest, FillMaskRequest

PLAYGROUND = Path(__file__).with_name("static") / "playground.html"
ROUTES = ("completions", "embeddings", "fill-mask", "classify")
KNOWN_PATHS = {"/", "/health", "/metrics", "/docs", "/openapi.json", "/v1/models", *(f"/v1/{r}" for r in ROUTES)}
MAX_INPUTS = 256  # texts (or prompts x n) in one request


@dataclass
class ServeSettings:
    """What the server enforces and how it batches (the `lmforge serve` flags)."""

    model_name: str = "lmforge"  # the id /v1/models reports and requests may name
    max_batch: int = 16  # rows decoded together (and rows per encoder forward)
    batch_wait_ms: float = 5.0  # an idle worker waits this long for more requests before it starts a batch
    api_key: str | None = None  # required as "Authorization: Bearer KEY" on /v1/* and /metrics when set
    max_new_tokens_limit: int = 256  # the largest max_tokens a request may ask for
    max_input_tokens: int | None = None  # the longest prompt / input in tokens (None: the model's positions)
    request_timeout: float = 300.0  # seconds a request may wait + run before it is ended (408)
    max_queue: int = 1024  # requests waiting for the worker beyond this get 503
    max_body_bytes: int = 1 << 20  # request bodies over this get 413
    compile: bool | str = False  # completions decode through the compiled step: "auto" (True) / "all" (batcher)


class ApiError(Exception):
    """A client error with its HTTP status and OpenAI-style fields."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


def error_body(message: str, *, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(error_body(err.message, type=err.type, param=err.param, code=err.code), status_code=err.status)


class Server:
    """What the routes share: model, tokenizer, settings, worker, metrics."""

    def __init__(self, model: Any, tokenizer: Any, settings: ServeSettings, model_dir: str | Path | None) -> None:
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        config = model.config
        self.head = getattr(config, "head", None)
        self.positions = int(config.max_positions)
        self.max_input = min(settings.max_input_tokens or self.positions, self.positions)
        self.labels = label_names(model_dir, config) if self.head in ("seq-cls", "token-cls") else []
        self.routes = self._routes()
        self.metrics = Metrics({"lmforge_queue_depth": lambda: self.batcher.depth(),
                                "lmforge_running_rows": lambda: self.batcher.running()})
        if settings.compile and self.routes["completions"] is not None:
            raise ConfigError(f"--compile speeds up completions, which this model cannot serve "
                              f"({self.routes['completions']}); leave --compile out.")
        self.batcher = Batcher(model, tokenizer, max_batch=settings.max_batch, wait_ms=settings.batch_wait_ms,
                               encode={"embed": self._embed, "fill-mask": self._fill_mask, "classify": self._classify},
                               on_step=lambda rows: self.metrics.observe("lmforge_batch_rows", rows, BATCH_BUCKETS,
                                                                         kind="decode"),
                               compile=settings.compile)
        self.pad = self.batcher.pad

    def _routes(self) -> dict[str, str | None]:
        """route -> None when the model serves it, else why not."""
        out: dict[str, str | None] = {"embeddings": None}
        try:
            lm_field(self.model)
            out["completions"] = None
        except LmforgeError as err:
            out["completions"] = str(err)
        if self.head not in MLM_HEADS:
            out["fill-mask"] = (f"fill-mask needs a masked-language-model head ({' or '.join(MLM_HEADS)}); this "
                                f"model has head {self.head!r}.")
        elif getattr(self.tokenizer, "mask_token_id", None) is None:
            out["fill-mask"] = "this model's tokenizer has no mask token, so fill-mask cannot be used with it."
        else:
            out["fill-mask"] = None
        out["classify"] = None if self.head in CLASSIFY_HEADS else (
            f"classify needs a fine-tuned {', '.join(CLASSIFY_HEADS)} head; this model has head {self.head!r}.")
        return out

    # ------------------------------------------------------------------ worker-side calls (worker thread)
    def _embed(self, rows: list[list[int]], pooling: str, normalize: bool) -> list[torch.Tensor]:
        self.metrics.observe("lmforge_batch_rows", len(rows), BATCH_BUCKETS, kind="embeddings")
        return list(embed(self.model, rows, pooling=pooling, pad_id=self.pad, normalize=normalize))

    def _fill_mask(self, rows: list[list[int]], k: int) -> list[Any]:
        self.metrics.observe("lmforge_batch_rows", len(rows), BATCH_BUCKETS, kind="fill-mask")
        return fill_mask_ids(self.model, self.tokenizer, rows, top_k=k)

    def _classify(self, rows: list[dict[str, Any]], top_k: int | None) -> list[Any]:
        self.metrics.observe("lmforge_batch_rows", len(rows), BATCH_BUCKETS, kind="classify")
        if self.model.config.causal:  # a decoder's head reads the last real token: no padding, one row a call
            return [r for row in rows for r in classify(self.model, [row], labels=self.labels, pad_id=self.pad,
                                                          top_k=top_k)]
        return classify(self.model, rows, labels=self.labels, pad_id=self.pad, top_k=top_k)

    # ------------------------------------------------------------------ request checks (event loop)
    def check(self, route: str, model: str | None) -> None:
        if model is not None and model != self.settings.model_name:
            raise ApiError(404, f"the model {model!r} is not served here; this server serves "
                                f"{self.settings.model_name!r} (GET /v1/models).", param="model", code="model_not_found")
        why = self.routes[route]
        if why is not None:
            raise ApiError(400, f"/v1/{route} is not available for this model: {why}", code="unsupported_route")
        if self.batcher.depth() >= self.settings.max_queue:
            raise ApiError(503, f"the server has {self.batcher.depth()} requests waiting (--max-queue "
                                f"{self.settings.max_queue}); retry later.", type="server_error", code="overloaded")

    def check_length(self, n: int, param: str, extra: int = 0) -> None:
        """400 context_length_exceeded when ``n`` input tokens (+ ``extra`` to generate) do not fit."""
        if n > self.max_input:
            limit = "--max-input-tokens" if self.max_input < self.positions else "the model's positions"
            raise ApiError(400, f"the {param} has {n} tokens but this server reads at most {self.max_input} "
                                f"({limit}); shorten it.", param=param, code="context_length_exceeded")
        if n + extra > self.positions:
            raise ApiError(400, f"this model's maximum context length is {self.positions} tokens, but {n + extra} "
                                f"were requested ({n} in the prompt, {extra} for the completion); shorten the "
                                "prompt or lower max_tokens.", param=param, code="context_length_exceeded")

    def texts(self, value: str | list[str], param: str) -> list[str]:
        texts = [value] if isinstance(value, str) else list(value)
        if not texts:
            raise ApiError(400, f"{param} is an empty list; give at least one text.", param=param)
        if len(texts) > MAX_INPUTS:
            raise ApiError(400, f"{param} has {len(texts)} texts; send at most {MAX_INPUTS} per request.", param=param)
        return texts

    def rows(self, texts: list[str], param: str) -> list[list[int]]:
        """Token ids (with the tokenizer's specials) of each text, checked against the length limits."""
        rows = [list(self.tokenizer(t)["input_ids"]) for t in texts]
        for i, r in enumerate(rows):
            if not r:
                raise ApiError(400, f"{param} {i} is empty; give a non-empty text.", param=param)
            self.check_length(len(r), param)
        return rows

    def deadline(self) -> float:
        return time.monotonic() + self.settings.request_timeout


def _sink(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, index: int):
    def put(event: tuple[str, Any]) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (index, event))
        except RuntimeError:  # the loop is gone (shutdown): nobody is waiting any more
            pass
    return put


def _raise_error(payload: Any, timeout: float) -> None:
    if isinstance(payload, LmforgeError):
        raise ApiError(400, str(payload))
    if payload == "timeout":
        raise ApiError(408, f"the request did not finish within the server's --request-timeout of {timeout:g} s.",
                       type="timeout_error", code="timeout")
    raise RuntimeError(str(payload))


async def _gather(request: Request, queue: asyncio.Queue, jobs: list[Job], timeout: float) -> list[Any]:
    """The "done" payload of every job, in order; cancels them all if the client leaves or one fails."""
    results: list[Any] = [None] * len(jobs)
    left = len(jobs)
    try:
        while left:
            try:
                index, (kind, payload) = await asyncio.wait_for(queue.get(), timeout=0.5)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return results
                continue
            if kind == "done":
                results[index] = payload
                left -= 1
            elif kind == "error":
                _raise_error(payload, timeout)
        return results
    finally:
        if left:
            for job in jobs:
                job.cancel()


def create_app(model: Any, tokenizer: Any, settings: ServeSettings | None = None, *,
               model_dir: str | Path | None = None) -> FastAPI:
    """The ASGI app serving ``model`` (eval mode, on its device) with ``tokenizer``."""
    settings = settings or ServeSettings()
    model.eval()
    server = Server(model, tokenizer, settings, model_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.batcher.start()
        yield
        server.batcher.stop()

    app = FastAPI(title="lmforge serve", version="1", lifespan=lifespan,
                  description="OpenAI-style completions (with streaming), embeddings, fill-mask and classification "
                              "for an lmforge model, with dynamic batching.")
    app.state.server = server

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return _error_response(err)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0]
        where = [str(p) for p in first.get("loc", ()) if p != "body"]
        if first.get("type") == "json_invalid":
            where = []
            message = f"the request body is not valid JSON ({first.get('ctx', {}).get('error', first['msg'])})."
        elif first.get("type") == "extra_forbidden":
            message = f"unknown field {'.'.join(where)!r}; see the schema at /docs."
        elif first.get("type") == "missing":
            message = f"the field {'.'.join(where)!r} is required." if where else "the request needs a JSON body."
        else:
            message = f"{'.'.join(where) or 'body'}: {first['msg']} (got {json.dumps(first.get('input'))[:80]})."
        return _error_response(ApiError(400, message, param=".".join(where) or None, code=first.get("type")))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        messages = {404: f"no route {request.method} {request.url.path}; see /docs.",
                    405: f"{request.method} is not allowed on {request.url.path}."}
        return JSONResponse(error_body(messages.get(err.status_code, str(err.detail))), status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    app.add_middleware(Limits, server=server)

    def authorized(request: Request) -> None:
        if settings.api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if not header:
            raise ApiError(401, "this server needs an API key: send the header 'Authorization: Bearer KEY'.",
                           code="missing_api_key")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), settings.api_key.encode()):
            raise ApiError(401, "the API key is wrong (send 'Authorization: Bearer KEY' with the key the server "
                                "was started with).", code="invalid_api_key")

    auth = [Depends(authorized)]

    # ------------------------------------------------------------------ routes
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def playground() -> HTMLResponse:
        return HTMLResponse(PLAYGROUND.read_text(encoding="utf-8"))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness: answers while the worker decodes."""
        alive = server.batcher.thread.is_alive() and server.batcher.error is None
        return {"status": "ok" if alive else "worker_failed", "model": settings.model_name,
                "running": server.batcher.running(), "queued": server.batcher.depth()}

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=auth)
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(server.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models", dependencies=auth)
    async def models() -> dict[str, Any]:
        c = model.config
        return {"object": "list", "data": [{
            "id": settings.model_name, "object": "model", "created": 0, "owned_by": "lmforge",
            "lmforge": {"family": getattr(c, "family", None), "head": server.head, "max_positions": server.positions,
                        "routes": [f"/v1/{r}" for r, why in server.routes.items() if why is None],
                        "labels": server.labels or None}}]}

    @app.post("/v1/completions", dependencies=auth)
    async def completions(body: CompletionRequest, request: Request) -> Any:
        server.check("completions", body.model)
        if body.max_tokens > settings.max_new_tokens_limit:
            raise ApiError(400, f"max_tokens is {body.max_tokens} but this server allows at most "
                                f"{settings.max_new_tokens_limit} (--max-new-tokens-limit).", param="max_tokens",
                           code="max_tokens_over_limit")
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > 4 or any(not s for s in stop):
            raise ApiError(400, "stop takes up to 4 non-empty strings.", param="stop")
        if body.num_beams > 1 and (body.stream or body.n > 1 or body.temperature > 0 and "temperature" in
                                   body.model_fields_set):
            raise ApiError(400, "num_beams > 1 (beam search) is deterministic and returns one choice: use it "
                                "without stream, n > 1 or temperature.", param="num_beams")
        prompts = server.texts(body.prompt, "prompt")
        if len(prompts) * body.n > MAX_INPUTS:
            raise ApiError(400, f"{len(prompts)} prompts x n={body.n} choices is over {MAX_INPUTS} per request.",
                           param="n")
        jobs: list[CompletionJob] = []
        loop, queue = asyncio.get_running_loop(), asyncio.Queue()
        beams = body.num_beams > 1
        sample = body.temperature > 0 and not beams
        prompt_ids = []
        for p, text in enumerate(prompts):
            ids = encode_prompts(tokenizer, [text], pad_id=server.pad)[0][0].tolist()
            server.check_length(len(ids), "prompt", body.max_tokens)
            prompt_ids.append(ids)
        for p, ids in enumerate(prompt_ids):
            for c in range(body.n):
                seed = None if body.seed is None else body.seed + c
                jobs.append(CompletionJob(
                    sink=_sink(loop, queue, len(jobs)), deadline=server.deadline(), prompt=ids,
                    max_new=body.max_tokens, do_sample=sample, temperature=body.temperature if sample else 1.0,
                    top_k=body.top_k if sample else 0, top_p=body.top_p if sample else 1.0,
                    repetition_penalty=body.repetition_penalty, seed=seed, stop=stop, num_beams=body.num_beams))
        server.metrics.inc("lmforge_prompt_tokens_total", sum(map(len, prompt_ids)) * body.n, route="completions")
        head = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion", "created": int(time.time()),
                "model": settings.model_name}
        start = time.monotonic()
        for job in jobs:
            server.batcher.submit(job)
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(_stream(server, queue, jobs, head, start, usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        results = await _gather(request, queue, jobs, settings.request_timeout)
        if any(r is None for r in results):
            return JSONResponse(error_body("the client disconnected."), status_code=499)
        made = sum(r["completion_tokens"] for r in results)
        server.metrics.inc("lmforge_generated_tokens_total", made)
        choices = [{"index": i, "text": r["text"], "logprobs": None, "finish_reason": r["finish_reason"],
                    "token_ids": r["token_ids"]} for i, r in enumerate(results)]
        prompt_tokens = sum(map(len, prompt_ids))
        return {**head, "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": made,
                                                      "total_tokens": prompt_tokens + made}}

    @app.post("/v1/embeddings", dependencies=auth)
    async def embeddings(body: EmbeddingRequest, request: Request) -> Any:
        server.check("embeddings", body.model)
        rows = server.rows(server.texts(body.input, "input"), "input")
        vectors = await _encode(server, request, "embed", rows, (body.pooling, body.normalize))
        data = []
        for i, v in enumerate(vectors):
            if body.encoding_format == "base64":
                value: Any = base64.b64encode(v.numpy().astype("<f4").tobytes()).decode()
            else:
                value = v.tolist()
            data.append({"object": "embedding", "index": i, "embedding": value})
        n = sum(map(len, rows))
        return {"object": "list", "data": data, "model": settings.model_name,
                "usage": {"prompt_tokens": n, "total_tokens": n}}

    @app.post("/v1/fill-mask", dependencies=auth)
    async def fill_mask(body: FillMaskRequest, request: Request) -> Any:
        server.check("fill-mask", body.model)
        texts = server.texts(body.input, "input")
        rows = server.rows(texts, "input")
        mask_id = tokenizer.mask_token_id
        for i, r in enumerate(rows):
            if mask_id not in r:
                token = tokenizer.convert_ids_to_tokens(mask_id)
                raise ApiError(400, f"input {i} has no mask token {token}: write {token} where a word should be "
                                    f"predicted, e.g. \"the man went to the {token}.\"", param="input",
                               code="no_mask_token")
        results = await _encode(server, request, "fill-mask", rows, (body.top_k,))
        return {"object": "list", "model": settings.model_name,
                "data": [{"index": i, "masks": masks} for i, masks in enumerate(results)],
                "usage": {"prompt_tokens": sum(map(len, rows)), "total_tokens": sum(map(len, rows))}}

    @app.post("/v1/classify", dependencies=auth)
    async def classify_route(body: ClassifyRequest, request: Request) -> Any:
        server.check("classify", body.model)
        texts = server.texts(body.input, "input")
        pairs: list[str | None] = [None] * len(texts)
        if body.text_pair is not None:
            pairs = server.texts(body.text_pair, "text_pair")
            if len(pairs) != len(texts):
                raise ApiError(400, f"text_pair has {len(pairs)} texts for {len(texts)} inputs; give one each.",
                               param="text_pair")
        if server.head == "qa" and any(p is None for p in pairs):
            raise ApiError(400, "this model answers questions (qa head): give the questions as input and the "
                                "contexts as text_pair.", param="text_pair")
        rows = []
        for text, pair in zip(texts, pairs, strict=True):
            enc = tokenizer(text, pair, return_offsets_mapping=True, return_token_type_ids=True)
            ids = list(enc["input_ids"])
            server.check_length(len(ids), "input")
            rows.append({"input_ids": ids, "token_type_ids": list(enc.get("token_type_ids") or [0] * len(ids)),
                         "offsets": [tuple(o) for o in enc["offset_mapping"]],
                         "sequence_ids": enc.sequence_ids(0), "text": text if server.head != "qa" else pair,
                         "pair": pair})
        results = await _encode(server, request, "classify", rows, (body.top_k,))
        return {"object": "list", "model": settings.model_name, "head": server.head,
                "data": [{"index": i, **r} for i, r in enumerate(results)],
                "usage": {"prompt_tokens": sum(len(r["input_ids"]) for r in rows),
                          "total_tokens": sum(len(r["input_ids"]) for r in rows)}}

    return app


async def _encode(server: Server, request: Request, kind: str, rows: list[Any], options: tuple) -> list[Any]:
    loop, queue = asyncio.get_running_loop(), asyncio.Queue()
    job = EncodeJob(sink=_sink(loop, queue, 0), deadline=server.deadline(), kind=kind, rows=rows, options=options)
    server.metrics.inc("lmforge_prompt_tokens_total", sum(len(r) if isinstance(r, list) else len(r["input_ids"])
                                                         for r in rows), route=kind)
    server.batcher.submit(job)
    result = (await _gather(request, queue, [job], server.settings.request_timeout))[0]
    if result is None:
        raise ApiError(499, "the client disconnected.")
    return result


class Limits:
    """ASGI middleware: bodies over ``max_body_bytes`` get 413 before any route runs; every response is
    counted and timed to its last byte (a stream's end, not its headers)."""

    def __init__(self, app: Any, server: Server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.server.settings.max_body_bytes
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > limit:
            response = _error_response(ApiError(413, f"the request body has {int(length)} bytes; the limit is "
                                                     f"{limit}.", code="body_too_large"))
            await response(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in KNOWN_PATHS else "other"
        start = time.monotonic()
        status = [500]

        async def timed(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.server.metrics.inc("lmforge_requests_total", route=route, status=str(status[0]))
                self.server.metrics.observe("lmforge_request_duration_seconds", time.monotonic() - start, route=route)

        await self.app(scope, receive, timed)


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _stream(server: Server, queue: asyncio.Queue, jobs: list[CompletionJob], head: dict[str, Any],
                  start: float, usage: bool) -> AsyncIterator[bytes]:
    """Server-sent events: a chunk per text delta of any choice (its index says which), a last chunk per
    choice with its finish_reason, optionally the usage, then ``data: [DONE]``. Closing the stream (the client
    left) cancels the choices still running."""
    left = len(jobs)
    first = True
    made = 0
    try:
        while left:
            index, (kind, payload) = await queue.get()
            if kind == "token":
                if first:
                    server.metrics.observe("lmforge_time_to_first_token_seconds", time.monotonic() - start)
                    first = False
                yield _sse({**head, "choices": [{"index": index, "text": payload["text"], "logprobs": None,
                                                 "finish_reason": None}]})
            elif kind == "done":
                left -= 1
                made += payload["completion_tokens"]
                yield _sse({**head, "choices": [{"index": index, "text": "", "logprobs": None,
                                                 "finish_reason": payload["finish_reason"]}]})
            else:
                left -= 1
                if payload == "cancelled":
                    continue
                if isinstance(payload, LmforgeError):
                    err = error_body(str(payload))
                elif payload == "timeout":
                    err = error_body(f"the request did not finish within the server's --request-timeout of "
                                     f"{server.settings.request_timeout:g} s.", type="timeout_error", code="timeout")
                else:
                    err = error_body(str(payload), type="server_error")
                yield _sse({**err, "index": index})
        server.metrics.inc("lmforge_generated_tokens_total", made)
        if usage:
            prompt = sum(len(j.prompt) for j in jobs)
            yield _sse({**head, "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": made,
                                                          "total_tokens": prompt + made}})
        yield b"data: [DONE]\n\n"
    finally:
        if left:
            for job in jobs:
                job.cancel()


__all__ = ["ApiError", "PLAYGROUND", "ROUTES", "ServeSettings", "Server", "create_app", "error_body"]
