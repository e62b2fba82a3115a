"""Toyland's grammar: tagged sentences, the random phrase builder and the corruptions that make CoLA negatives.

Subject-verb agreement crosses a prepositional phrase or a relative clause whose noun usually has the
*other* number (an "attractor": "the fox near the owls sleeps", "the owls that the fox sees sing");
determiners agree with their noun; word order is fixed. A ``Sentence`` records where the agreement and
the determiners are, so a corruption can break exactly one of them.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

from lmforge.data.toyland.lexicon import (
    ADVERBIALS, ANIMALS, AUX_FORMS, COLOURS, DET_UPOS, DETS, NAMES, NOUN_LEMMA, NOUN_NUMBER, NOUNS, PEOPLE,
    PERSON_NOUNS, PLUR, PREPOSITIONS, SING, SIZES, TRAITS_NEG, TRAITS_POS, VERB_FORMS, VERBS_INTR, VERBS_TR,
    a_or_an,
)


@dataclasses.dataclass
class Token:
    form: str
    upos: str
    lemma: str
    feats: str = "_"


@dataclasses.dataclass
class Sentence:
    """A list of tagged tokens plus where agreement and determiners are (for corruptions and tests)."""

    tokens: list[Token] = dataclasses.field(default_factory=list)
    subject_head: int | None = None  # index of the main subject's head noun (None for names / conjoined)
    subject_number: str | None = None
    main_verb: int | None = None  # index of the verb / auxiliary that agrees with the subject
    verb_alternative: str | None = None  # the main verb in the other number
    dets: list[int] = dataclasses.field(default_factory=list)  # indices of determiners with a noun after them
    attractor: bool = False  # a noun of the other number sits between subject head and verb

    def add(self, form: str, upos: str, lemma: str | None = None, feats: str = "_") -> int:
        self.tokens.append(Token(form, upos, lemma or (form if upos == "PROPN" else form.lower()), feats))
        return len(self.tokens) - 1

    def extend(self, words: Sequence[str], upos: Sequence[str]) -> None:
        for w, t in zip(words, upos):
            self.add(w, t)

    def end(self, mark: str = ".") -> Sentence:
        self.add(mark, "PUNCT")
        first = self.tokens[0]
        first.form = first.form[:1].upper() + first.form[1:]
        return self

    @property
    def words(self) -> list[str]:
        return [t.form for t in self.tokens]

    @property
    def text(self) -> str:
        return render([t.form for t in self.tokens])


def render(words: Sequence[str]) -> str:
    """Words joined by spaces, punctuation attached to the word before it."""
    out = ""
    for w in words:
        out += w if (not out or w in ".,!?") else " " + w
    return out


def add_verb(s: Sentence, lemma: str, number: str) -> int:
    """Append ``lemma`` in ``number`` (tagged VERB or AUX with its features); returns its index."""
    forms = AUX_FORMS.get(lemma) or VERB_FORMS[lemma]
    upos = "AUX" if lemma in AUX_FORMS else "VERB"
    feats = "Number=Sing|Person=3" if number == SING else "Number=Plur"
    return s.add(forms[number], upos, lemma, feats)


def other_number(number: str) -> str:
    return PLUR if number == SING else SING


class Grammar:
    """Random phrases and sentences; all randomness comes from the ``rng`` given."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def noun(self, number: str, *, people: bool | None = None) -> str:
        pool = NOUNS if people is None else (PEOPLE if people else ANIMALS)
        sing, plur = self.rng.choice(pool)
        return sing if number == SING else plur

    def np(self, s: Sentence, number: str, *, adj_p: float = 0.3, noun: str | None = None,
           adjectives: Sequence[str] | None = None) -> int:
        """Determiner (+ adjective) + noun; returns the head noun's index."""
        noun = noun or self.noun(number)
        adj = self.rng.choice(adjectives or (COLOURS + SIZES)) if self.rng.random() < adj_p else None
        det = self.rng.choice(DETS[number])
        following = adj or noun
        if det == "a":
            det = a_or_an(following)
        s.dets.append(s.add(det, DET_UPOS.get(det, "DET"), "a" if det == "an" else det))
        if adj:
            s.add(adj, "ADJ")
        return s.add(noun, "NOUN", NOUN_LEMMA[noun], f"Number={number}")

    def subject(self, s: Sentence, number: str) -> int:
        """A subject noun phrase, often with a modifier whose noun has the other number."""
        head = self.np(s, number)
        attractor = other_number(number) if self.rng.random() < 0.7 else number
        r = self.rng.random()
        if r < 0.4:  # prepositional phrase: "the fox near the owls"
            s.add(self.rng.choice(PREPOSITIONS), "ADP")
            self.np(s, attractor, adj_p=0.2)
        elif r < 0.6:  # subject relative clause: "the fox that sees the owls"
            s.add("who" if s.tokens[head].form in PERSON_NOUNS else "that", "PRON")
            add_verb(s, self.rng.choice(list(VERBS_TR)), number)
            self.np(s, attractor, adj_p=0.2)
        elif r < 0.8:  # object relative clause: "the fox that the owls see" (attractor next to the verb)
            s.add("that", "PRON")
            self.np(s, attractor, adj_p=0.2)
            add_verb(s, self.rng.choice(list(VERBS_TR)), attractor)
        else:
            attractor = number
        s.attractor = attractor != number
        return head

    def predicate(self, s: Sentence, number: str) -> None:
        """The verb phrase agreeing with ``number``; records the main verb and its other-number form."""
        r = self.rng.random()
        if r < 0.3:
            lemma = self.rng.choice(list(VERBS_INTR))
            s.main_verb = add_verb(s, lemma, number)
            if self.rng.random() < 0.5:
                for word, upos in self.rng.choice(ADVERBIALS):
                    s.add(word, upos)
        elif r < 0.6:
            s.main_verb = add_verb(s, self.rng.choice(list(VERBS_TR)), number)
            self.np(s, self.rng.choice([SING, PLUR]))
        elif r < 0.8:
            s.main_verb = add_verb(s, "be", number)
            if self.rng.random() < 0.3:
                s.add("not", "PART")
            s.add(self.rng.choice(TRAITS_POS + TRAITS_NEG + COLOURS + SIZES), "ADJ")
        else:
            s.main_verb = add_verb(s, "do", number)
            s.add("not", "PART")
            lemma = self.rng.choice(list(VERBS_TR))
            s.add(lemma, "VERB", lemma, "VerbForm=Inf")
            self.np(s, self.rng.choice([SING, PLUR]))
        s.verb_alternative = other_number_form(s.tokens[s.main_verb].form)

    def clause(self) -> Sentence:
        """A sentence with a noun-phrase subject: the agreement workhorse of the corpus and of CoLA."""
        s = Sentence()
        number = self.rng.choice([SING, PLUR])
        s.subject_head = self.subject(s, number)
        s.subject_number = number
        self.predicate(s, number)
        return s.end()


