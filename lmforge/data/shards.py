"""Tokenized corpora as memory-mapped token shards with a document / sentence index.

``prepare_shards`` streams documents through the tokenizer's batch API (the Rust engine uses every
core) one chunk at a time, appending to the shard files, so memory stays bounded by the chunk size.
``ShardDataset`` maps the result back with O(1) random access to token ranges, documents and
sentences.

Layout of a shard directory::

    meta.json                 format, tokenizer hash, dtype, counts, the inputs (path, size, mtime)
    tokenizer/                a copy of the tokenizer, so training can carry it into checkpoints
    train/ val/               one folder per split:
        tokens-00000.bin ...  the token ids of all documents back to back (uint16 or uint32), split
                              into files of ``shard_tokens`` tokens: token t is in file t // shard_tokens
        docs.bin              int64 (num_documents + 1): token offset where each document starts
        sents.bin             int64 (num_sentences + 1): token offset where each sentence starts
        doc_sents.bin         int64 (num_documents + 1): index of each document's first sentence

Shards hold exactly what the tokenizer gives for each document without special tokens; objectives
add [CLS] / [SEP] / EOS when they build examples. Sentences tile their document.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmforge.data.readers import DOC_MODES, DocMode, iter_documents, split_sentences
from lmforge.errors import ENCODING_ERRORS, DataError

FORMAT = "lmforge-shards"
VERSION = 1
SPLITS = ("train", "val")
DEFAULT_SHARD_TOKENS = 1 << 28  # 256 Mi tokens: 512 MiB per uint16 file
DEFAULT_CHUNK_BYTES = 4 << 20  # text handed to the tokenizer per batch; bounds the memory used
_INDEX = ("docs", "sents", "doc_sents")


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 of the tokenizer's tokenizer.json content, canonicalized.

    Truncation / padding settings are dropped (they do not change which ids a text gets) and keys are
    sorted, so the same vocabulary and rules give the same hash however the file was written.
    """
    backend = getattr(tokenizer, "backend", tokenizer)
    content = json.loads(backend.to_str())
    content.pop("truncation", None)
    content.pop("padding", None)
    blob = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _plain_backend(tokenizer: Any):
    """A private copy of the Rust tokenizer with truncation and padding off (shards keep every token)."""
    from tokenizers import Tokenizer as RustTokenizer

    backend = RustTokenizer.from_str(tokenizer.backend.to_str())
    backend.no_truncation()
    backend.no_padding()
    return backend


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65,536), else uint32: half the disk and page cache."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _input_record(path: str | Path) -> dict[str, Any]:
    if isinstance(path, str) and path.startswith("hf:"):
        return {"path": path}
    p = Path(path)
    if not p.is_file():
        raise DataError(f"input file not found: {p}")
    st = p.stat()
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


# --- writing -------------------------------------------------------------------------------------


class _SplitWriter:
    """Appends documents of one split to its token files and index files."""

    def __init__(self, folder: Path, dtype: np.dtype, shard_tokens: int) -> None:
        self.folder, self.dtype, self.shard_tokens = folder, dtype, shard_tokens
        folder.mkdir(parents=True)
        self.num_tokens = self.num_documents = self.num_sentences = 0
        self.shards: list[str] = []
        self._index = {name: open(folder / f"{name}.bin", "wb") for name in _INDEX}
        for f in self._index.values():
            f.write(np.zeros(1, np.int64).tobytes())  # every offsets array starts at 0

    def write(self, ids: np.ndarray, doc_lens: np.ndarray, sent_lens: np.ndarray, doc_nsents: np.ndarray) -> None:
        """Append documents given as their concatenated ids, their lengths and their sentence lengths."""
        if len(doc_lens) == 0:
            return
        self._index["docs"].write((self.num_tokens + np.cumsum(doc_lens, dtype=np.int64)).tobytes())
        self._index["sents"].write((self.num_tokens + np.cumsum(sent_lens, dtype=np.int64)).tobytes())
        self._index["doc_sents"].write((self.num_sentences + np.cumsum(doc_nsents, dtype=np.int64)).tobytes())
        self.num_documents += len(doc_lens)
        self.num_sentences += len(sent_lens)
        ids = ids.astype(self.dtype, copy=False)
        while len(ids):
            room = self.shard_tokens - self.num_tokens % self.shard_tokens
            name = f"tokens-{self.num_tokens // self.shard_tokens:05d}.bin"
            if not self.shards or self.shards[-1] != name:
                self.shards.append(name)
            with open(self.folder / name, "ab") as f:
                f.write(ids[:room].tobytes())
            self.num_tokens += min(room, len(ids))
            ids = ids[room:]

    def close(self) -> dict[str, Any]:
        for f in self._index.values():
            f.close()
        return {"tokens": self.num_tokens, "documents": self.num_documents,
                "sentences": self.num_sentences, "shards": self.shards}


