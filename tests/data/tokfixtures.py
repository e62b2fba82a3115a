"""Tokenizers for the data / objectives tests: the real BERT uncased and GPT-2 vocabularies.

They are lmforge Tokenizers when lmforge.tokenization is present; until then a minimal stand-in with
the same attributes (backend, special ids, len, get_vocab, save_pretrained, decode) wraps the raw
``tokenizers.Tokenizer`` built from the same files.
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer as RustTokenizer


class StandIn:
    """The slice of the lmforge Tokenizer API the data code uses."""

    def __init__(self, backend: RustTokenizer, kind: str, specials: dict[str, str | None]) -> None:
        self.backend, self.kind = backend, kind
        for name, token in specials.items():
            setattr(self, f"{name}_token_id", None if token is None else backend.token_to_id(token))
        self.all_special_ids = sorted({i for n in specials if (i := getattr(self, f"{n}_token_id")) is not None})

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(map(int, ids)), skip_special_tokens=skip_special_tokens)

    def save_pretrained(self, directory) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.backend.save(str(Path(directory) / "tokenizer.json"))

    @classmethod
    def from_pretrained(cls, directory) -> "StandIn":
        backend = RustTokenizer.from_file(str(Path(directory) / "tokenizer.json"))
        vocab = backend.get_vocab()
        if "[CLS]" in vocab:
            return cls(backend, "wordpiece", BERT_SPECIALS)
        return cls(backend, "bpe", GPT2_SPECIALS)


BERT_SPECIALS = {"pad": "[PAD]", "unk": "[UNK]", "cls": "[CLS]", "sep": "[SEP]", "mask": "[MASK]",
                 "bos": None, "eos": None}
GPT2_SPECIALS = {"pad": None, "unk": None, "cls": None, "sep": None, "mask": None,
                 "bos": "<|endoftext|>", "eos": "<|endoftext|>"}


def _lmforge_tokenizer():
    try:
        from lmforge.tokenization.tokenizer import Tokenizer
    except ImportError:
        return None
    return Tokenizer


def bert_tokenizer(refdata: Path):
    lm = _lmforge_tokenizer()
    if lm is not None:
        return lm.from_pretrained(refdata / "tokenizers" / "bert-base-uncased")
    from tokenizers.implementations import BertWordPieceTokenizer

    raw = BertWordPieceTokenizer(str(refdata / "tokenizers/bert-base-uncased/vocab.txt"), lowercase=True)
    return StandIn(raw._tokenizer, "wordpiece", BERT_SPECIALS)


def gpt2_tokenizer(refdata: Path):
    lm = _lmforge_tokenizer()
    if lm is not None:
        return lm.from_pretrained(refdata / "tokenizers" / "gpt2")
    from tokenizers.implementations import ByteLevelBPETokenizer

    d = refdata / "tokenizers" / "gpt2"
    raw = ByteLevelBPETokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    return StandIn(raw._tokenizer, "bpe", GPT2_SPECIALS)


def big_vocab_tokenizer(size: int = 70_000):
    """A word-level tokenizer with more than 65,536 ids (so shards need uint32)."""
    from tokenizers import models, pre_tokenizers

    vocab = {"[UNK]": 0, **{f"w{i}": i + 1 for i in range(size - 1)}}
    backend = RustTokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return StandIn(backend, "wordlevel", {"unk": "[UNK]"})
