"""Training WordPiece (as BERT), byte-level BPE (as GPT-2 / RoBERTa) and Unigram (as ALBERT) tokenizers.

The `tokenizers` trainers do the work (in Rust, on every core); this module streams the corpus to them
in batches (plain text, .gz, .jsonl with a text field, or any iterator of strings), so a corpus is never
held in memory whole. A file that is not UTF-8 fails naming file:line and the byte (as `prepare` does),
unless ``encoding_errors="replace"``: then invalid bytes become U+FFFD and their count is reported per
file. The same input gives the same vocabulary.
"""
from __future__ import annotations

import codecs
import gzip
import json
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as Engine, models, pre_tokenizers, trainers

from lmforge.errors import ENCODING_ERRORS, DataError, LmforgeError, TokenizerError, not_utf8, suggest
from lmforge.tokenization.families import DEFAULT_FAMILY, FAMILIES, post_processor, set_pipeline
from lmforge.tokenization.tokenizer import Tokenizer

KINDS = tuple(DEFAULT_FAMILY)
BATCH = 1000  # lines per batch handed to the trainer (it parallelises over batches)
Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Corpus:
    """An iterable over the corpus lines, re-readable, that counts lines and replaced bytes."""

    def __init__(self, source: Any, *, text_field: str = "text", encoding_errors: str = "strict") -> None:
        self.text_field = text_field
        self.encoding_errors = encoding_errors
        self.lines = 0
        self.replaced: dict[str, int] = {}  # file -> number of invalid UTF-8 bytes replaced
        self.spooled: Corpus | None = None  # an iterator written to a file, for trainers that read twice
        # files: a path or a list/tuple of paths; anything else iterable is a stream of texts
        if isinstance(source, (str, Path)):
            source = [source]
        if isinstance(source, (list, tuple)):
            self.files: list[Path] | None = [Path(p) for p in source]
            missing = [str(p) for p in self.files if not p.is_file()]
            if missing:
                shown = ", ".join(m if len(m) < 80 else m[:77] + "..." for m in missing[:5])
                raise DataError(f"training file(s) not found: {shown} (a list is read as file paths; to train "
                                "on strings in memory pass an iterator, e.g. iter(texts))",
                                cli=f"training file(s) not found: {shown}; check the paths")
        else:
            self.files = None
            self.iterator: Iterable[str] = source

    def __iter__(self) -> Iterator[str]:
        if self.files is None:
            for text in self.iterator:
                if not isinstance(text, str):
                    raise DataError(f"the training iterator gave a {type(text).__name__}; give strings")
                if text.strip():
                    self.lines += 1
                    yield text
            return
        for path in self.files:
            yield from self._read(path)

    def _read(self, path: Path) -> Iterator[str]:
        count = [0]

        def replace(err: UnicodeError) -> tuple[str, int]:
            count[0] += err.end - err.start  # type: ignore[attr-defined]
            return "\ufffd", err.end  # type: ignore[attr-defined]

        name = "strict"
        if self.encoding_errors == "replace":
            name = f"lmforge-count-{id(count)}"
            codecs.register_error(name, replace)
        opener = gzip.open if path.suffix == ".gz" else open
        is_jsonl = path.name.removesuffix(".gz").endswith((".jsonl", ".json"))
        try:
            with opener(path, "rt", encoding="utf-8", errors=name, newline=None) as f:  # type: ignore[operator]
                for lineno, line in enumerate(f, 1):
                    if is_jsonl:
                        line = self._json_text(path, lineno, line)
                    if line.strip():
                        self.lines += 1
                        yield line
        except UnicodeDecodeError:
            raise not_utf8(path) from None
        except (OSError, EOFError) as err:
            raise DataError(f"cannot read {path} ({err})") from None
        if count[0]:
            self.replaced[str(path)] = self.replaced.get(str(path), 0) + count[0]

    def _json_text(self, path: Path, lineno: int, line: str) -> str:
        if not line.strip():
            return ""
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{lineno}: not JSON ({err.msg}); a .jsonl corpus has one object per line") \
                from None
        if not isinstance(obj, dict) or not isinstance(obj.get(self.text_field), str):
            raise DataError(f"{path}:{lineno}: no string field {self.text_field!r}; pass --text-field NAME")
        return obj[self.text_field]

    def reset(self) -> None:
        """Forget the counts before another pass."""
        self.lines = 0
        self.replaced = {}

    def spool(self, path: Path) -> "Corpus":
        """Write an iterator's texts to ``path`` (one per line) and return a file corpus over it."""
        with open(path, "w", encoding="utf-8") as f:
            for text in self:
                f.write(text.replace("\n", " ").replace("\r", " ") + "\n")
        return Corpus(path)

    def batches(self) -> Iterator[list[str]]:
        batch: list[str] = []
        for line in self:
            batch.append(line)
            if len(batch) == BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


def _check_size(vocab_size: int, floor: int, what: str) -> None:
    if vocab_size < floor:
        raise TokenizerError(f"vocab_size={vocab_size} is smaller than {what} ({floor}); use --vocab-size of at "
                             f"least {floor} (BERT uses 30522, GPT-2 50257, ALBERT 30000)")