def _sentence_lengths(text: str, encoding: Any) -> list[int]:
    """Token lengths of the sentences of one document (they sum to its token count).

    A sentence starts at the token that holds its first character (``char_to_token``): with byte-level
    BPE that is "ĠWorld", which starts at the space before "World". Cutting the document's own
    encoding keeps the shards exactly the tokenizer's output for the whole document.
    """
    n = len(encoding.ids)
    spans = split_sentences(text)
    if len(spans) <= 1:
        return [n]
    cuts = [encoding.char_to_token(start) for start, _ in spans[1:]]
    if any(c is None for c in cuts):  # a first character the normalizer dropped: search the offsets
        ends = np.fromiter((e for _, e in encoding.offsets), dtype=np.int64, count=n)
        cuts = np.searchsorted(ends, np.array([st for st, _ in spans[1:]], dtype=np.int64), side="right").tolist()
    bounds = sorted({0, n, *(c for c in cuts if 0 < c < n)})  # drops sentences that got no token
    return [b - a for a, b in zip(bounds, bounds[1:])]


@dataclass
class PrepareResult:
    """What ``prepare_shards`` did: ``up_to_date`` is True when it found matching shards and did nothing."""

    out: Path
    up_to_date: bool
    meta: dict[str, Any] = field(default_factory=dict)
    replaced: bool = False  # an older shard directory (other inputs / tokenizer / settings) was rebuilt
    chunks: int = 0  # tokenizer batches it flushed (memory is bounded by one chunk)
    replaced_bytes: dict[str, int] = field(default_factory=dict)  # file -> bytes read as U+FFFD ("replace")


def _fingerprint(inputs: Sequence[str | Path], tokenizer: Any, *, val_fraction: float, doc_mode: str,
                 text_field: str, shard_tokens: int, encoding_errors: str = "strict") -> dict[str, Any]:
    """What decides the shards' content: the inputs (path, size, mtime), the tokenizer and the settings."""
    fingerprint = {
        "inputs": [_input_record(p) for p in inputs],
        "tokenizer_hash": tokenizer_hash(tokenizer),
        "settings": {"doc_mode": doc_mode, "val_fraction": val_fraction, "text_field": text_field,
                     "shard_tokens": shard_tokens},
    }
    if encoding_errors != "strict":  # recorded only when not the default: older shard dirs stay up to date
        fingerprint["settings"]["encoding_errors"] = encoding_errors
    return fingerprint


def shards_up_to_date(out: str | Path, inputs: Sequence[str | Path], *, tokenizer: Any, val_fraction: float = 0.01,
                      doc_mode: DocMode = "line", text_field: str = "text",
                      shard_tokens: int = DEFAULT_SHARD_TOKENS,
                      encoding_errors: str = "strict") -> dict[str, Any] | None:
    """``out``'s meta.json when it already holds intact shards of these inputs with this tokenizer and these
    settings (``prepare_shards`` would do nothing), else None."""
    meta_path = Path(out) / "meta.json"
    if not meta_path.is_file():
        return None
    fingerprint = _fingerprint(inputs, tokenizer, val_fraction=val_fraction, doc_mode=doc_mode,
                               text_field=text_field, shard_tokens=shard_tokens, encoding_errors=encoding_errors)
    try:
        old = json.loads(meta_path.read_text())
        if all(old.get(k) == v for k, v in fingerprint.items()) and _complete(Path(out), old):
            return old
    except (ValueError, KeyError, TypeError, AttributeError):
        pass  # an unreadable meta.json: not up to date
    return None


