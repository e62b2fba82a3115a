"""The request bodies of `lmforge serve` (pydantic models: FastAPI validates them and writes the OpenAPI schema).

Strict: an unknown field or a value of the wrong JSON type is a 400 naming the field, never a silent
coercion ("5" is not 5). Fields follow OpenAI's API where one applies; lmforge's extensions are marked.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(Strict):
    include_usage: bool = Field(False, description="send a last chunk with the usage counts before [DONE]")


class CompletionRequest(Strict):
    """POST /v1/completions (OpenAI's legacy completions API)."""

    model: str | None = Field(None, description="the served model's id (GET /v1/models); optional")
    prompt: str | list[str] = Field(..., description="a prompt or a list of prompts (each gets n choices)")
    max_tokens: int = Field(16, ge=1, description="new tokens per choice, at most the server's limit")
    temperature: float = Field(1.0, ge=0.0, le=100.0, description="0 = greedy; > 0 samples (OpenAI's default 1)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass (1 = off)")
    n: int = Field(1, ge=1, le=16, description="choices per prompt")
    stop: str | list[str] | None = Field(None, description="up to 4 strings that end a choice (not included)")
    seed: int | None = Field(None, description="sampling seed: same seed, same settings -> same text")
    stream: bool = Field(False, description="server-sent events, one per text delta, then data: [DONE]")
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, description="accepted and ignored (OpenAI clients send it)")
    # lmforge extensions
    top_k: int = Field(0, ge=0, description="lmforge: sample among the k most likely tokens (0 = all)")
    repetition_penalty: float = Field(1.0, gt=0.0, description="lmforge: CTRL repetition penalty (1 = off)")
    num_beams: int = Field(1, ge=1, le=16, description="lmforge: beam search width (> 1: deterministic, "
                                                       "no streaming, n = 1)")


class EmbeddingRequest(Strict):
    """POST /v1/embeddings (OpenAI's embeddings API)."""

    model: str | None = None
    input: str | list[str] = Field(..., description="a text or a list of texts")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32")
    user: str | None = None
    # lmforge extensions
    pooling: Literal["mean", "cls", "last"] = Field("mean", description="lmforge: mean over the tokens, the "
                                                    "first token, or the last token (decoders)")
    normalize: bool = Field(False, description="lmforge: scale each vector to unit length")


class FillMaskRequest(Strict):
    """POST /v1/fill-mask: the top-k tokens for each mask token of each text."""

    model: str | None = None
    input: str | list[str] = Field(..., description="texts with the tokenizer's mask token ([MASK] / <mask>)")
    top_k: int = Field(5, ge=1, le=100, description="candidates per mask")


class ClassifyRequest(Strict):
    """POST /v1/classify: the fine-tuned head's prediction (seq-cls, token-cls or qa)."""

    model: str | None = None
    input: str | list[str] = Field(..., description="texts; for a qa head the questions")
    text_pair: str | list[str] | None = Field(None, description="second texts (sentence pairs); for a qa head "
                                                                "the contexts (required)")
    top_k: int | None = Field(None, ge=1, description="seq-cls: keep the k best labels (default all)")


__all__ = ["ClassifyRequest", "CompletionRequest", "EmbeddingRequest", "FillMaskRequest", "StreamOptions"]