def train(source: Any, *, kind: str, vocab_size: int, family: str | None = None, lowercase: bool | None = None,
          min_frequency: int = 2, text_field: str = "text", show_progress: bool = True,
          log: Log | None = None, encoding_errors: str = "strict") -> Tokenizer:
    """Train a ``kind`` tokenizer with the conventions of ``family`` (default: bert / gpt2 / albert).

    A vocabulary smaller than ``vocab_size`` (too little text, or ``min_frequency`` too high for it)
    is said in a warning through ``log`` and in ``training_report["vocab_size_asked"]``.
    """
    log = log or _stderr
    if kind not in DEFAULT_FAMILY:
        hint = " (SentencePiece-style is 'unigram'; GPT-2 style is 'bpe'; BERT style is 'wordpiece')"
        raise TokenizerError(f"unknown tokenizer kind {kind!r}; use one of {', '.join(KINDS)}."
                             + (suggest(kind, KINDS) or hint))
    family = family or DEFAULT_FAMILY[kind]
    if family not in FAMILIES or FAMILIES[family].kind != kind:
        fits = [n for n, f in FAMILIES.items() if f.kind == kind]
        raise TokenizerError(f"family {family!r} does not train as {kind}; for {kind} use {', '.join(fits)}")
    fam = FAMILIES[family]
    if lowercase is None:  # uncased is BERT's and ALBERT's default; byte-level BPE keeps case
        lowercase = kind != "bpe"
    if lowercase and kind == "bpe":
        raise TokenizerError("byte-level BPE keeps case (as GPT-2 / RoBERTa); drop --lowercase")
    if min_frequency < 1:
        raise TokenizerError(f"min_frequency={min_frequency}; use 1 or more")
    if encoding_errors not in ENCODING_ERRORS:
        raise TokenizerError(f"encoding_errors={encoding_errors!r}; use one of {', '.join(ENCODING_ERRORS)}")
    specials = list(fam.training_order)
    if kind == "bpe":  # byte-level: the 256 bytes are the alphabet
        _check_size(vocab_size, 256 + len(specials), f"the 256-byte alphabet + {len(specials)} special tokens")
    else:
        _check_size(vocab_size, len(specials) + 1, f"{len(specials)} special tokens + 1")
    corpus = Corpus(source, text_field=text_field, encoding_errors=encoding_errors)

    with tempfile.TemporaryDirectory(prefix="lmforge-tok-") as tmp:
        if kind == "wordpiece":
            engine = _train_wordpiece(corpus, Path(tmp), fam=fam, lowercase=lowercase, vocab_size=vocab_size,
                                      min_frequency=min_frequency, specials=specials, show_progress=show_progress)
            corpus = corpus.spooled if corpus.spooled is not None else corpus
        elif kind == "bpe":
            engine = Engine(models.BPE(dropout=None, continuing_subword_prefix="", end_of_word_suffix="",
                                       fuse_unk=False))
            set_pipeline(engine, fam, lowercase=False)
            _run(engine, trainers.BpeTrainer(
                vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=show_progress),
                corpus, vocab_size, specials)
        else:
            engine = Engine(models.Unigram())
            set_pipeline(engine, fam, lowercase=lowercase)
            _run(engine, trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>",
                                                 show_progress=show_progress), corpus, vocab_size, specials)
            engine = _canonical_unigram(engine, fam=fam, lowercase=lowercase, specials=specials)
    if corpus.lines == 0:
        raise DataError(_empty(corpus))
    for path, n in corpus.replaced.items():
        log(f"warning: {path}: replaced {n} invalid UTF-8 byte(s) with U+FFFD")
    got = engine.get_vocab_size(with_added_tokens=True)
    if got > vocab_size:  # the trainer keeps every alphabet character even past vocab_size
        raise TokenizerError(f"vocab_size={vocab_size} is smaller than the corpus alphabet + special tokens "
                             f"({got} entries before any merge); use --vocab-size larger than {got}")
    # re-read the engine from its own serialization: Unigram scores lose their last float bit on the way
    # to JSON, and the in-memory tokenizer must equal the saved one (shard directories compare hashes)
    engine = Engine.from_str(engine.to_str())
    tok = Tokenizer(engine, family=family, lowercase=lowercase if kind != "bpe" else None)
    tok.backend.post_processor = post_processor(tok.backend, fam, tok._specials)
    tok.training_report = {"lines": corpus.lines, "replaced_bytes": dict(corpus.replaced),  # type: ignore[attr-defined]
                           "vocab_size": len(tok), "vocab_size_asked": vocab_size}
    if len(tok) < vocab_size:
        log("warning: " + smaller_vocabulary(kind, len(tok), vocab_size, corpus.lines, min_frequency))
    return tok


def smaller_vocabulary(kind: str, got: int, asked: int, lines: int, min_frequency: int) -> str:
    """Why the trainer stopped short of ``asked``: it ran out of text, not of room."""
    if kind == "unigram":
        why = "the corpus has no more distinct pieces worth keeping"
        fix = "give more text"
    else:
        why = f"no pair of pieces is left that occurs at least {min_frequency} times, the minimum frequency"
        fix = "give more text" + (" or lower the minimum frequency (--min-frequency)" if min_frequency > 1 else "")
    return (f"the vocabulary has {got:,} tokens, not the {asked:,} asked: {lines:,} line(s) of text are too few "
            f"({why}); {fix}")