def prepare_shards(inputs: Sequence[str | Path], *, tokenizer: Any, out: str | Path,
                   val_fraction: float = 0.01, doc_mode: DocMode = "line", text_field: str = "text",
                   chunk_bytes: int = DEFAULT_CHUNK_BYTES, shard_tokens: int = DEFAULT_SHARD_TOKENS,
                   progress: bool = True, force: bool = False, overwrite: bool = False,
                   encoding_errors: str = "strict") -> PrepareResult:
    """Tokenize ``inputs`` with ``tokenizer`` (an lmforge Tokenizer) into a shard directory ``out``.

    Documents go to the validation split evenly spaced, one in every ``1 / val_fraction`` (by
    document, in input order), so the split is deterministic and needs no pass over the corpus.
    Re-running with the same inputs (paths, sizes, mtimes), tokenizer and settings does nothing
    unless ``force``. The directory is built beside ``out`` and renamed into place at the end, so an
    interrupted run never leaves half a shard directory behind. A text file that is not UTF-8 fails
    naming file:line and the byte, unless ``encoding_errors="replace"`` (bad bytes read as U+FFFD and
    counted in the result's ``replaced_bytes``), as tokenizer training does. A non-empty ``out`` that
    is not a shard directory is refused unless ``overwrite``: the shard files then go beside its other files.
    """
    if not inputs:
        raise DataError("no input files given; pass one or more text / .gz / jsonl / parquet files")
    if doc_mode not in DOC_MODES:
        raise DataError(f"unknown doc mode {doc_mode!r}; choose one of {', '.join(DOC_MODES)}")
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if chunk_bytes < 1 or shard_tokens < 1:
        raise DataError("chunk_bytes and shard_tokens must be positive")
    if encoding_errors not in ENCODING_ERRORS:
        raise DataError(f"encoding_errors must be one of {', '.join(ENCODING_ERRORS)}, got {encoding_errors!r}")
    out = Path(out)
    fingerprint = _fingerprint(inputs, tokenizer, val_fraction=val_fraction, doc_mode=doc_mode,
                               text_field=text_field, shard_tokens=shard_tokens,
                               encoding_errors=encoding_errors)
    records = fingerprint["inputs"]
    meta_path = out / "meta.json"
    replaced = meta_path.is_file()
    if replaced and not force:
        old = shards_up_to_date(out, inputs, tokenizer=tokenizer, val_fraction=val_fraction, doc_mode=doc_mode,
                                text_field=text_field, shard_tokens=shard_tokens, encoding_errors=encoding_errors)
        if old is not None:
            return PrepareResult(out=out, up_to_date=True, meta=old)
    elif out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise DataError(f"{out} exists and is not an lmforge shard directory; choose another --out, or pass "
                        "--overwrite to put the shards beside its files")

    vocab_size = len(tokenizer)
    dtype = token_dtype(vocab_size)
    backend = _plain_backend(tokenizer)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        writers = {s: _SplitWriter(tmp / s, dtype, shard_tokens) for s in SPLITS}
        total = sum(r.get("size", 0) for r in records)
        replaced_bytes: dict[str, int] = {}
        chunks = _tokenize_into(inputs, backend, writers, doc_mode=doc_mode, text_field=text_field,
                                val_fraction=val_fraction, chunk_bytes=chunk_bytes, total=total,
                                progress=progress, encoding_errors=encoding_errors, replaced=replaced_bytes)
        splits = {s: w.close() for s, w in writers.items()}
        if splits["train"]["documents"] == 0:
            raise DataError("the corpus is empty: no document in "
                            f"{', '.join(str(p) for p in inputs)} has any token; check the files "
                            "(and --text-field for jsonl / parquet)")
        tokenizer.save_pretrained(tmp / "tokenizer")
        meta = {"format": FORMAT, "version": VERSION, **fingerprint, "dtype": dtype.name,
                "vocab_size": vocab_size, "tokenizer_kind": getattr(tokenizer, "kind", None),
                "special_ids": _special_ids(tokenizer), "splits": splits,
                **({"replaced_bytes": replaced_bytes} if replaced_bytes else {}),
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        entries = (*SPLITS, "tokenizer", "meta.json")  # meta.json last: it marks the directory complete
        if out.is_dir() and any(p.name not in entries for p in out.iterdir()):  # other files there: keep them
            (out / "meta.json").unlink(missing_ok=True)  # no moment where old meta.json describes new files
            for name in entries:
                target = out / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
                os.replace(tmp / name, target)
            tmp.rmdir()
        else:
            if out.exists():
                shutil.rmtree(out)  # shard files only, or an empty dir
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return PrepareResult(out=out, up_to_date=False, meta=meta, chunks=chunks, replaced=replaced,
                         replaced_bytes=replaced_bytes)


def _special_ids(tokenizer: Any) -> dict[str, int | None]:
    names = ("pad", "unk", "cls", "sep", "mask", "bos", "eos")
    return {n: getattr(tokenizer, f"{n}_token_id", None) for n in names}


def _complete(out: Path, meta: dict[str, Any]) -> bool:
    """All files meta.json names are present with their expected sizes (a no-op needs intact shards)."""
    itemsize = np.dtype(meta["dtype"]).itemsize
    shard_tokens = meta["settings"]["shard_tokens"]
    for split, info in meta["splits"].items():
        folder = out / split
        left = info["tokens"]
        for name in info["shards"]:
            f = folder / name
            n = min(left, shard_tokens)
            if not f.is_file() or f.stat().st_size != n * itemsize:
                return False
            left -= n
        for name, n in (("docs", info["documents"]), ("sents", info["sentences"]), ("doc_sents", info["documents"])):
            f = folder / f"{name}.bin"
            if not f.is_file() or f.stat().st_size != (n + 1) * 8:
                return False
    return (out / "tokenizer").is_dir()


def _tokenize_into(inputs: Sequence[str | Path], backend: Any, writers: dict[str, _SplitWriter], *,
                   doc_mode: DocMode, text_field: str, val_fraction: float, chunk_bytes: int,
                   total: int, progress: bool, encoding_errors: str = "strict",
                   replaced: dict[str, int] | None = None) -> int:
    from concurrent.futures import Future, ThreadPoolExecutor

    from tqdm.auto import tqdm

    doc_index = 0  # documents kept so far, over all inputs: decides the split
    chunks = 0

    def finish(docs: list[str], encoded: Future) -> None:
        """Split a tokenized chunk into documents / sentences and append them to their split."""
        nonlocal doc_index, chunks
        chunks += 1
        parts: dict[str, tuple[list[np.ndarray], list[int], list[int], list[int]]] = {
            s: ([], [], [], []) for s in SPLITS}
        for text, enc in zip(docs, encoded.result()):
            ids = enc.ids
            if not ids:
                continue
            # evenly spaced: document i is held out when floor((i + 1) * f) steps past floor(i * f)
            split = "val" if int((doc_index + 1) * val_fraction) > int(doc_index * val_fraction) else "train"
            doc_index += 1
            sents = _sentence_lengths(text, enc)
            arrays, doc_lens, sent_lens, nsents = parts[split]
            arrays.append(np.asarray(ids, dtype=np.int64))
            doc_lens.append(len(ids))
            sent_lens.extend(sents)
            nsents.append(len(sents))
        for s, (arrays, doc_lens, sent_lens, nsents) in parts.items():
            if arrays:
                writers[s].write(np.concatenate(arrays), np.asarray(doc_lens, np.int64),
                                 np.asarray(sent_lens, np.int64), np.asarray(nsents, np.int64))

    # Two chunks in flight: the Rust tokenizer encodes chunk k (on every core, without the GIL) while
    # this thread reads chunk k + 1 and indexes / writes chunk k - 1.
    with tqdm(total=total or None, unit="B", unit_scale=True, unit_divisor=1024, desc="prepare",
              disable=not progress, dynamic_ncols=True) as bar, ThreadPoolExecutor(max_workers=1) as pool:
        pending: tuple[list[str], Future] | None = None
        docs: list[str] = []
        size = 0
        for doc in iter_documents(inputs, doc_mode=doc_mode, text_field=text_field, progress=bar.update,
                                  encoding_errors=encoding_errors, replaced=replaced):
            docs.append(doc)
            size += len(doc)
            if size >= chunk_bytes:
                submitted = (docs, pool.submit(backend.encode_batch, docs, add_special_tokens=False))
                if pending is not None:
                    finish(*pending)
                    bar.set_postfix(docs=doc_index, refresh=False)
                pending, docs, size = submitted, [], 0
        if pending is not None:
            finish(*pending)
        if docs:
            finish(docs, pool.submit(backend.encode_batch, docs, add_special_tokens=False))
        bar.set_postfix(docs=doc_index)
    return chunks


# --- reading -------------------------------------------------------------------------------------


def _check_split_files(folder: Path, info: dict[str, Any], dtype: np.dtype, shard_tokens: int) -> None:
    """Every file of a split has the size meta.json implies (a cut, missing or re-typed file fails here, not as
    a crash mid-training), and the offsets end where the tokens do."""
    if not all(isinstance(info[k], int) and info[k] >= 0 for k in ("tokens", "documents", "sentences")) or \
            not isinstance(shard_tokens, int) or shard_tokens < 1 or dtype.kind not in "ui":
        raise DataError(f"{folder.parent / 'meta.json'} holds impossible values (token counts must be integers, the "
                        f"dtype an integer type, not {dtype}); re-run `lmforge prepare`")
    want = {name: min(shard_tokens, info["tokens"] - i * shard_tokens) * dtype.itemsize
            for i, name in enumerate(info["shards"])}
    want |= {"docs.bin": (info["documents"] + 1) * 8, "sents.bin": (info["sentences"] + 1) * 8,
             "doc_sents.bin": (info["documents"] + 1) * 8}
    for name, size in want.items():
        file = folder / str(name)
        if not file.is_file():
            raise DataError(f"{file} is missing; the shard directory is incomplete: re-run `lmforge prepare`")
        if file.stat().st_size != size:
            raise DataError(f"{file} has {file.stat().st_size} bytes where meta.json implies {size} (cut, or written "
                            f"with another dtype than {dtype}); re-run `lmforge prepare`")
    ends = [int(np.fromfile(folder / name, dtype=np.int64, offset=(count) * 8)[0])
            for name, count in (("docs.bin", info["documents"]), ("sents.bin", info["sentences"]))]
    if ends != [info["tokens"]] * 2 or sum(want[n] for n in info["shards"]) != info["tokens"] * dtype.itemsize:
        raise DataError(f"{folder}: the document offsets do not end at the {info['tokens']} tokens meta.json "
                        "counts; re-run `lmforge prepare`")


class ShardDataset:
    """One split of a shard directory, memory-mapped: O(1) access to tokens, documents, sentences.

    >>> ds = ShardDataset("shards", "train", tokenizer=tok)   # tokenizer: verify the hash (optional)
    >>> ds.num_tokens, ds.num_documents, ds.num_sentences
    >>> ds.tokens(100, 228)           # np.ndarray of 128 ids (uint16 / uint32)
    >>> ds.document(3); ds.sentence(17); ds.document_sentences(3)   # the sentence id range of doc 3
    """

    def __init__(self, directory: str | Path, split: str = "train", *, tokenizer: Any = None) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.is_file():
            raise DataError(f"{self.directory} is not a shard directory (no meta.json); "
                            "create one with `lmforge prepare --tokenizer TOK --out SHARDS FILES...`")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as err:  # UnicodeDecodeError is a ValueError
            raise DataError(f"{meta_path} is damaged ({err}); re-run `lmforge prepare`") from None
        if not isinstance(self.meta, dict) or self.meta.get("format") != FORMAT or self.meta.get("version") != VERSION:
            raise DataError(f"{meta_path}: not an lmforge shard directory of version {VERSION}; "
                            "re-run `lmforge prepare`")
        try:
            self._open(split)
        except DataError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, OSError) as err:
            raise DataError(f"{self.directory} is damaged ({type(err).__name__}: {err}); re-run `lmforge prepare` "
                            "to write it again") from None
        if tokenizer is not None:
            self.verify_tokenizer(tokenizer)

    def _open(self, split: str) -> None:
        """Read meta.json's fields for ``split`` and map its files, checking every size against meta.json."""
        if split not in self.meta["splits"]:
            raise DataError(f"unknown split {split!r}; this shard directory has {sorted(self.meta['splits'])}")
        info = self.meta["splits"][split]
        if info["documents"] == 0:
            raise DataError(f"{self.directory}: the {split!r} split is empty; re-run `lmforge prepare` with a "
                            "larger --val-fraction (or more documents)" if split == "val" else
                            f"{self.directory}: the {split!r} split is empty")
        self.split = split
        self.dtype = np.dtype(self.meta["dtype"])
        self.vocab_size: int = self.meta["vocab_size"]
        self.special_ids: dict[str, int | None] = self.meta.get("special_ids", {})
        self.num_tokens: int = info["tokens"]
        self.num_documents: int = info["documents"]
        self.num_sentences: int = info["sentences"]
        self._shard_tokens: int = self.meta["settings"]["shard_tokens"]
        folder = self.directory / split
        _check_split_files(folder, info, self.dtype, self._shard_tokens)
        self._shards = [np.memmap(folder / name, dtype=self.dtype, mode="r") for name in info["shards"]]
        # (num_documents + 1,) token offsets; (num_sentences + 1,) token offsets; (num_documents + 1,) sentence ids
        self.doc_offsets = np.memmap(folder / "docs.bin", dtype=np.int64, mode="r")
        self.sent_offsets = np.memmap(folder / "sents.bin", dtype=np.int64, mode="r")
        self.doc_sent_offsets = np.memmap(folder / "doc_sents.bin", dtype=np.int64, mode="r")

    def __reduce__(self):
        # re-open the memory maps in the receiving process instead of pickling their contents
        return (ShardDataset, (str(self.directory), self.split))

    @property
    def tokenizer_hash(self) -> str:
        return self.meta["tokenizer_hash"]

    def verify_tokenizer(self, tokenizer: Any) -> None:
        """Raise DataError when ``tokenizer`` is not the one these shards were made with."""
        got = tokenizer_hash(tokenizer)
        if got != self.tokenizer_hash:
            raise DataError(
                f"{self.directory} was tokenized with a different tokenizer (hash {self.tokenizer_hash[:12]} "
                f"in meta.json, this tokenizer {got[:12]}); use the tokenizer saved in "
                f"{self.directory / 'tokenizer'} or re-run `lmforge prepare` with this one")

    def same_tokenizer(self, tokenizer: Any, *, sample_tokens: int = 4096) -> bool:
        """Whether ``tokenizer`` gives the ids these shards hold: the same hash, or (the same tokenizer saved
        another way, e.g. vocab.txt instead of tokenizer.json) the same vocabulary and the same ids for the
        text of the split's first ``sample_tokens`` tokens."""
        if tokenizer_hash(tokenizer) == self.tokenizer_hash:
            return True
        own = self.load_tokenizer()
        if own.get_vocab() != tokenizer.get_vocab():
            return False
        text = own.decode(self.tokens(0, min(self.num_tokens, sample_tokens)).tolist())
        return own.encode(text, add_special_tokens=False) == tokenizer.encode(text, add_special_tokens=False)

    def load_tokenizer(self):
        """The lmforge Tokenizer copied into the shard directory by prepare."""
        from lmforge.tokenization.tokenizer import Tokenizer

        return Tokenizer.from_pretrained(self.directory / "tokenizer")

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Token ids ``[start, stop)`` of the split's token stream (documents back to back)."""
        if not 0 <= start <= stop <= self.num_tokens:
            raise IndexError(f"token range [{start}, {stop}) outside [0, {self.num_tokens})")
        if start == stop:
            return np.empty(0, self.dtype)
        first, last = start // self._shard_tokens, (stop - 1) // self._shard_tokens
        if first == last:  # the common case: a view into one memory map
            base = first * self._shard_tokens
            return np.asarray(self._shards[first][start - base:stop - base])
        pieces = []
        for s in range(first, last + 1):
            base = s * self._shard_tokens
            pieces.append(self._shards[s][max(start - base, 0):min(stop - base, self._shard_tokens)])
        return np.concatenate(pieces)

    def document(self, i: int) -> np.ndarray:
        """Token ids of document ``i``."""
        return self.tokens(int(self.doc_offsets[i]), int(self.doc_offsets[i + 1]))

    def sentence(self, j: int) -> np.ndarray:
        """Token ids of sentence ``j`` (sentences are numbered across the whole split)."""
        return self.tokens(int(self.sent_offsets[j]), int(self.sent_offsets[j + 1]))

    def document_sentences(self, i: int) -> range:
        """The sentence ids of document ``i``."""
        return range(int(self.doc_sent_offsets[i]), int(self.doc_sent_offsets[i + 1]))

    def __repr__(self) -> str:
        return (f"ShardDataset({str(self.directory)!r}, {self.split!r}: {self.num_documents:,} documents, "
                f"{self.num_sentences:,} sentences, {self.num_tokens:,} tokens, {self.dtype.name})")
