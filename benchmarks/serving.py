"""Serving throughput: `lmforge serve` vs a naive FastAPI + HF ``pipeline`` server, loopback only.

Usage: python benchmarks/serving.py [--shapes tiny gpt2 bert-base] [--clients 1 8 32] [--quick]

For each shape a random-weight HF model is saved with a real tokenizer (../shared/refdata), and two
servers load the same directory, each in its own process with 2 torch threads:

- lmforge: ``lmforge serve --model DIR --max-batch 32`` (continuous batching on a worker thread);
  both servers run with THP_MEM_ALLOC_ENABLE=1 (huge pages; `lmforge serve` asks for them itself), so
  the comparison is the serving design, not the page size;
- baseline, written below (``baseline_app``): the FastAPI app a tutorial gives. Completions: per request
  a thread runs ``pipeline("text-generation")`` with a streamer that forwards every token (HF's
  TextIteratorStreamer recipe, token by token instead of word by word so both sides stream the same
  units); no batching, so N clients are N generate calls competing for the cores. Embeddings:
  ``pipeline("feature-extraction")`` with mean pooling inside an ``async def`` route (it blocks the event
  loop, so requests run one at a time).

Clients (one asyncio process, httpx) send distinct prompts: completions stream (SSE) ``--new`` tokens each
(greedy, so no sampling noise; the random models never emit eos in these lengths), embeddings post one
text each. Each cell sends a fixed number of requests (bounded count) under a wall-clock cap; a request
that fails or does not finish counts as an error. The two servers are measured in turns, cell by cell
(lmforge, baseline, lmforge, ... ), so a change of machine load hits both; the load average is printed
per cell. Reported: requests/s, generated tokens/s (completions), p50 / p99 latency and time to first
token, errors.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REFDATA = (REPO / ".." / "shared" / "refdata").resolve()

SHAPES = {  # name -> (kind, HF config kwargs)
    "tiny": ("completions", {"vocab_size": 50257, "n_positions": 1024, "n_embd": 128, "n_layer": 2, "n_head": 2}),
    "gpt2": ("completions", {"vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12}),
    "bert-base": ("embeddings", {}),
}
WORDS = ("river stone light garden window market silver forest winter harbor engine paper orange castle "
         "thunder candle mirror valley ribbon lantern").split()


# ---------------------------------------------------------------------------------------------- the models
def make_model(shape: str, out: Path) -> Path:
    """A random-weight HF checkpoint of ``shape`` with its real tokenizer files, in ``out``."""
    import shutil

    import torch
    import transformers

    torch.manual_seed(0)
    kind, kwargs = SHAPES[shape]
    if kind == "completions":
        config = transformers.GPT2Config(**kwargs, bos_token_id=50256, eos_token_id=50256)
        transformers.GPT2LMHeadModel(config).eval().save_pretrained(out)
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(REFDATA / "tokenizers" / "gpt2" / name, out / name)
    else:
        transformers.BertModel(transformers.BertConfig()).eval().save_pretrained(out)
        shutil.copy(REFDATA / "tokenizers" / "bert-base-uncased" / "vocab.txt", out / "vocab.txt")
    return out


# ---------------------------------------------------------------------------------------------- the baseline
def baseline_app(model_dir: str, kind: str) -> Any:
    """The naive server: FastAPI + transformers.pipeline, no batching."""
    import threading

    import torch
    import transformers
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI()
    if kind == "completions":
        tok = transformers.GPT2TokenizerFast.from_pretrained(model_dir)
        pipe = transformers.pipeline("text-generation", model=model_dir, tokenizer=tok, device="cpu")

        class TokenStreamer:  # HF's TextIteratorStreamer, one event per token
            def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
                self.loop, self.queue, self.prompt_seen, self.count = loop, queue, False, 0

            def put(self, value: Any) -> None:
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                self.count += int(value.numel())
                self.loop.call_soon_threadsafe(self.queue.put_nowait, tok.decode(value.reshape(-1).tolist()))

            def end(self) -> None:
                self.loop.call_soon_threadsafe(self.queue.put_nowait, None)

        @app.post("/v1/completions")
        async def completions(body: dict) -> StreamingResponse:
            loop, queue = asyncio.get_running_loop(), asyncio.Queue()
            streamer = TokenStreamer(loop, queue)
            threading.Thread(target=pipe, args=(body["prompt"],), daemon=True, kwargs=dict(
                max_new_tokens=body["max_tokens"], do_sample=False, streamer=streamer, pad_token_id=50256)).start()

            async def events():
                while (text := await queue.get()) is not None:
                    yield f"data: {json.dumps({'choices': [{'text': text}]})}\n\n"
                yield f"data: {json.dumps({'choices': [], 'usage': {'completion_tokens': streamer.count}})}\n\n"
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
    else:
        tok = transformers.BertTokenizerFast.from_pretrained(model_dir)
        pipe = transformers.pipeline("feature-extraction", model=model_dir, tokenizer=tok, device="cpu")

        @app.post("/v1/embeddings")
        async def embeddings(body: dict) -> dict:
            hidden = torch.tensor(pipe(body["input"]))[0]  # (L, H)
            return {"data": [{"embedding": hidden.mean(0).tolist()}]}
    return app


def run_baseline(model_dir: str, kind: str) -> None:
    import torch
    import uvicorn

    sys.path.insert(0, str(REPO))
    from lmforge.recipes.serve import bind

    torch.set_num_threads(2)
    app = baseline_app(model_dir, kind)
    sock = bind("127.0.0.1", 0)
    print(f"baseline on http://127.0.0.1:{sock.getsockname()[1]} ", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def start(cmd: list[str]) -> tuple[subprocess.Popen, str]:
    # both servers: 2 intra-op threads and transparent huge pages (`lmforge serve` asks for them itself)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "2",
           "THP_MEM_ALLOC_ENABLE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"server did not start: {cmd}")
        match = re.search(r"on (http://127\.0\.0\.1:\d+) ", line)
        if match:
            return proc, match.group(1)


# ---------------------------------------------------------------------------------------------- the clients
async def one_completion(http: Any, prompt: str, new: int) -> tuple[float, float, int]:
    """(latency s, time to first token s, tokens) of one streamed completion."""
    start = time.perf_counter()
    first, tokens = None, 0
    body = {"prompt": prompt, "max_tokens": new, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    async with http.stream("POST", "/v1/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"status {r.status_code}")
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if data.get("usage"):
                tokens = data["usage"]["completion_tokens"]
            elif data["choices"] and data["choices"][0].get("text") and first is None:
                first = time.perf_counter() - start
    if tokens != new:
        raise RuntimeError(f"{tokens} tokens of {new}")
    return time.perf_counter() - start, first if first is not None else float("nan"), tokens


async def one_embedding(http: Any, text: str) -> tuple[float, float, int]:
    start = time.perf_counter()
    r = await http.post("/v1/embeddings", json={"input": text})
    if r.status_code != 200 or len(r.json()["data"][0]["embedding"]) != 768:
        raise RuntimeError(f"status {r.status_code}")
    latency = time.perf_counter() - start
    return latency, latency, 0


async def cell(url: str, kind: str, clients: int, per_client: int, new: int, cap: float) -> dict[str, Any]:
    """``clients`` concurrent clients, ``per_client`` requests each, distinct prompts."""
    import httpx

    results: list[tuple[float, float, int]] = []
    errors = 0
    deadline = time.perf_counter() + cap

    async def client(c: int, http: Any) -> None:
        nonlocal errors
        for k in range(per_client):
            words = " ".join(WORDS[(c * 7 + k * 3 + j) % len(WORDS)] for j in range(12))
            prompt = f"Request {c}-{k}: {words}"
            try:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise TimeoutError
                job = one_completion(http, prompt, new) if kind == "completions" else one_embedding(http, prompt)
                results.append(await asyncio.wait_for(job, left))
            except Exception:  # noqa: BLE001 - every failure is an error in the table
                errors += 1

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=cap, limits=limits) as http:
        start = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        wall = time.perf_counter() - start
    lat = sorted(r[0] for r in results) or [float("nan")]
    ttft = sorted(r[1] for r in results) or [float("nan")]
    return {"requests": len(results), "errors": errors, "wall": wall, "rps": len(results) / wall,
            "tps": sum(r[2] for r in results) / wall, "p50": pct(lat, 50), "p99": pct(lat, 99),
            "ttft50": pct(ttft, 50), "ttft99": pct(ttft, 99)}


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    return values[min(len(values) - 1, max(0, int(round(q / 100 * len(values) + 0.5)) - 1))]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["tiny", "gpt2", "bert-base"], choices=list(SHAPES))
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--quick", action="store_true", help="fewer requests per cell")
    parser.add_argument("--cap", type=float, default=240.0, help="wall-clock cap per cell, seconds")
    parser.add_argument("--compile", nargs="+", default=[], choices=["auto", "all"],
                        help="also time `lmforge serve --compile MODE` (a server per mode, taking turns with the rest)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the naive server (lmforge sides only)")
    parser.add_argument("--baseline-server", nargs=2, metavar=("DIR", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        run_baseline(*args.baseline_server)
        return
    import torch
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu}, {os.cpu_count()} cores; torch "
          f"{torch.__version__}, transformers {transformers.__version__}; load average {load()}", flush=True)
    rows = []
    for shape in args.shapes:
        kind = SHAPES[shape][0]
        new = {"tiny": 64, "gpt2": 32}.get(shape, 0)
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = make_model(shape, Path(tmp) / shape)
            ours = [sys.executable, "-m", "lmforge", "serve", "--model", str(model_dir), "--port", "0",
                    "--max-batch", "32", "--log-level", "warning", "--max-queue", "100000"]
            servers = {"lmforge": start(ours)}
            if kind == "completions":
                for mode in args.compile:  # the start-up compile happens before the server listens
                    servers[f"lmforge --compile {mode}"] = start([*ours, "--compile", mode])
            if not args.no_baseline:
                servers["baseline"] = start([sys.executable, str(Path(__file__).resolve()), "--baseline-server",
                                             str(model_dir), kind])
            try:
                for clients in args.clients:
                    # requests per client: enough for a stable rate, bounded for the slow side
                    per = {"tiny": 8, "gpt2": 2, "bert-base": 16}[shape] if clients == 1 else \
                        {"tiny": 4, "gpt2": 1, "bert-base": 4}[shape]
                    per = max(1, per // 2) if args.quick else per
                    for name, (_, url) in servers.items():
                        asyncio.run(cell(url, kind, 1, 1, new, args.cap))  # warm-up
                        before = load()
                        r = asyncio.run(cell(url, kind, clients, per, new, args.cap))
                        rows.append((shape, clients, name, r, before))
                        print(f"{shape} {clients} clients {name}: {r['requests']} req in {r['wall']:.1f} s, "
                              f"{r['rps']:.2f} req/s, {r['tps']:.1f} tok/s, p50 {r['p50']:.3f} s, p99 {r['p99']:.3f} s, "
                              f"TTFT p50 {r['ttft50']:.3f} p99 {r['ttft99']:.3f}, errors {r['errors']} "
                              f"(load {before})", flush=True)
            finally:
                for proc, _ in servers.values():
                    proc.terminate()
                    proc.wait(60)
    print()
    print("| shape | clients | server | requests | req/s | tokens/s | p50 latency s | p99 latency s | p50 TTFT s | "
          "p99 TTFT s | errors | load before |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for shape, clients, name, r, before in rows:
        tps = f"{r['tps']:.1f}" if SHAPES[shape][0] == "completions" else "-"
        ttft = (f"{r['ttft50']:.3f} | {r['ttft99']:.3f}" if SHAPES[shape][0] == "completions" else "- | -")
        print(f"| {shape} | {clients} | {name} | {r['requests']} | {r['rps']:.2f} | {tps} | {r['p50']:.3f} | "
              f"{r['p99']:.3f} | {ttft} | {r['errors']} | {before} |")
    by = {(s, c, n): r for s, c, n, r, _ in rows}
    for shape in args.shapes:
        for clients in args.clients:
            ours, base = by.get((shape, clients, "lmforge")), by.get((shape, clients, "baseline"))
            if ours and base and base["rps"] > 0:
                key = "tps" if SHAPES[shape][0] == "completions" else "rps"
                print(f"{shape}, {clients} clients: lmforge / baseline {key} = {ours[key] / base[key]:.2f}x")


if __name__ == "__main__":
    main()
