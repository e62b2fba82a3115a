"""Fixtures for the tokenizer tests: lmforge tokenizers from the real vocabularies, HF references, varied text."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from lmforge.tokenization.tokenizer import Tokenizer


@pytest.fixture(scope="session")
def bert(refdata: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(refdata / "tokenizers" / "bert-base-uncased")


@pytest.fixture(scope="session")
def gpt2(refdata: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(refdata / "tokenizers" / "gpt2")


@pytest.fixture(scope="session")
def shakespeare(refdata: Path) -> list[str]:
    return (refdata / "text" / "tinyshakespeare.txt").read_text(encoding="utf-8").split("\n")


# text the Shakespeare lines lack: accents, CJK, emoji, control characters, whitespace runs, long words,
# special-token strings inside text, empty strings
HARD_LINES = [
    "", " ", "   ", "\t\n", "Héllo wörld, naïve café — résumé", "Ångström Øre ß straße İstanbul ǅ",
    "日本語のテキストと漢字", "中文分词测试，句号。", "한국어 문장입니다", "emoji 😀👍🏽 family 👨‍👩‍👧 flag 🇫🇷",
    "tabs\tand\u00a0nbsp\u2003em-space   and    runs      of     spaces", "    leading and trailing    ",
    "control\x00chars\x07and\x1bescape\ufeffBOM", "combining e\u0301 a\u0308 o\u0302", "a" * 150,
    "supercalifragilisticexpialidocious antidisestablishmentarianism", "x = f(y) + 3.14159 * 2e-10; // code",
    "https://example.com/path?q=1&r=2#frag user@mail.org", "[CLS] [SEP] [MASK] inside text", "<|endoftext|> gpt",
    "<s>roberta</s> <mask> tokens", "ÀÉÎÕÜ ÇÑ", "Ελληνικά κείμενο", "Русский текст, ёж", "عربى نص", "עברית",
    "हिन्दी पाठ", "ภาษาไทย", "   \u3000 ideographic space", "'quotes' ``latex'' \"double\" ‘curly’ “curly”",
    "numbers 1,234,567.89 and 0x1F 1e9 ½ ² ③", "MiXeD CaSe WoRdS", "hyphen-ated words—em dash–en dash",
    "\u200b zero width \u200d joiner", "new\nline\r\nand CR\rhere",
]


@pytest.fixture(scope="session")
def lines(shakespeare: list[str]) -> list[str]:
    """About 2,500 varied lines: Shakespeare (incl. its blank lines) + the hard cases, shuffled (fixed seed)."""
    rng = random.Random(0)
    picked = rng.sample(shakespeare, 2200)
    out = picked + HARD_LINES * 8
    # joined lines give long inputs that truncation and windows have to cut
    out += [" ".join(rng.sample(shakespeare, 12)) for _ in range(60)]
    rng.shuffle(out)
    return out


@pytest.fixture()
def corpus(tmp_path: Path, shakespeare: list[str]) -> Path:
    """A small training file: the first 4,000 lines of tiny-shakespeare."""
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(shakespeare[:4000]) + "\n", encoding="utf-8")
    return path
