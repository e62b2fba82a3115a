"""`Tokenizer`: the HF-style tokenizer API over the HF `tokenizers` engine.

`tok(text, pair, padding=..., truncation=..., max_length=..., return_tensors="pt", ...)` behaves as HF
transformers' fast tokenizers do (same names, same outputs); `tok.backend` is the raw
`tokenizers.Tokenizer` for batch work. Loading reads HF `tokenizer.json`, BERT `vocab.txt`,
GPT-2 / RoBERTa `vocab.json` + `merges.txt` and lmforge's own save; `save_pretrained` writes files
HF transformers' `AutoTokenizer` loads. Training lives in `train.py`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding, Tokenizer as Engine

from lmforge.errors import InputError, TokenizerError, suggest
from lmforge.tokenization.families import (
    FAMILIES, SPECIAL_NAMES, Family, added_token, post_processor)

TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
# HF's "no limit" model_max_length: above this, truncation=True without max_length does nothing
VERY_LARGE_INTEGER = int(1e30)


def check_model_vocab(model_vocab_size: int, tokenizer: Any, *, cli: str | None = None) -> None:
    """Raise when ``tokenizer`` has ids the model's embedding matrix cannot look up.

    A smaller tokenizer is fine (BERT's and GPT-2's embeddings are padded past the vocabulary). ``cli``:
    the fix on the command line, where resizing is not an option (default: use the model's tokenizer).
    """
    n = len(tokenizer)
    if n > model_vocab_size:
        what = (f"the tokenizer has {n} tokens but the model's embeddings have only {model_vocab_size} rows "
                f"(ids >= {model_vocab_size} would crash the embedding lookup)")
        raise TokenizerError(
            f"{what}; call model.resize_token_embeddings(len(tokenizer)) i.e. resize_token_embeddings({n}) after "
            "adding tokens, or use the tokenizer the model was trained with",
            cli=f"{what}: it is not the tokenizer the model was trained with; "
                + (cli or "use that one (the one saved beside the model)"))


class BatchEncoding(dict):
    """The dict ``tok(...)`` returns (input_ids, attention_mask, ...) plus the engine's encodings.

    ``word_ids(i)`` / ``sequence_ids(i)`` / ``tokens(i)`` read encoding ``i`` (for tagging alignment
    and QA windows); attribute access (``enc.input_ids``) works as in HF.
    """

    def __init__(self, data: dict[str, Any], encodings: list[Encoding]) -> None:
        super().__init__(data)
        self.encodings = encodings

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        return self.encodings[batch_index].word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        return self.encodings[batch_index].sequence_ids

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self.encodings[batch_index].tokens

    def to(self, device: Any) -> "BatchEncoding":
        """Move tensor values to ``device`` (return_tensors="pt")."""
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self


class Tokenizer:
    """A trained or loaded tokenizer of one family (bert / gpt2 / roberta / albert or a generic HF file)."""

    def __init__(self, backend: Engine, *, family: str, lowercase: bool | None = None,
                 special_tokens: dict[str, str | None] | None = None,
                 additional_special_tokens: Sequence[str] = (), model_max_length: int | None = None) -> None:
        if family not in FAMILIES:
            raise TokenizerError(f"unknown tokenizer family {family!r}; one of {', '.join(FAMILIES)}."
                                 + suggest(family, FAMILIES))
        self.backend = backend
        self.family: str = family
        self._family: Family = FAMILIES[family]
        self.lowercase = lowercase
        self.model_max_length: int = model_max_length or VERY_LARGE_INTEGER
        self.padding_side = "right"
        self.truncation_side = "right"
        self.pad_token_type_id = 0
        given = dict(self._family.specials if special_tokens is None else special_tokens)
        self._specials: dict[str, str | None] = {name: given.get(name) for name in SPECIAL_NAMES}
        self.additional_special_tokens: list[str] = list(additional_special_tokens)
        # special tokens are matched on the raw text and never split (as HF registers them). One that a
        # tokenizer.json already registers as special keeps its flags (e.g. whether RoBERTa's <mask> eats the
        # space before it): the file is used as it is, as HF does
        registered = {t.content for t in self.backend.get_added_tokens_decoder().values() if t.special}
        self.backend.add_special_tokens([added_token(self._family, t) for t in self.all_special_tokens
                                         if t not in registered])

    # ------------------------------------------------------------------ identity
    @property
    def kind(self) -> str:
        """The engine model: "wordpiece" | "bpe" | "unigram"."""
        return self._family.kind

    @property
    def model_input_names(self) -> list[str]:
        return list(self._family.model_input_names)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens (HF's meaning)."""
        return self.backend.get_vocab_size(with_added_tokens=False)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def __repr__(self) -> str:
        return (f"Tokenizer(family={self.family!r}, kind={self.kind!r}, len={len(self)}, "
                f"lowercase={self.lowercase}, specials={ {k: v for k, v in self._specials.items() if v} })")

    # ------------------------------------------------------------------ special tokens
    def _get_special(self, name: str) -> str | None:
        return self._specials[name]

    def _set_special(self, name: str, token: str | None) -> None:
        self._specials[name] = None if token is None else str(token)
        if token is not None and self.backend.token_to_id(str(token)) is None:
            self.backend.add_special_tokens([added_token(self._family, str(token))])
        if name in ("cls", "sep"):
            self.backend.post_processor = post_processor(self.backend, self._family, self._specials)

    def _special_id(self, name: str) -> int | None:
        token = self._specials[name]
        return None if token is None else self.backend.token_to_id(token)

    bos_token = property(lambda s: s._get_special("bos"), lambda s, v: s._set_special("bos", v))
    eos_token = property(lambda s: s._get_special("eos"), lambda s, v: s._set_special("eos", v))
    unk_token = property(lambda s: s._get_special("unk"), lambda s, v: s._set_special("unk", v))
    sep_token = property(lambda s: s._get_special("sep"), lambda s, v: s._set_special("sep", v))
    pad_token = property(lambda s: s._get_special("pad"), lambda s, v: s._set_special("pad", v))
    cls_token = property(lambda s: s._get_special("cls"), lambda s, v: s._set_special("cls", v))
    mask_token = property(lambda s: s._get_special("mask"), lambda s, v: s._set_special("mask", v))
    bos_token_id = property(lambda s: s._special_id("bos"))
    eos_token_id = property(lambda s: s._special_id("eos"))
    unk_token_id = property(lambda s: s._special_id("unk"))
    sep_token_id = property(lambda s: s._special_id("sep"))
    pad_token_id = property(lambda s: s._special_id("pad"))
    cls_token_id = property(lambda s: s._special_id("cls"))
    mask_token_id = property(lambda s: s._special_id("mask"))

    @property
    def special_tokens_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {f"{n}_token": t for n, t in self._specials.items() if t is not None}
        if self.additional_special_tokens:
            out["additional_special_tokens"] = list(self.additional_special_tokens)
        return out

    @property
    def all_special_tokens(self) -> list[str]:
        seen: dict[str, None] = {}
        for token in [*self._specials.values(), *self.additional_special_tokens]:
            if token is not None:
                seen[token] = None
        return list(seen)

    @property
    def all_special_ids(self) -> list[int]:
        return [i for t in self.all_special_tokens if (i := self.backend.token_to_id(t)) is not None]

    def add_special_tokens(self, special_tokens_dict: dict[str, Any]) -> int:
        """Set special tokens (``bos_token``, ..., ``additional_special_tokens``); returns how many are new.

        ``additional_special_tokens`` replaces the previous list, as in HF.
        """
        names = [n + "_token" for n in SPECIAL_NAMES]
        for key in special_tokens_dict:  # check every key before changing anything
            if key not in names and key != "additional_special_tokens":
                raise TokenizerError(f"unknown special token key {key!r}; use one of {', '.join(names)}, "
                                     "additional_special_tokens." + suggest(key, names))
        for key, value in special_tokens_dict.items():
            if key == "additional_special_tokens":
                self.additional_special_tokens = [str(v) for v in value]
            else:
                self._specials[key.removesuffix("_token")] = None if value is None else str(value)
        before = len(self)
        # every value is registered as special (matched whole, skipped by decode), new or not; new ones
        # get ids in the order given, as in HF
        given = [str(t) for k, v in special_tokens_dict.items() if v is not None
                 for t in (v if k == "additional_special_tokens" else [v])]
        order = list(dict.fromkeys(given + self.all_special_tokens))
        self.backend.add_special_tokens([added_token(self._family, t) for t in order])
        self.backend.post_processor = post_processor(self.backend, self._family, self._specials)
        return len(self) - before

    def add_tokens(self, tokens: str | Sequence[str], special_tokens: bool = False) -> int:
        """Add ordinary (or special) tokens to the vocabulary; returns how many were new."""
        tokens = [tokens] if isinstance(tokens, str) else [str(t) for t in tokens]
        if special_tokens:
            return self.add_special_tokens({"additional_special_tokens": [*self.additional_special_tokens, *tokens]})
        from tokenizers import AddedToken

        # normalized=True, as HF: "Hello" added to an uncased vocab also matches "hello". The count is
        # the growth of len(tok) (HF also counts tokens already in the vocabulary)
        before = len(self)
        self.backend.add_tokens([AddedToken(t, normalized=True) for t in tokens])
        return len(self) - before

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self.backend.num_special_tokens_to_add(pair)

    # ------------------------------------------------------------------ token <-> id
    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        return self.backend.encode(text, pair, add_special_tokens=add_special_tokens).tokens

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | None | list[int | None]:
        """Ids of tokens; unknown ones get the unk id (None when the family has no unknown token)."""
        if isinstance(tokens, str):
            i = self.backend.token_to_id(tokens)
            return self.unk_token_id if i is None else i
        return [self.convert_tokens_to_ids(t) for t in tokens]  # type: ignore[misc]

    def convert_ids_to_tokens(self, ids: int | Iterable[int], skip_special_tokens: bool = False) -> Any:
        if isinstance(ids, int) or (hasattr(ids, "ndim") and getattr(ids, "ndim") == 0):
            return self.backend.id_to_token(int(ids))  # type: ignore[arg-type]
        special = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.backend.id_to_token(int(i)) for i in ids if int(i) not in special]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        return self.backend.decoder.decode(list(tokens)) if self.backend.decoder else " ".join(tokens)

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (a list, a 1-D tensor or array, or one id)."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return self.backend.decode_batch([[int(i) for i in s] for s in sequences],
                                         skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------ encoding
    def __call__(self, text: Any, text_pair: Any = None, *, add_special_tokens: bool = True,
                 padding: bool | str = False, truncation: bool | str | None = None, max_length: int | None = None,
                 stride: int = 0, pad_to_multiple_of: int | None = None, is_split_into_words: bool = False,
                 return_tensors: str | None = None, return_token_type_ids: bool | None = None,
                 return_attention_mask: bool | None = None, return_overflowing_tokens: bool = False,
                 return_special_tokens_mask: bool = False, return_offsets_mapping: bool = False,
                 return_length: bool = False) -> BatchEncoding:
        """Encode one text, a pair, or a batch of either; the same keys and values as HF's fast tokenizers."""
        if return_tensors not in (None, "pt", "np"):
            raise InputError(f"return_tensors={return_tensors!r}; use 'pt', 'np' or None")
        inputs, batched, has_pair = _pair_inputs(text, text_pair, is_split_into_words)
        trunc, pad, max_length = self._strategies(padding, truncation, max_length)
        self._check_truncation(trunc, max_length, stride, add_special_tokens=add_special_tokens, pair=has_pair)
        encodings = self._encode_batch(inputs, trunc=trunc, pad=pad, max_length=max_length, stride=stride,
                                       pad_to_multiple_of=pad_to_multiple_of,
                                       add_special_tokens=add_special_tokens, pretokenized=is_split_into_words)
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self._family.model_input_names
        if return_attention_mask is None:
            return_attention_mask = True
        data, flat = _collect(encodings, overflowing=return_overflowing_tokens, token_type_ids=return_token_type_ids,
                              attention_mask=return_attention_mask, special_tokens_mask=return_special_tokens_mask,
                              offsets_mapping=return_offsets_mapping, length=return_length)
        if not return_overflowing_tokens and not batched and return_tensors is None:
            data = {k: v[0] for k, v in data.items()}  # HF drops the batch axis of a single input
        if return_tensors is not None:
            data = {k: _as_tensor(k, v, return_tensors) for k, v in data.items()}
        return BatchEncoding(data, flat)

    def _check_truncation(self, trunc: str, max_length: int | None, stride: int, *,
                          add_special_tokens: bool, pair: bool) -> None:
        """Refuse settings the engine would silently ignore."""
        if trunc != "do_not_truncate" and add_special_tokens and max_length is not None:
            needed = self.backend.num_special_tokens_to_add(pair)
            if max_length <= needed:  # the engine would silently return the untruncated sequence
                raise TokenizerError(
                    f"max_length={max_length} leaves no room for text: {'a pair' if pair else 'one text'} "
                    f"takes {needed} special tokens; use max_length > {needed}")
        if stride and trunc == "do_not_truncate":
            raise InputError("stride needs truncation (truncation=True or 'only_second' with max_length)")

    def _encode_batch(self, inputs: list[Any], *, trunc: str, pad: str, max_length: int | None, stride: int,
                      pad_to_multiple_of: int | None, add_special_tokens: bool,
                      pretokenized: bool) -> list[Encoding]:
        """Encode with this call's truncation / padding; the engine's own settings are restored after."""
        previous = (self.backend.truncation, self.backend.padding)
        try:
            if trunc != "do_not_truncate":
                self.backend.enable_truncation(max_length, stride=stride, strategy=trunc,
                                               direction=self.truncation_side)
            else:
                self.backend.no_truncation()
            if pad != "do_not_pad":
                if self.pad_token is None or self.pad_token_id is None:
                    raise TokenizerError(
                        "asking to pad but this tokenizer has no pad token; set one, e.g. "
                        "`tok.pad_token = tok.eos_token` or tok.add_special_tokens({'pad_token': '[PAD]'}) "
                        "(then resize the model's embeddings)")
                self.backend.enable_padding(
                    direction=self.padding_side, pad_id=self.pad_token_id, pad_type_id=self.pad_token_type_id,
                    pad_token=self.pad_token, length=max_length if pad == "max_length" else None,
                    pad_to_multiple_of=pad_to_multiple_of)
            else:
                self.backend.no_padding()
            try:
                return self.backend.encode_batch(inputs, add_special_tokens=add_special_tokens,
                                                 is_pretokenized=pretokenized)
            except Exception as err:  # the engine raises plain Exception for impossible truncation
                if "runcation" in str(err):
                    raise TokenizerError(
                        f"cannot truncate to max_length={max_length} with truncation={trunc!r}: {err}. The "
                        "sequence allowed to shrink is too short (or absent, for 'only_second' without a "
                        "pair); raise max_length, use truncation='longest_first', or shorten the other "
                        "text") from None
                raise
        finally:
            _restore(self.backend, *previous)

    def encode(self, text: Any, text_pair: Any = None, *, add_special_tokens: bool = True,
               truncation: bool | str | None = None, max_length: int | None = None) -> list[int]:
        return self(text, text_pair, add_special_tokens=add_special_tokens, truncation=truncation,
                    max_length=max_length)["input_ids"]

    def _strategies(self, padding: bool | str, truncation: bool | str | None,
                    max_length: int | None) -> tuple[str, str, int | None]:
        """HF's resolution of padding / truncation / max_length into engine settings."""
        if padding is True:
            pad = "longest"
        elif padding is False or padding is None:
            pad = "do_not_pad"
        elif padding in PADDING_STRATEGIES:
            pad = str(padding)
        else:
            raise InputError(f"padding={padding!r}; use True, False, 'longest', 'max_length' or 'do_not_pad'."
                             + suggest(str(padding), PADDING_STRATEGIES))
        if truncation is None:  # max_length alone means truncate (HF warns and does the same)
            trunc = "longest_first" if max_length is not None else "do_not_truncate"
        elif truncation is True:
            trunc = "longest_first"
        elif truncation is False:
            trunc = "do_not_truncate"
        elif truncation in TRUNCATION_STRATEGIES:
            trunc = str(truncation)
        else:
            raise InputError(f"truncation={truncation!r}; use True, False or one of {', '.join(TRUNCATION_STRATEGIES)}."
                             + suggest(str(truncation), TRUNCATION_STRATEGIES))
        if max_length is None and (trunc != "do_not_truncate" or pad == "max_length"):
            if self.model_max_length >= VERY_LARGE_INTEGER:
                if pad == "max_length":
                    raise InputError("padding='max_length' needs max_length= (this tokenizer has no "
                                     "model_max_length)")
                trunc = "do_not_truncate"  # nothing to truncate to, as in HF
            else:
                max_length = self.model_max_length
        if max_length is not None and max_length <= 0:
            raise InputError(f"max_length={max_length}; use a positive length")
        return trunc, pad, max_length

    # ------------------------------------------------------------------ files
    @classmethod
    def from_pretrained(cls, directory: str | Path, *, family: str | None = None) -> "Tokenizer":
        """Load from a directory: tokenizer.json, BERT vocab.txt, or GPT-2/RoBERTa vocab.json + merges.txt.

        ``family`` forces the family (e.g. "roberta" for GPT-2's files with RoBERTa's special tokens).
        """
        from lmforge.tokenization.io import load

        return load(cls, Path(directory), family=family)

    def save_pretrained(self, directory: str | Path) -> list[Path]:
        """Write tokenizer.json, the family's classic files, tokenizer_config.json, special_tokens_map.json."""
        from lmforge.tokenization.io import save

        return save(self, Path(directory))

    @classmethod
    def train(cls, files_or_iterator: Any, *, kind: str, vocab_size: int, family: str | None = None,
              lowercase: bool | None = None, min_frequency: int = 2, text_field: str = "text",
              show_progress: bool = True, log: Any = None, encoding_errors: str = "strict") -> "Tokenizer":
        """Train a tokenizer from text / .gz / .jsonl files or an iterator of strings (streamed).

        A file that is not UTF-8 fails naming file:line and the byte; ``encoding_errors="replace"``
        reads the invalid bytes as U+FFFD instead (counted in ``training_report``)."""
        from lmforge.tokenization.train import train

        return train(files_or_iterator, kind=kind, vocab_size=vocab_size, family=family, lowercase=lowercase,
                     min_frequency=min_frequency, text_field=text_field, show_progress=show_progress, log=log,
                     encoding_errors=encoding_errors)


