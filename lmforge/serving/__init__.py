"""`lmforge serve`: an HTTP API over a saved model (needs the `serve` extra: fastapi + uvicorn).

  app       create_app(model, tokenizer, ServeSettings) -> the FastAPI app: routes, validation, auth,
            OpenAI-style errors, server-sent events
  batcher   the model worker thread: continuous batching of completions, batched encoder requests
  inference embeddings, classification heads (seq-cls / token-cls / qa) on a batch of token-id rows
  metrics   the counters and histograms of GET /metrics (Prometheus text format)
  schemas   the request bodies (pydantic; the OpenAPI schema at /docs)
  static/   playground.html, the page at / (no build step, no CDN)

``lmforge.recipes.serve.serve`` loads a checkpoint and runs the app on uvicorn.
"""
from __future__ import annotations

from lmforge.serving.app import ServeSettings, create_app
from lmforge.serving.batcher import Batcher, CompletionJob, EncodeJob

__all__ = ["Batcher", "CompletionJob", "EncodeJob", "ServeSettings", "create_app"]
