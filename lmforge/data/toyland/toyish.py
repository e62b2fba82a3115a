"""Toyish: a second toy language, the target of the corpus's translation demonstrations (demos.py, kind
"translation"; GPT-2 section 3.7 learned to translate from the French-English pairs web text holds).

Toyish is Toyland's grammar with its own words and two rules of its own, so that translating is more than
replacing words:

  words    each English lemma has one Toyish stem of 3 consonant-vowel syllables (from a hash of the lemma:
           the same stem in every run and on every machine); names stay as they are
  number   a plural noun ends in -n; a verb or auxiliary ends in -t for a singular subject, -r for a plural one
  order    adjectives follow their noun ("a big black squirrel" -> "u squirrel big black", in Toyish words)

Translation is a function of the English sentence's tokens (form, UPOS, lemma, number), which the story
generator writes: ``translate(sentence)``.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
SUFFIX = {("NOUN", "Plur"): "n", ("VERB", "Sing"): "t", ("VERB", "Plur"): "r", ("AUX", "Sing"): "t",
          ("AUX", "Plur"): "r"}
KEEP = {"PROPN", "PUNCT"}  # names and punctuation are written as in English


def stem(lemma: str) -> str:
    """The Toyish stem of an English lemma: 3 consonant-vowel syllables chosen by the lemma's SHA-256."""
    digest = hashlib.sha256(f"toyish:{lemma.lower()}".encode()).digest()
    return "".join(CONSONANTS[digest[2 * i] % len(CONSONANTS)] + VOWELS[digest[2 * i + 1] % len(VOWELS)]
                   for i in range(3))


def _number(feats: str) -> str | None:
    return next((f.split("=", 1)[1] for f in feats.split("|") if f.startswith("Number=")), None)


def word(token: Any) -> str:
    """One token in Toyish: names and punctuation as they are, else the stem + the number suffix."""
    if token.upos in KEEP:
        return token.form
    return stem(token.lemma) + SUFFIX.get((token.upos, _number(token.feats)), "")


def reorder(tokens: Sequence[Any]) -> list[Any]:
    """Adjectives after their noun: each run of ADJ directly followed by a NOUN moves behind that noun."""
    out: list[Any] = []
    i = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j].upos == "ADJ":
            j += 1
        if j > i and j < len(tokens) and tokens[j].upos == "NOUN":
            out += [tokens[j], *tokens[i:j]]
            i = j + 1
        else:
            out += list(tokens[i:j + 1]) if j > i else [tokens[i]]
            i = max(j + 1, i + 1)
    return out


def translate(sentence: Any) -> str:
    """A Toyland sentence (its ``tokens``) in Toyish, capitalised like the English one, spaced like it."""
    words = [word(t) for t in reorder(sentence.tokens)]
    if words and sentence.tokens[0].form[:1].isupper():
        words[0] = words[0][:1].upper() + words[0][1:]
    text = " ".join(words)
    for mark in (".", ",", "?", "!"):
        text = text.replace(f" {mark}", mark)
    return text