def _pair_inputs(text: Any, text_pair: Any, split_into_words: bool) -> tuple[list[Any], bool, bool]:
    """(engine inputs, whether the call is batched, whether it has pairs) for ``__call__``'s arguments."""
    batched = _is_batch(text, split_into_words)
    if text_pair is not None and batched != _is_batch(text_pair, split_into_words):
        raise InputError("text and text_pair must both be single inputs or both be lists of the same length")
    texts = list(text) if batched else [text]
    if not batched and not text_pair:
        # HF encodes a single text with an empty pair as a single text ([CLS] A [SEP], no second
        # [SEP]) while a batch keeps the empty segment; both are mirrored for identical ids
        text_pair = None
    if text_pair is None:
        return texts, batched, False
    pairs = list(text_pair) if batched else [text_pair]
    if len(pairs) != len(texts):
        raise InputError(f"{len(texts)} texts but {len(pairs)} text_pair entries; give one pair per text")
    return list(zip(texts, pairs)), batched, True


def _collect(encodings: list[Encoding], *, overflowing: bool, token_type_ids: bool, attention_mask: bool,
             special_tokens_mask: bool, offsets_mapping: bool, length: bool) -> tuple[dict[str, list[Any]],
                                                                                       list[Encoding]]:
    """The asked-for fields as lists (one row per encoding) and the encodings they came from."""
    # windows (overflowing encodings) follow their sample, as in HF
    flat: list[Encoding] = [e for enc in encodings for e in (enc, *enc.overflowing)] if overflowing else encodings
    # one comprehension per field: the engine builds each list, Python only collects them
    data: dict[str, list[Any]] = {"input_ids": [e.ids for e in flat]}
    if token_type_ids:
        data["token_type_ids"] = [e.type_ids for e in flat]
    if attention_mask:
        data["attention_mask"] = [e.attention_mask for e in flat]
    if special_tokens_mask:
        data["special_tokens_mask"] = [e.special_tokens_mask for e in flat]
    if offsets_mapping:
        data["offset_mapping"] = [e.offsets for e in flat]
    if length:
        data["length"] = [len(ids) for ids in data["input_ids"]]
    if overflowing:
        data["overflow_to_sample_mapping"] = [i for i, enc in enumerate(encodings)
                                              for _ in range(1 + len(enc.overflowing))]
    return data, flat