def other_number_form(form: str) -> str:
    """The same verb in the other number ("sees" -> "see", "are" -> "is")."""
    for forms in (*VERB_FORMS.values(), *AUX_FORMS.values()):
        if forms[SING] == form:
            return forms[PLUR]
        if forms[PLUR] == form:
            return forms[SING]
    raise KeyError(form)



# ---------------------------------------------------------------- corruptions (CoLA negatives)
CORRUPTIONS = ("agreement", "determiner", "order", "missing")
# Agreement across an attractor is the hardest: a tiny BERT pre-trained for a few CPU minutes has not
# learned it (docs/quickstart.md), so it is a small share; swapped neighbours and missing words are what
# pre-training teaches first and a model fine-tuned from scratch on 1,000 labels does not pick up.
CORRUPTION_WEIGHTS = (0.15, 0.10, 0.40, 0.35)
CORRUPTION_SOURCE = {"agreement": "tl_agr", "determiner": "tl_det", "order": "tl_ord", "missing": "tl_mis"}


def corrupt(s: Sentence, kind: str, rng: random.Random) -> list[str] | None:
    """The words of ``s`` made ungrammatical by ``kind``, or None when that kind does not apply."""
    if kind not in _CORRUPTERS:
        raise ValueError(kind)
    return _CORRUPTERS[kind](s, rng)


