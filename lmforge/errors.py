"""User-facing errors. Every message says what went wrong and what to do about it.

The CLI prints ``str(err)`` without a traceback and exits with status 2.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class LmforgeError(Exception):
    """Base class of every error a user can cause (bad config, bad file, bad flag)."""


class ConfigError(LmforgeError, ValueError):
    """A ModelConfig / TrainConfig field is unknown or has an impossible value."""


class CheckpointError(LmforgeError):
    """A checkpoint directory or weights file is missing, corrupted or does not fit the model."""


class TokenizerError(LmforgeError):
    """A tokenizer file is missing or a tokenizer request cannot be satisfied."""


class DataError(LmforgeError):
    """An input data file is missing, empty or malformed."""


class InputError(LmforgeError, ValueError):
    """A tensor or argument given at run time is out of range (too long, id >= vocab, ...)."""


def suggest(name: str, choices: Iterable[str], *, n: int = 3) -> str:
    """' Did you mean: a, b?' for the closest names, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""