def _run(engine: Engine, trainer: Any, corpus: Corpus, vocab_size: int, specials: list[str]) -> None:
    """One streamed training pass, with the engine's errors turned into messages that say what to do."""
    try:
        engine.train_from_iterator(corpus.batches(), trainer=trainer)
    except LmforgeError:
        raise
    except Exception as err:  # the Rust trainer raises plain Exception
        if corpus.lines == 0:
            raise DataError(_empty(corpus)) from None
        if "not large enough" in str(err):
            raise TokenizerError(f"vocab_size={vocab_size} is smaller than the corpus alphabet + "
                                 f"{len(specials)} special tokens (the engine says: {err}); raise --vocab-size") \
                from None
        raise TokenizerError(f"training failed: {err}") from None
    if corpus.lines == 0:
        raise DataError(_empty(corpus))


def _train_wordpiece(corpus: Corpus, tmp: Path, *, fam: Any, lowercase: bool, vocab_size: int,
                     min_frequency: int, specials: list[str], show_progress: bool) -> Engine:
    """HF's WordPieceTrainer, made deterministic.

    The trainer numbers the "##c" continuation characters in hash-map order, and merges of equal count
    are ordered by id, so two runs on the same corpus can give different vocabularies. A first pass
    with vocab_size=1 finds the alphabet; the second pass gets the sorted "##c" tokens up front (as
    trainer special tokens, which fixes their ids), then the vocabulary is rebuilt without marking them
    special. Iterators are spooled to a temporary file for the two passes.
    """
    if corpus.files is None:
        corpus.spooled = corpus.spool(tmp / "corpus.txt")
        if corpus.lines == 0:
            raise DataError(_empty(corpus))
        corpus = corpus.spooled

    def trainer(size: int, extra: list[str]) -> Any:
        return trainers.WordPieceTrainer(vocab_size=size, min_frequency=min_frequency, special_tokens=specials + extra,
                                         limit_alphabet=1000, continuing_subword_prefix="##",
                                         show_progress=show_progress)

    probe = Engine(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    set_pipeline(probe, fam, lowercase=lowercase)
    _run(probe, trainer(1, []), corpus, vocab_size, specials)
    continuation = sorted(t for t in probe.get_vocab(with_added_tokens=False) if t.startswith("##") and len(t) == 3)
    corpus.reset()
    engine = Engine(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    set_pipeline(engine, fam, lowercase=lowercase)
    _run(engine, trainer(vocab_size, continuation), corpus, vocab_size, specials)
    vocab = engine.get_vocab(with_added_tokens=False)
    engine = Engine(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    set_pipeline(engine, fam, lowercase=lowercase)
    return engine


PENALTY_STEP = 1e-4  # the Unigram trainer's score step between characters kept only for coverage


def _canonical_unigram(engine: Engine, *, fam: Any, lowercase: bool, specials: list[str]) -> Engine:
    """The Unigram trainer's result in a canonical form, so the same corpus gives the same file.

    Two run-to-run differences come from the engine: EM sums in hash-map order (scores differ in the
    last bits) and the characters kept only for coverage get scores ``m, m - 1e-4, m - 2e-4, ...`` in
    hash-set order. Scores are rounded to 1e-9 and each such run is renumbered in character order;
    pieces are then sorted by score (ties by text), specials first. Tokenization is unchanged.
    """
    pieces: list[list[Any]] = json.loads(engine.to_str())["model"]["vocab"]
    head = [p for p in pieces if p[0] in specials]
    body = [p for p in pieces if p[0] not in specials]
    i = 0
    while i < len(body):  # find runs of single characters spaced exactly PENALTY_STEP apart
        j = i
        while j + 1 < len(body) and len(body[j][0]) == len(body[j + 1][0]) == 1 and \
                abs((body[j][1] - body[j + 1][1]) - PENALTY_STEP) < 1e-9:
            j += 1
        if j > i:
            scores = [p[1] for p in body[i:j + 1]]
            for p, score in zip(sorted(body[i:j + 1], key=lambda p: p[0]), scores):
                p[1] = score
            body[i:j + 1] = sorted(body[i:j + 1], key=lambda p: -p[1])
        i = j + 1
    body = sorted(([t, round(score, 9)] for t, score in body), key=lambda p: (-p[1], p[0]))
    vocab = [(t, float(score)) for t, score in head + body]
    out = Engine(models.Unigram(vocab, unk_id=vocab.index(next(v for v in vocab if v[0] == "<unk>")),
                                byte_fallback=False))
    set_pipeline(out, fam, lowercase=lowercase)
    out.add_special_tokens(specials)
    return out


def _empty(corpus: Corpus) -> str:
    where = ", ".join(map(str, corpus.files)) if corpus.files else "the iterator"
    return f"empty corpus: {where} holds no non-blank text; give files with text (or a non-empty iterator)"