def _is_batch(value: Any, split_into_words: bool) -> bool:
    if isinstance(value, str):
        return False
    if not isinstance(value, (list, tuple)):
        raise InputError(f"expected a string or a list of strings, got {type(value).__name__}")
    if split_into_words:  # a list of words is one input; a list of lists is a batch
        return bool(value) and isinstance(value[0], (list, tuple))
    return True


def _restore(backend: Engine, truncation: dict | None, padding: dict | None) -> None:
    if truncation is None:
        backend.no_truncation()
    else:
        backend.enable_truncation(**truncation)
    if padding is None:
        backend.no_padding()
    else:
        padding = dict(padding)
        padding["direction"] = padding.pop("direction", "right")
        backend.enable_padding(**padding)


def _as_tensor(key: str, value: list[Any], kind: str) -> Any:
    if value and isinstance(value[0], list) and len({len(v) for v in value}) > 1:
        raise InputError(f"cannot make one tensor of {key}: the sequences have different lengths; "
                         "pass padding=True (and truncation=True) with return_tensors")
    # numpy reads nested int lists ~3x faster than torch.tensor does (docs/tokenization.md, "Benchmark");
    # torch.from_numpy then shares that fresh int64 buffer without a copy
    array = np.asarray(value, dtype=np.int64)  # (B, L), (B, L, 2) for offsets, (B,) for length / mapping
    if kind == "np":
        return array
    import torch

    return torch.from_numpy(array)
