"""Features computed once per dataset and kept beside the data, so a second run (and every seed of
``--seeds``) skips the tokenizer.

The key is a hash of everything featurize reads: the examples themselves (content, not the file's
name or date), the task and its options, ``max_length``, the decoder tokens, training or not, and the
tokenizer (its full serialisation: vocabulary, normaliser, template, added tokens). Any change gives
another key, so a stale file is never read. Files are JSON (no code runs on load), written atomically
to ``DATA/.lmforge-cache/`` or, when the data directory is read-only, to ``~/.cache/lmforge/features``
(``LMFORGE_CACHE`` overrides). Measurements in docs/finetuning.md.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lmforge.tasks.base import DecoderTokens, Example, Feature, Task, featurize_all

FORMAT = 1  # bump when featurize's output changes shape, so older files are not read


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of the tokenizer's full state (the raw engine's JSON when it has one)."""
    backend = getattr(tokenizer, "backend", None) or getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        state = backend.to_str()
    else:  # any HF-style tokenizer: its vocabulary and class
        state = json.dumps([type(tokenizer).__name__, sorted(tokenizer.get_vocab().items())])
    extra = [type(tokenizer).__name__, getattr(tokenizer, "pad_token_id", None), len(tokenizer)]
    return hashlib.sha256((state + json.dumps(extra)).encode()).hexdigest()


def feature_key(task: Task, examples: Sequence[Example], tokenizer: Any, *, max_length: int,
                decoder: DecoderTokens | None, training: bool) -> str:
    options = dataclasses.asdict(task) if dataclasses.is_dataclass(task) else {"name": task.name}
    parts = {"format": FORMAT, "task": options, "max_length": max_length, "training": training,
             "decoder": dataclasses.asdict(decoder) if decoder is not None else None,
             "tokenizer": tokenizer_fingerprint(tokenizer),
             "examples": hashlib.sha256(json.dumps(list(examples), sort_keys=True, default=str).encode()).hexdigest()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def cache_dir_for(data: str | Path) -> Path:
    """``DATA/.lmforge-cache`` when it can be written, else the user cache (``LMFORGE_CACHE`` first)."""
    if os.environ.get("LMFORGE_CACHE"):
        return Path(os.environ["LMFORGE_CACHE"]) / "features"
    base = Path(data)
    base = base if base.is_dir() else base.parent
    beside = base / ".lmforge-cache"
    if os.access(beside if beside.is_dir() else base, os.W_OK):
        return beside
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lmforge" / "features"


def _restore(feature: Feature) -> Feature:
    if "offsets" in feature:  # JSON made the (start, end) tuples lists
        feature["offsets"] = [None if o is None else tuple(o) for o in feature["offsets"]]
    return feature


def cached_featurize_all(task: Task, examples: Sequence[Example], tokenizer: Any, *, max_length: int,
                         decoder: DecoderTokens | None = None, training: bool = False,
                         cache_dir: Path | None) -> tuple[list[Feature], int, bool]:
    """``featurize_all`` through the cache: (features, truncated count, whether the cache had them)."""
    if cache_dir is None:
        return (*featurize_all(task, examples, tokenizer, max_length=max_length, decoder=decoder,
                               training=training), False)
    key = feature_key(task, examples, tokenizer, max_length=max_length, decoder=decoder, training=training)
    path = Path(cache_dir) / f"{task.name}-{key}.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            return [_restore(f) for f in saved["features"]], int(saved["truncated"]), True
        except (OSError, ValueError, KeyError):  # a damaged file: featurize again and replace it
            pass
    features, cut = featurize_all(task, examples, tokenizer, max_length=max_length, decoder=decoder,
                                  training=training)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            # dumps, not dump: json.dump streams through the pure-Python encoder (5x slower on SQuAD's features)
            f.write(json.dumps({"features": features, "truncated": cut}, separators=(",", ":")))
        os.replace(tmp, path)
    except OSError:  # a cache that cannot be written only costs the next run the featurization
        pass
    return features, cut, False


__all__ = ["cache_dir_for", "cached_featurize_all", "feature_key", "tokenizer_fingerprint"]
