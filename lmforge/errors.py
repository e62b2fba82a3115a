"""User-facing errors. Every message says what went wrong and what to do about it.

The CLI prints ``str(err)`` without a traceback and exits with status 2. Where the fix reads differently
on the command line (a flag instead of a Python argument), the raise site passes that wording as
``cli=`` and the CLI prints it instead.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class LmforgeError(Exception):
    """Base class of every error a user can cause (bad config, bad file, bad flag).

    ``cli``: the same message with the command-line fix (flags, commands) where the Python one
    (arguments, methods) would be wrong advice at a shell prompt; None when one wording fits both.
    """

    def __init__(self, *args: object, cli: str | None = None) -> None:
        super().__init__(*args)
        self.cli = cli


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


ENCODING_ERRORS = ("strict", "replace")  # how text readers treat bytes that are not UTF-8


def not_utf8(path: str | Path, *, offer_replace: bool = True) -> DataError:
    """The one error every text reader (tokenizer training, `prepare`, task files) raises for a file that
    is not UTF-8: file:line, the byte offset and value of the first bad byte, and the two ways out
    (``offer_replace=False``: the one, for readers without an ``encoding_errors`` choice).

    Found by a second, binary pass (this is the error path): line by line, since a newline byte never
    occurs inside a UTF-8 character. ``.gz`` offsets count the decompressed bytes.
    """
    import gzip

    path = Path(path)
    where, detail = f"{path}", "not UTF-8 text"
    offset = 0
    with (gzip.open if path.name.endswith(".gz") else open)(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as err:
                zipped = " of the decompressed text" if path.name.endswith(".gz") else ""
                where = f"{path}:{lineno}"
                detail = (f"not UTF-8 text: byte 0x{raw[err.start]:02x} at byte offset {offset + err.start}{zipped} "
                          f"({err.reason})")
                break
            offset += len(raw)
    fix = f"{where}: {detail}; convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8 IN > OUT)"
    if not offer_replace:
        return DataError(fix)
    return DataError(f"{fix}, or read invalid bytes as U+FFFD with encoding_errors='replace'",
                     cli=f"{fix}, or read invalid bytes as U+FFFD with --encoding-errors replace")