def _break_agreement(s: Sentence, rng: random.Random) -> list[str] | None:
    """The main verb in the other number."""
    if s.main_verb is None or s.verb_alternative is None:
        return None
    words = s.words
    w = list(words)
    alt = s.verb_alternative
    w[s.main_verb] = alt[:1].upper() + alt[1:] if words[s.main_verb][:1].isupper() else alt
    return w


def _break_determiner(s: Sentence, rng: random.Random) -> list[str] | None:
    """A determiner of the wrong sound ("an fox") or of the other number ("these fox", "a foxes")."""
    if not s.dets:
        return None
    words = s.words
    i = rng.choice(s.dets)
    det = words[i].lower()
    noun = next(words[j] for j in range(i + 1, len(words)) if words[j] in NOUN_NUMBER)
    if det in ("a", "an") and rng.random() < 0.5:
        wrong = "an" if det == "a" else "a"
    else:
        wrong = rng.choice([d for d in DETS[other_number(NOUN_NUMBER[noun])] if d != "the"])
        if wrong == "a":
            wrong = a_or_an(words[i + 1])
    w = list(words)
    w[i] = wrong[:1].upper() + wrong[1:] if words[i][:1].isupper() else wrong
    return w


def _swap_neighbours(s: Sentence, rng: random.Random) -> list[str] | None:
    """Two neighbouring words swapped (never the final period)."""
    words = s.words
    content = list(range(len(words) - 1))
    i = rng.choice(content[:-1]) if len(content) > 1 else None
    # an adverb or a relative pronoun may move and stay grammatical ("sleeps quietly" / "quietly
    # sleeps", "the fox that sees" / "the fox sees that ..."): never swap those
    if i is None or words[i].lower() == words[i + 1].lower() or \
            {s.tokens[i].upos, s.tokens[i + 1].upos} & {"ADV", "PRON", "PUNCT"}:
        return None
    w = list(words)
    w[i], w[i + 1] = w[i + 1], w[i]
    w = [x.lower() if x not in NAMES and x != "I" else x for x in w]
    w[0] = w[0][:1].upper() + w[0][1:]
    return w


def _drop_word(s: Sentence, rng: random.Random) -> list[str] | None:
    """A word whose absence breaks the sentence dropped: the verb, a determiner, a preposition."""
    words = s.words
    # a determiner only before a singular noun: "foxes sleep" without "the" is still grammatical
    candidates = [i for i, t in enumerate(s.tokens) if t.upos in ("VERB", "AUX", "ADP")]
    candidates += [i for i in s.dets if _noun_after(words, i) == SING]
    if s.main_verb is not None:
        candidates += [s.main_verb] * 2
    if not candidates:
        return None
    i = rng.choice(candidates)
    w = words[:i] + words[i + 1:]
    w[0] = w[0][:1].upper() + w[0][1:]
    return w


_CORRUPTERS: dict[str, Callable[[Sentence, random.Random], list[str] | None]] = {
    "agreement": _break_agreement, "determiner": _break_determiner, "order": _swap_neighbours, "missing": _drop_word,
}


def _noun_after(words: Sequence[str], i: int) -> str | None:
    """The number of the first noun after position ``i``."""
    return next((NOUN_NUMBER[w] for w in words[i + 1:] if w in NOUN_NUMBER), None)

