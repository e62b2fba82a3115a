"""Toyland: a built-in, seedable English-like language with a pre-training corpus and labelled tasks.

Nothing is downloaded and no text is copied: every sentence comes from a small grammar over a lexicon
of a few hundred words, so ``lmforge quickstart`` runs offline and the same seed always gives the
same bytes.

The language
  - Lexicon: determiners (a/an, the, this/these, ...), nouns with singular/plural forms (some
    irregular: mouse/mice, wolf/wolves), names, colours, sizes, adjectives with positive or negative
    valence, intransitive and transitive verbs in 3rd-singular / plural present, prepositions, "not".
  - Grammar with structure: subject-verb agreement across a prepositional phrase or a relative clause
    whose noun usually has the *other* number (an "attractor": "the fox near the owls sleeps", "the
    owls that the fox sees sing"), determiner-noun agreement, fixed word order.
  - Stories: each document is a few entities (a name, a species, a colour, a home, a food, a trait, a
    friend) told in a fixed script: introduction, home, food, trait, the friend, background clauses,
    an event, its consequence, how the day went, a closing line. The next sentence is predictable
    from the story (NSP / SOP are learnable) and the stated facts can be asked about; some facts are
    left unstated on purpose (the unanswerable SQuAD v2 questions ask about those).

The tasks, each written in its official format (the readers in ``lmforge.tasks`` read them):
  cola/{train,dev,test}.tsv     CoLA: source, label, original label ('*' or ''), sentence; no header
  sst2/{train,dev,test}.tsv     SST-2: header "sentence<TAB>label"; negation flips the valence
  rte/{train,val,test}.jsonl    SuperGLUE RTE: premise, hypothesis, label, idx
  squad/{train,dev,test}.json   SQuAD v1.1
  squad-v2/{train,dev,test}.json SQuAD v2.0 (adds is_impossible questions with plausible answers)
  swag/{train,val,test}.csv     SWAG: the official header, 4 endings, label 0..3
  pos/{train,dev,test}.conllu   CoNLL-U, UPOS = the generator's own tags
  corpus/train.txt              the pre-training corpus, one document per line
Splits never share a sentence (or a premise/hypothesis pair, a context, a SWAG start + ending).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lmforge.errors import DataError

# ---------------------------------------------------------------- lexicon
SING, PLUR = "Sing", "Plur"

# creatures: (singular, plural). Each may be a named entity's species or a generic noun phrase.
ANIMALS: list[tuple[str, str]] = [
    ("fox", "foxes"), ("cat", "cats"), ("owl", "owls"), ("dog", "dogs"), ("mouse", "mice"),
    ("goose", "geese"), ("wolf", "wolves"), ("bear", "bears"), ("rabbit", "rabbits"), ("frog", "frogs"),
    ("duck", "ducks"), ("goat", "goats"), ("horse", "horses"), ("badger", "badgers"), ("otter", "otters"),
    ("hedgehog", "hedgehogs"), ("squirrel", "squirrels"), ("beaver", "beavers"), ("crow", "crows"),
    ("eagle", "eagles"), ("elephant", "elephants"), ("ant", "ants"), ("ox", "oxen"), ("lamb", "lambs"),
    ("pony", "ponies"), ("donkey", "donkeys"), ("lizard", "lizards"), ("turtle", "turtles"),
    ("snail", "snails"), ("bee", "bees"), ("tiger", "tigers"), ("camel", "camels"),
]
PEOPLE: list[tuple[str, str]] = [
    ("child", "children"), ("farmer", "farmers"), ("baker", "bakers"), ("sailor", "sailors"),
    ("teacher", "teachers"), ("king", "kings"), ("queen", "queens"), ("miller", "millers"),
    ("artist", "artists"), ("woman", "women"), ("man", "men"), ("hunter", "hunters"),
]
NOUNS = ANIMALS + PEOPLE
NOUN_NUMBER: dict[str, str] = {**{s: SING for s, _ in NOUNS}, **{p: PLUR for _, p in NOUNS}}
NOUN_LEMMA: dict[str, str] = {**{s: s for s, _ in NOUNS}, **{p: s for s, p in NOUNS}}
PERSON_NOUNS = {w for pair in PEOPLE for w in pair}

NAMES: list[str] = [
    "Ada", "Bo", "Cato", "Dina", "Elo", "Fen", "Gus", "Hana", "Ivo", "Juno", "Kit", "Lola", "Milo",
    "Nia", "Otto", "Pia", "Quin", "Rosa", "Sami", "Tova", "Ugo", "Vera", "Wim", "Xena", "Yara",
    "Zeno", "Alma", "Bram", "Cleo", "Dax", "Ema", "Finn", "Greta", "Hugo", "Ines", "Jonas", "Kira",
    "Leon", "Mara", "Nils", "Olga", "Pavel", "Runa", "Soren", "Tilda", "Uma", "Viggo", "Wanda",
]
COLOURS = ["red", "blue", "green", "grey", "brown", "white", "black", "yellow", "orange", "purple",
           "golden", "silver"]
SIZES = ["small", "big", "little", "tall", "old", "young"]
TRAITS_POS = ["kind", "happy", "brave", "clever", "gentle", "cheerful", "friendly", "calm", "generous",
              "lovely", "wonderful", "polite"]
TRAITS_NEG = ["cruel", "sad", "lazy", "grumpy", "rude", "selfish", "angry", "nasty", "gloomy", "awful",
              "mean", "foolish"]
QUALITY_POS = ["good", "tasty", "fresh", "lovely", "wonderful", "sweet", "fine", "great"]
QUALITY_NEG = ["bad", "stale", "bitter", "awful", "nasty", "sour", "dull", "terrible"]
VALENCE: dict[str, int] = {**{a: 1 for a in TRAITS_POS + QUALITY_POS}, **{a: 0 for a in TRAITS_NEG + QUALITY_NEG}}
HOMES = ["forest", "village", "cave", "meadow", "garden", "tower", "valley", "farm", "mill", "orchard",
         "marsh", "castle", "barn", "desert", "harbor", "jungle"]
FOODS = ["apples", "bread", "berries", "fish", "honey", "cheese", "soup", "nuts", "carrots", "seeds",
         "cake", "plums", "pears", "grapes", "corn", "mushrooms"]
THINGS = ["coin", "ball", "kite", "hat", "key", "lamp", "drum", "map", "bell", "basket", "ring", "book"]

# verbs: lemma (= plural form) -> 3rd person singular
VERBS_INTR: dict[str, str] = {
    "sleep": "sleeps", "run": "runs", "sing": "sings", "laugh": "laughs", "wait": "waits", "swim": "swims",
    "dance": "dances", "jump": "jumps", "hide": "hides", "play": "plays", "rest": "rests", "cry": "cries",
    "smile": "smiles", "walk": "walks", "climb": "climbs",
}
VERBS_TR: dict[str, str] = {
    "see": "sees", "like": "likes", "help": "helps", "follow": "follows", "visit": "visits", "chase": "chases",
    "find": "finds", "watch": "watches", "meet": "meets", "call": "calls", "know": "knows", "love": "loves",
    "greet": "greets", "hear": "hears", "feed": "feeds",
}
VERB_FORMS: dict[str, dict[str, str]] = {lem: {SING: s, PLUR: lem} for lem, s in {**VERBS_INTR, **VERBS_TR}.items()}
AUX_FORMS: dict[str, dict[str, str]] = {"be": {SING: "is", PLUR: "are"}, "do": {SING: "does", PLUR: "do"},
                                        "have": {SING: "has", PLUR: "have"}}
# every verb form -> its number (the oracle the tests use)
VERB_NUMBER: dict[str, str] = {f: n for forms in (*VERB_FORMS.values(), *AUX_FORMS.values()) for n, f in forms.items()}
PREPOSITIONS = ["near", "behind", "beside", "under", "with", "from"]
# adverbials with their UPOS tags
ADVERBIALS: list[list[tuple[str, str]]] = [
    [("at", "ADP"), ("night", "NOUN")], [("every", "DET"), ("day", "NOUN")],
    [("in", "ADP"), ("the", "DET"), ("morning", "NOUN")], [("quietly", "ADV")], [("slowly", "ADV")],
    [("happily", "ADV")], [("again", "ADV")], [("together", "ADV")],
]
DETS: dict[str, list[str]] = {SING: ["the", "a", "this", "that", "every", "one"],
                              PLUR: ["the", "these", "those", "some", "many", "two", "three"]}
DET_NUMBER: dict[str, str | None] = {"this": SING, "that": SING, "every": SING, "one": SING, "a": SING, "an": SING,
                                     "these": PLUR, "those": PLUR, "many": PLUR, "two": PLUR, "three": PLUR,
                                     "some": PLUR, "the": None}
DET_UPOS = {"two": "NUM", "three": "NUM", "one": "NUM"}


def a_or_an(next_word: str) -> str:
    """The indefinite article by the next word's first letter (the lexicon avoids silent h / 'you' sounds)."""
    return "an" if next_word[0].lower() in "aeiou" else "a"


def lexicon() -> set[str]:
    """Every word form the generator can write (tests check the corpus stays inside it)."""
    words = set(NAMES) | set(COLOURS) | set(SIZES) | set(VALENCE) | set(HOMES) | set(FOODS) | set(THINGS)
    words |= set(NOUN_NUMBER) | set(VERB_NUMBER) | set(VERB_FORMS) | set(PREPOSITIONS) | set(DET_NUMBER)
    words |= {w for adv in ADVERBIALS for w, _ in adv}
    return words


# ---------------------------------------------------------------- sentences
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


def _verb(s: Sentence, lemma: str, number: str) -> int:
    forms = AUX_FORMS.get(lemma) or VERB_FORMS[lemma]
    upos = "AUX" if lemma in AUX_FORMS else "VERB"
    feats = "Number=Sing|Person=3" if number == SING else "Number=Plur"
    return s.add(forms[number], upos, lemma, feats)


def _other(number: str) -> str:
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
        attractor = _other(number) if self.rng.random() < 0.7 else number
        r = self.rng.random()
        if r < 0.4:  # prepositional phrase: "the fox near the owls"
            s.add(self.rng.choice(PREPOSITIONS), "ADP")
            self.np(s, attractor, adj_p=0.2)
        elif r < 0.6:  # subject relative clause: "the fox that sees the owls"
            s.add("who" if s.tokens[head].form in PERSON_NOUNS else "that", "PRON")
            _verb(s, self.rng.choice(list(VERBS_TR)), number)
            self.np(s, attractor, adj_p=0.2)
        elif r < 0.8:  # object relative clause: "the fox that the owls see" (attractor next to the verb)
            s.add("that", "PRON")
            self.np(s, attractor, adj_p=0.2)
            _verb(s, self.rng.choice(list(VERBS_TR)), attractor)
        else:
            attractor = number
        s.attractor = attractor != number
        return head

    def predicate(self, s: Sentence, number: str) -> None:
        """The verb phrase agreeing with ``number``; records the main verb and its other-number form."""
        r = self.rng.random()
        if r < 0.3:
            lemma = self.rng.choice(list(VERBS_INTR))
            s.main_verb = _verb(s, lemma, number)
            if self.rng.random() < 0.5:
                for word, upos in self.rng.choice(ADVERBIALS):
                    s.add(word, upos)
        elif r < 0.6:
            s.main_verb = _verb(s, self.rng.choice(list(VERBS_TR)), number)
            self.np(s, self.rng.choice([SING, PLUR]))
        elif r < 0.8:
            s.main_verb = _verb(s, "be", number)
            if self.rng.random() < 0.3:
                s.add("not", "PART")
            s.add(self.rng.choice(TRAITS_POS + TRAITS_NEG + COLOURS + SIZES), "ADJ")
        else:
            s.main_verb = _verb(s, "do", number)
            s.add("not", "PART")
            lemma = self.rng.choice(list(VERBS_TR))
            s.add(lemma, "VERB", lemma, "VerbForm=Inf")
            self.np(s, self.rng.choice([SING, PLUR]))
        s.verb_alternative = _alternative(s.tokens[s.main_verb].form)

    def clause(self) -> Sentence:
        """A sentence with a noun-phrase subject: the agreement workhorse of the corpus and of CoLA."""
        s = Sentence()
        number = self.rng.choice([SING, PLUR])
        s.subject_head = self.subject(s, number)
        s.subject_number = number
        self.predicate(s, number)
        return s.end()


def _alternative(form: str) -> str:
    """The same verb in the other number ("sees" -> "see", "are" -> "is")."""
    for forms in (*VERB_FORMS.values(), *AUX_FORMS.values()):
        if forms[SING] == form:
            return forms[PLUR]
        if forms[PLUR] == form:
            return forms[SING]
    raise KeyError(form)


# ---------------------------------------------------------------- the story world
@dataclasses.dataclass
class Entity:
    name: str
    species: str
    colour: str
    size: str
    home: str
    food: str
    trait: str


@dataclasses.dataclass
class Fact:
    """A fact stated in a story: ``entity``'s ``attribute`` is ``value``, written at char ``start``."""

    entity: str
    attribute: str  # species | colour | home | food | friend | trait
    value: str  # the answer text, as written
    start: int  # offset of value in the story text


@dataclasses.dataclass
class Story:
    entities: list[Entity]
    sentences: list[Sentence]
    facts: list[Fact]
    unstated: list[tuple[str, str]]  # (entity, attribute) never stated: home / food / colour
    intro_end: int = 0  # sentences before this index introduce the entities (the facts live there)
    event: tuple[Sentence, Sentence] | None = None  # (event, consequence)

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)

    def fact(self, entity: str, attribute: str) -> Fact | None:
        return next((f for f in self.facts if f.entity == entity and f.attribute == attribute), None)


def _world(rng: random.Random, n: int) -> list[Entity]:
    """``n`` entities with distinct names, species, colours, homes and foods (so facts identify them)."""
    names = rng.sample(NAMES, n)
    species = rng.sample(ANIMALS, n)
    colours, homes, foods = rng.sample(COLOURS, n), rng.sample(HOMES, n), rng.sample(FOODS, n)
    return [Entity(names[i], species[i][0], colours[i], rng.choice(SIZES), homes[i], foods[i],
                   rng.choice(TRAITS_POS + TRAITS_NEG)) for i in range(n)]


# (event, consequence) templates. Roles: A, B = entities, F = a food, K = a thing; "V:lemma" is a verb
# that agrees with the sentence's subject (the first role of the sentence).
EVENTS: list[tuple[str, str]] = [
    ("A V:give B some F", "B V:thank A"),
    ("A V:lose the K", "B V:help A look for the K"),
    ("A V:fall into the lake", "B V:pull A out of the water"),
    ("it V:start to rain", "A and B V:hide under a tree"),
    ("A V:find a K", "A V:show the K to B"),
    ("A V:be very hungry", "B V:bring A some F"),
    ("A V:be very tired", "A V:sleep all afternoon"),
    ("A V:hurt a leg", "B V:carry A home"),
    ("A and B V:play a game", "A V:win the game"),
    ("A V:sing a song", "B V:dance to the song"),
    ("A V:bake a cake", "A and B V:eat the cake"),
    ("A V:build a kite", "A and B V:fly the kite"),
]
EVENT_VALENCE = [1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1]  # how the day went (the story's sentiment line)
_EXTRA_VERBS = {"give": "gives", "thank": "thanks", "lose": "loses", "look": "looks", "fall": "falls",
                "pull": "pulls", "start": "starts", "show": "shows", "bring": "brings", "hurt": "hurts",
                "carry": "carries", "win": "wins", "bake": "bakes", "eat": "eats", "build": "builds",
                "fly": "flies", "live": "lives", "go": "goes", "share": "shares", "dislike": "dislikes",
                "hate": "hates", "enjoy": "enjoys"}
VERB_FORMS.update({lem: {SING: s, PLUR: lem} for lem, s in _EXTRA_VERBS.items()})
VERB_NUMBER.update({f: n for lem in _EXTRA_VERBS for n, f in VERB_FORMS[lem].items()})
_WORD_UPOS = {"some": "DET", "the": "DET", "a": "DET", "into": "ADP", "out": "ADP", "of": "ADP", "to": "ADP",
              "under": "ADP", "for": "ADP", "and": "CCONJ", "it": "PRON", "very": "ADV", "home": "ADV",
              "hungry": "ADJ", "tired": "ADJ", "all": "DET", "afternoon": "NOUN", "lake": "NOUN",
              "water": "NOUN", "tree": "NOUN", "leg": "NOUN", "game": "NOUN", "song": "NOUN", "cake": "NOUN",
              "kite": "NOUN", "rain": "VERB"}


def _template(template: str, *, a: str, b: str, food: str, thing: str, subject: str | None = None) -> Sentence:
    """Render an EVENTS template. ``subject`` replaces the template's own subject (SWAG distractors)."""
    parts = template.split()
    verb_at = next(i for i, p in enumerate(parts) if p.startswith("V:"))
    subj_parts = parts[:verb_at]
    roles = {"A": a, "B": b}
    if subject is not None:
        # the distractor's subject is the gold subject; swap roles so nobody acts on themselves
        orig = " ".join(subj_parts)
        if orig in ("A", "B") and subject in (a, b) and roles[orig] != subject:
            roles = {"A": b, "B": a}
        subj_words = subject.split()
    else:
        subj_words = [roles.get(p, p) for p in subj_parts]
    number = PLUR if "and" in subj_words else SING
    s = Sentence()
    for w in subj_words:
        s.add(w, "PROPN" if w in NAMES else _WORD_UPOS.get(w, "NOUN"))
    s.subject_number = number
    for p in parts[verb_at:]:
        if p.startswith("V:"):
            s.main_verb = _verb(s, p[2:], number)
            s.verb_alternative = _alternative(s.tokens[s.main_verb].form)
        elif p in roles:
            s.add(roles[p], "PROPN")
        elif p == "F":
            s.add(food, "NOUN")
        elif p == "K":
            s.add(thing, "NOUN")
        else:
            s.add(p, _WORD_UPOS.get(p, "VERB" if p in ("look", "rain") else "NOUN"))
    return s.end()


def event_pair(rng: random.Random, a: str, b: str, food: str) -> tuple[int, Sentence, Sentence, dict[str, str]]:
    i = rng.randrange(len(EVENTS))
    roles = dict(a=a, b=b, food=food, thing=rng.choice(THINGS))
    ev = _template(EVENTS[i][0], **roles)
    # "One day, ..." opens the event so the script position is visible to NSP / SOP
    ev.tokens[0].form = ev.tokens[0].form if ev.tokens[0].upos == "PROPN" else ev.tokens[0].form.lower()
    lead = Sentence()
    lead.extend(["One", "day", ","], ["NUM", "NOUN", "PUNCT"])
    if lead.main_verb is None and ev.main_verb is not None:
        lead.main_verb = ev.main_verb + 3
    lead.tokens += ev.tokens
    lead.subject_number, lead.verb_alternative = ev.subject_number, ev.verb_alternative
    return i, lead, _template(EVENTS[i][1], **roles), roles


class StoryWriter:
    """Writes one story at a time following the script (see the module docstring)."""

    STATE_P = 0.75  # chance each optional fact (home, food, colour) is stated
    BACKGROUND = (2, 3)  # how many generic clauses a story's background holds (drawn uniformly)

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.grammar = Grammar(rng)

    def story(self) -> Story:
        rng = self.rng
        ents = _world(rng, rng.choice([2, 2, 3]))
        a, b = ents[0], ents[1]
        sents: list[Sentence] = []
        pending: list[tuple[int, str, str, str]] = []  # (sentence index, entity, attribute, value)
        unstated: list[tuple[str, str]] = []

        def say(s: Sentence, *facts: tuple[str, str, str]) -> None:
            sents.append(s.end())
            pending.extend((len(sents) - 1, e, attr, v) for e, attr, v in facts)

        def introduce(e: Entity, friend_of: Entity | None) -> None:
            s = Sentence()
            state_colour = rng.random() < self.STATE_P
            if friend_of is not None and rng.random() < 0.5:
                s.add(friend_of.name, "PROPN")
                s.main_verb = _verb(s, "have", SING)
                s.extend(["a", "friend", "named", e.name], ["DET", "NOUN", "VERB", "PROPN"])
                say(s, (friend_of.name, "friend", e.name), (e.name, "friend", friend_of.name))
                s = Sentence()
            elif friend_of is not None:
                s.extend([friend_of.name, "and", e.name], ["PROPN", "CCONJ", "PROPN"])
                s.main_verb = _verb(s, "be", PLUR)
                s.add("friends", "NOUN", "friend", "Number=Plur")
                say(s, (friend_of.name, "friend", e.name), (e.name, "friend", friend_of.name))
                s = Sentence()
            s.add(e.name, "PROPN")
            s.main_verb = _verb(s, "be", SING)
            words = ([e.size] if rng.random() < 0.5 else []) + ([e.colour] if state_colour else [])
            s.add(a_or_an((words or [e.species])[0]), "DET", "a")
            for w in words:
                s.add(w, "ADJ")
            s.add(e.species, "NOUN", e.species, "Number=Sing")
            facts = [(e.name, "species", e.species)] + ([(e.name, "colour", e.colour)] if state_colour else [])
            say(s, *facts)
            if not state_colour:
                unstated.append((e.name, "colour"))
            if rng.random() < self.STATE_P:
                s = Sentence()
                s.add(e.name, "PROPN")
                if rng.random() < 0.5:
                    s.main_verb = _verb(s, "live", SING)
                    s.extend(["in", "the", e.home], ["ADP", "DET", "NOUN"])
                else:
                    s.main_verb = _verb(s, "have", SING)
                    s.extend(["a", "home", "in", "the", e.home], ["DET", "NOUN", "ADP", "DET", "NOUN"])
                say(s, (e.name, "home", "the " + e.home))
            else:
                unstated.append((e.name, "home"))
            if rng.random() < self.STATE_P:
                s = Sentence()
                s.add(e.name, "PROPN")
                if rng.random() < 0.5:
                    s.main_verb = _verb(s, "like", SING)
                    s.add(e.food, "NOUN")
                else:
                    s.main_verb = _verb(s, "eat", SING)
                    s.extend([e.food, "every", "day"], ["NOUN", "DET", "NOUN"])
                say(s, (e.name, "food", e.food))
            else:
                unstated.append((e.name, "food"))
            s = Sentence()
            s.add(e.name, "PROPN")
            s.main_verb = _verb(s, "be", SING)
            if rng.random() < 0.3:  # "not" + the opposite valence keeps the trait's sentiment
                opposite = TRAITS_NEG if VALENCE[e.trait] else TRAITS_POS
                s.add("not", "PART")
                s.add(rng.choice(opposite), "ADJ")
                say(s)
            else:
                if rng.random() < 0.3:
                    s.add("very", "ADV")
                s.add(e.trait, "ADJ")
                say(s, (e.name, "trait", e.trait))

        introduce(a, None)
        for e in ents[1:]:
            introduce(e, a)
        intro_end = len(sents)
        for _ in range(rng.choice(self.BACKGROUND)):  # background: the agreement-rich generic sentences
            sents.append(self.grammar.clause())
        food = a.food if (a.name, "food") not in unstated else rng.choice(FOODS)
        kind, ev, cons, _ = event_pair(rng, a.name, b.name, food)
        sents += [ev, cons]
        s = Sentence()  # how the day went: a sentiment line that follows from the event
        s.extend(["It"], ["PRON"])
        s.main_verb = _verb(s, "be", SING)
        good = EVENT_VALENCE[kind]
        if rng.random() < 0.3:
            s.add("not", "PART")
            good = 1 - good
        adj = rng.choice(QUALITY_POS if good else QUALITY_NEG)
        s.extend([a_or_an(adj), adj, "day"], ["DET", "ADJ", "NOUN"])
        sents.append(s.end())
        s = Sentence()  # closing line
        if (a.name, "home") not in unstated and rng.random() < 0.6:
            s.add(a.name, "PROPN")
            s.main_verb = _verb(s, "go", SING)
            s.extend(["home", "to", "the", a.home, "in", "the", "evening"],
                     ["ADV", "ADP", "DET", "NOUN", "ADP", "DET", "NOUN"])
        else:
            s.extend([a.name, "and", b.name], ["PROPN", "CCONJ", "PROPN"])
            s.main_verb = _verb(s, "meet", PLUR)
            s.extend(["again", "the", "next", "day"], ["ADV", "DET", "ADJ", "NOUN"])
        sents.append(s.end())
        # character offsets of stated values, found inside their own sentence
        starts, pos = [], 0
        for sent in sents:
            starts.append(pos)
            pos += len(sent.text) + 1
        facts = []
        for i, e, attr, value in pending:
            t = sents[i].text
            at = _find_word(t, value, after=len(e) if t.startswith(e) and value != e else 0)
            facts.append(Fact(e, attr, value, starts[i] + at))
        return Story(ents, sents, facts, unstated, intro_end, (ev, cons))


def _find_word(text: str, word: str, *, after: int = 0) -> int:
    """Offset of ``word`` as a whole word in ``text`` at or after ``after``."""
    i = after
    while True:
        i = text.index(word, i)
        before = text[i - 1] if i > 0 else " "
        end = i + len(word)
        if not before.isalnum() and (end == len(text) or not text[end].isalnum()):
            return i
        i += 1


# ---------------------------------------------------------------- corruptions (CoLA negatives)
CORRUPTIONS = ("agreement", "determiner", "order", "missing")
# Agreement across an attractor is the hardest: a tiny BERT pre-trained for a few CPU minutes has not
# learned it (docs/quickstart.md), so it is a small share; swapped neighbours and missing words are what
# pre-training teaches first and a model fine-tuned from scratch on 1,000 labels does not pick up.
_CORRUPTION_WEIGHTS = (0.15, 0.10, 0.40, 0.35)
CORRUPTION_SOURCE = {"agreement": "tl_agr", "determiner": "tl_det", "order": "tl_ord", "missing": "tl_mis"}


def corrupt(s: Sentence, kind: str, rng: random.Random) -> list[str] | None:
    """The words of ``s`` made ungrammatical by ``kind``, or None when that kind does not apply."""
    words = s.words
    if kind == "agreement":
        if s.main_verb is None or s.verb_alternative is None:
            return None
        w = list(words)
        alt = s.verb_alternative
        w[s.main_verb] = alt[:1].upper() + alt[1:] if words[s.main_verb][:1].isupper() else alt
        return w
    if kind == "determiner":
        if not s.dets:
            return None
        i = rng.choice(s.dets)
        det = words[i].lower()
        noun = next(words[j] for j in range(i + 1, len(words)) if words[j] in NOUN_NUMBER)
        if det in ("a", "an") and rng.random() < 0.5:
            wrong = "an" if det == "a" else "a"  # the article of the wrong sound
        else:  # a determiner of the other number ("these fox", "a foxes")
            wrong = rng.choice([d for d in DETS[_other(NOUN_NUMBER[noun])] if d != "the"])
            if wrong == "a":
                wrong = a_or_an(words[i + 1])
        w = list(words)
        w[i] = wrong[:1].upper() + wrong[1:] if words[i][:1].isupper() else wrong
        return w
    content = [i for i in range(len(words) - 1)]  # never the final period
    if kind == "order":
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
    if kind == "missing":
        # drop a word whose absence breaks the sentence: the verb, a determiner, a preposition
        # (a determiner only before a singular noun: "foxes sleep" without "the" is still grammatical)
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
    raise ValueError(kind)


def _noun_after(words: Sequence[str], i: int) -> str | None:
    """The number of the first noun after position ``i``."""
    return next((NOUN_NUMBER[w] for w in words[i + 1:] if w in NOUN_NUMBER), None)


# ---------------------------------------------------------------- task builders
SPLITS = ("train", "dev", "test")


class _Splitter:
    """Draws unique items for train, then dev, then test: no key appears in two splits."""

    def __init__(self, sizes: dict[str, int], *, max_tries: int = 50) -> None:
        self.sizes, self.max_tries = sizes, max_tries
        self.seen: set[str] = set()

    def fill(self, draw: Callable[[], tuple[str, Any] | None]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for split, n in self.sizes.items():
            items: list[Any] = []
            misses = 0
            while len(items) < n:
                got = draw()
                if got is None or got[0] in self.seen:
                    misses += 1
                    if misses > self.max_tries * max(n, 1):
                        raise DataError(f"toyland: could not draw {n} distinct {split} examples; "
                                        "ask for fewer examples")
                    continue
                self.seen.add(got[0])
                items.append(got[1])
            out[split] = items
        return out


def cola_examples(rng: random.Random, sizes: dict[str, int]) -> dict[str, list[tuple[str, int, str]]]:
    """(source, label, sentence) per split, half grammatical, half corrupted."""
    grammar = Grammar(rng)

    def draw() -> tuple[str, tuple[str, int, str]] | None:
        s = grammar.clause()
        if rng.random() < 0.5:
            return s.text, ("tl_ok", 1, s.text)
        kind = rng.choices(CORRUPTIONS, _CORRUPTION_WEIGHTS)[0]
        words = corrupt(s, kind, rng)
        if words is None:
            return None
        text = render(words)
        return (None if text == s.text else (text, (CORRUPTION_SOURCE[kind], 0, text)))  # type: ignore[return-value]

    return _Splitter(sizes).fill(draw)


def sst2_sentence(rng: random.Random) -> tuple[Sentence, int]:
    """A sentence with a sentiment label: the predicate's valence, flipped by "not"/"never"."""
    g = Grammar(rng)
    s = Sentence()
    r = rng.random()
    negated = rng.random() < 0.45
    if r < 0.4:  # "the fox near the owls is (not) kind"
        number = rng.choice([SING, PLUR])
        if rng.random() < 0.4:
            name = rng.choice(NAMES)
            s.add(name, "PROPN")
            number = SING
        else:
            # a distracting adjective of either valence in the subject
            g.np(s, number, adj_p=0.5, adjectives=COLOURS + SIZES + TRAITS_POS + TRAITS_NEG)
            if rng.random() < 0.3:
                s.add(rng.choice(PREPOSITIONS), "ADP")
                g.np(s, rng.choice([SING, PLUR]), adj_p=0.3, adjectives=TRAITS_POS + TRAITS_NEG)
        _verb(s, "be", number)
        if negated:
            s.add("not", "PART")
        if rng.random() < 0.3:
            s.add(rng.choice(["very", "really", "quite"]), "ADV")
        adj = rng.choice(TRAITS_POS + TRAITS_NEG)
        s.add(adj, "ADJ")
        label = VALENCE[adj]
    elif r < 0.75:  # "Ada does not like the soup"
        s.add(rng.choice(NAMES), "PROPN")
        verb = rng.choice(["like", "love", "enjoy", "hate", "dislike"])
        if negated:
            if rng.random() < 0.3:
                s.add("never", "ADV")
                _verb(s, verb, SING)
            else:
                _verb(s, "do", SING)
                s.add("not", "PART")
                s.add(verb, "VERB", verb, "VerbForm=Inf")
        else:
            _verb(s, verb, SING)
        if rng.random() < 0.5:
            adj = rng.choice(QUALITY_POS + QUALITY_NEG) if rng.random() < 0.4 else None
            s.add("the", "DET")
            if adj:
                s.add(adj, "ADJ")
            s.add(rng.choice(FOODS), "NOUN")
        else:
            s.add(rng.choice(FOODS), "NOUN")
        label = int(verb in ("like", "love", "enjoy"))
    else:  # "the bread is not fresh" / "it is not a good day"
        if rng.random() < 0.5:
            s.extend(["the", rng.choice(FOODS)], ["DET", "NOUN"])
            _verb(s, "be", PLUR if s.tokens[-1].form.endswith("s") else SING)
            if negated:
                s.add("not", "PART")
            adj = rng.choice(QUALITY_POS + QUALITY_NEG)
            s.add(adj, "ADJ")
        else:
            s.add("it", "PRON")
            _verb(s, "be", SING)
            if negated:
                s.add("not", "PART")
            adj = rng.choice(QUALITY_POS + QUALITY_NEG)
            s.extend([a_or_an(adj), adj, rng.choice(["day", "song", "story", "game"])], ["DET", "ADJ", "NOUN"])
        label = VALENCE[adj]
    if negated:
        label = 1 - label
    return s.end(), label


def rte_pair(rng: random.Random) -> tuple[str, str, str]:
    """(premise, hypothesis, label): the premise states facts; the hypothesis restates or contradicts one."""
    story = StoryWriter(rng).story()
    premise = " ".join(s.text for s in story.sentences[:story.intro_end])
    facts = [f for f in story.facts if f.attribute in ("home", "food", "colour", "species", "friend")]
    f = rng.choice(facts)
    names = [e.name for e in story.entities]
    entail = rng.random() < 0.5
    if f.attribute == "friend":
        friends = {g.value for g in facts if g.attribute == "friend" and g.entity == f.entity}
        third = next((n for n in names if n != f.entity and n not in friends), None) or rng.choice(
            [n for n in NAMES if n not in names])
        if entail:
            return premise, f"{f.value} is a friend of {f.entity}.", "entailment"
        return premise, rng.choice([f"{third} is a friend of {f.entity}.",
                                    f"{f.entity} and {f.value} are not friends."]), "not_entailment"
    ent = next(e for e in story.entities if e.name == f.entity)
    value = getattr(ent, f.attribute)
    # a wrong value: mostly another entity's, whose words are in the premise (no word-overlap shortcut)
    pool = {"home": HOMES, "food": FOODS, "colour": COLOURS, "species": [a for a, _ in ANIMALS]}[f.attribute]
    if rng.random() < 0.7:
        wrong = getattr(rng.choice([e for e in story.entities if e.name != f.entity]), f.attribute)
    else:
        wrong = rng.choice([v for v in pool if v != value])
    affirm = {"home": "{e} lives in the {v}.", "food": "{e} likes {v}.", "colour": "{e} is {v}.",
              "species": "{e} is {a} {v}."}[f.attribute]
    deny = {"home": "{e} does not live in the {v}.", "food": "{e} does not like {v}.",
            "colour": "{e} is not {v}.", "species": "{e} is not {a} {v}."}[f.attribute]
    # in this world everyone has one home, one food, one colour, one species: denying a wrong value
    # follows from the premise as much as restating the right one
    if entail:
        template, v = (affirm, value) if rng.random() < 0.6 else (deny, wrong)
    else:
        template, v = (affirm, wrong) if rng.random() < 0.6 else (deny, value)
    return premise, template.format(e=f.entity, v=v, a=a_or_an(v)), "entailment" if entail else "not_entailment"


QUESTIONS: dict[str, Callable[[str], str]] = {
    "home": lambda e: f"Where does {e} live?",
    "food": lambda e: f"What does {e} like to eat?",
    "colour": lambda e: f"What colour is {e}?",
    "species": lambda e: f"What kind of animal is {e}?",
    "friend": lambda e: f"Who is the friend of {e}?",
    "trait": lambda e: f"What is {e} like?",
}


def squad_article(rng: random.Random, index: int, *, v2: bool) -> tuple[dict[str, Any], Story]:
    """One SQuAD article: a story and questions about stated facts (+ unanswerable ones for v2)."""
    story = StoryWriter(rng).story()
    context = story.text
    qas = []
    # a question needs one answer: Ada with two friends gives no "Who is the friend of Ada?"
    keys = [(f.entity, f.attribute) for f in story.facts]
    unique = [f for f in story.facts if keys.count((f.entity, f.attribute)) == 1]
    facts = rng.sample(unique, min(len(unique), rng.choice([3, 4, 5])))
    for j, f in enumerate(facts):
        qas.append({"id": f"toy{index:06d}q{j}", "question": QUESTIONS[f.attribute](f.entity),
                    "answers": [{"text": f.value, "answer_start": f.start}], **({"is_impossible": False} if v2 else {})})
    if v2:
        for j, (e, attr) in enumerate(rng.sample(story.unstated, min(len(story.unstated), 2))):
            # plausible: the same attribute of someone else in the story, the answer a careless reader gives
            plausible = [{"text": f.value, "answer_start": f.start} for f in story.facts
                         if f.attribute == attr and f.entity != e][:1]
            qas.append({"id": f"toy{index:06d}u{j}", "question": QUESTIONS[attr](e), "answers": [],
                        "is_impossible": True, **({"plausible_answers": plausible} if plausible else {})})
    rng.shuffle(qas)
    names = " and ".join(e.name for e in story.entities)
    return {"title": f"{names} ({index})", "paragraphs": [{"context": context, "qas": qas}]}, story


def swag_item(rng: random.Random) -> tuple[str, str, list[str], int]:
    """(sent1, sent2, endings, label): an event, the start of its consequence, 4 candidate endings."""
    a, b = rng.sample(NAMES, 2)
    food = rng.choice(FOODS)
    kind, ev, cons, roles = event_pair(rng, a, b, food)
    subject_len = next(i for i, t in enumerate(cons.tokens) if t.upos in ("VERB", "AUX"))
    subject = " ".join(cons.words[:subject_len])
    gold = render(cons.words[subject_len:])
    endings = [gold]
    for other in rng.sample([i for i in range(len(EVENTS)) if i != kind], len(EVENTS) - 1):
        s = _template(EVENTS[other][1], **roles, subject=subject)
        ending = render(s.words[subject_len:])
        if ending not in endings:
            endings.append(ending)
        if len(endings) == 4:
            break
    label = rng.randrange(4)
    endings[0], endings[label] = endings[label], endings[0]
    return ev.text, subject, endings, label


# ---------------------------------------------------------------- writing
@dataclasses.dataclass(frozen=True)
class WrittenFile:
    path: Path
    count: int  # documents / examples / questions / sentences
    unit: str

    @property
    def mb(self) -> float:
        return self.path.stat().st_size / 1e6


def _rng(seed: int, name: str) -> random.Random:
    # one independent stream per output: changing --docs does not change the tasks
    return random.Random(f"toyland:{seed}:{name}")


def split_sizes(examples: int) -> dict[str, int]:
    held_out = max(20, examples // 2)
    return {"train": examples, "dev": held_out, "test": held_out}


def write_corpus(path: Path, *, docs: int, seed: int) -> WrittenFile:
    writer = StoryWriter(_rng(seed, "corpus"))
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(docs):
            f.write(writer.story().text + "\n")
    return WrittenFile(path, docs, "documents")


def _write_lines(path: Path, lines: Iterator[str] | list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        for line in lines:
            f.write(line + "\n")


def write_tasks(out: Path, *, examples: int, seed: int) -> list[WrittenFile]:
    sizes = split_sizes(examples)
    files: list[WrittenFile] = []
    dev_name = {"rte": "val", "swag": "val"}  # SuperGLUE and SWAG call it val

    def name(task: str, split: str, suffix: str) -> Path:
        d = out / task
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{dev_name.get(task, 'dev') if split == 'dev' else split}{suffix}"

    # CoLA
    for split, rows in cola_examples(_rng(seed, "cola"), sizes).items():
        p = name("cola", split, ".tsv")
        _write_lines(p, (f"{src}\t{label}\t{'' if label else '*'}\t{text}" for src, label, text in rows))
        files.append(WrittenFile(p, len(rows), "sentences"))
    # SST-2
    rng = _rng(seed, "sst2")

    def draw_sst() -> tuple[str, tuple[str, int]]:
        s, label = sst2_sentence(rng)
        return s.text, (s.text, label)
    for split, rows in _Splitter(sizes).fill(draw_sst).items():
        p = name("sst2", split, ".tsv")
        _write_lines(p, ["sentence\tlabel", *(f"{t}\t{label}" for t, label in rows)])
        files.append(WrittenFile(p, len(rows), "sentences"))
    # RTE
    rng = _rng(seed, "rte")

    def draw_rte() -> tuple[str, tuple[str, str, str]]:
        p_, h, label = rte_pair(rng)
        return p_ + "\t" + h, (p_, h, label)
    for split, rows in _Splitter(sizes).fill(draw_rte).items():
        p = name("rte", split, ".jsonl")
        _write_lines(p, (json.dumps({"premise": pr, "hypothesis": h, "label": label, "idx": i})
                         for i, (pr, h, label) in enumerate(rows)))
        files.append(WrittenFile(p, len(rows), "pairs"))
    # SQuAD v1.1 and v2.0: a story per article, a few questions each (so fewer articles than examples)
    for task, v2 in (("squad", False), ("squad-v2", True)):
        rng = _rng(seed, task)
        counter = iter(range(10 ** 9))

        def draw_article(v2: bool = v2) -> tuple[str, dict[str, Any]]:
            article, story = squad_article(rng, next(counter), v2=v2)
            return story.text, article
        article_sizes = {k: max(2, v // 4) for k, v in sizes.items()}
        for split, articles in _Splitter(article_sizes).fill(draw_article).items():
            p = name(task, split, ".json")
            with open(p, "w", encoding="utf-8") as f:
                json.dump({"version": "v2.0" if v2 else "1.1", "data": articles}, f, ensure_ascii=False)
            files.append(WrittenFile(p, sum(len(a["paragraphs"][0]["qas"]) for a in articles), "questions"))
    # SWAG
    rng = _rng(seed, "swag")

    def draw_swag() -> tuple[str, tuple[str, str, list[str], int]]:
        item = swag_item(rng)
        return item[0] + " " + item[1] + " " + item[2][item[3]], item
    header = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
              "ending0", "ending1", "ending2", "ending3", "label"]
    for split, rows in _Splitter(sizes).fill(draw_swag).items():
        p = name("swag", split, ".csv")
        with open(p, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for i, (s1, s2, endings, label) in enumerate(rows):
                w.writerow([i, f"toyland-{split}-{i}", i, f"{s1} {s2}", s1, s2, "gold", *endings, label])
        files.append(WrittenFile(p, len(rows), "items"))
    # POS tagging: story and background sentences with their tags
    rng = _rng(seed, "pos")
    writer = StoryWriter(rng)
    buffer: list[Sentence] = []

    def draw_pos() -> tuple[str, Sentence]:
        if not buffer:
            buffer.extend(writer.story().sentences)
        s = buffer.pop()
        return s.text, s
    for split, sents in _Splitter(sizes).fill(draw_pos).items():
        p = name("pos", split, ".conllu")
        with open(p, "w", encoding="utf-8") as f:
            for i, s in enumerate(sents):
                f.write(conllu(s, f"toyland-{split}-{i}"))
        files.append(WrittenFile(p, len(sents), "sentences"))
    return files


def conllu(s: Sentence, sent_id: str) -> str:
    """One sentence in CoNLL-U: ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC (no parse: '_')."""
    lines = [f"# sent_id = {sent_id}", f"# text = {s.text}"]
    for i, t in enumerate(s.tokens):
        nxt = s.tokens[i + 1].form if i + 1 < len(s.tokens) else None
        misc = "SpaceAfter=No" if nxt in (".", ",") or nxt is None else "_"
        lines.append("\t".join([str(i + 1), t.form, t.lemma, t.upos, "_", t.feats, "_", "_", "_", misc]))
    return "\n".join(lines) + "\n\n"


def generate(out: str | Path, *, docs: int = 8000, examples: int = 1000, seed: int = 0) -> list[WrittenFile]:
    """Write the corpus and every task under ``out``; returns what was written."""
    if docs < 1:
        raise DataError(f"--docs must be at least 1 (got {docs}); the corpus needs documents")
    if examples < 4:
        raise DataError(f"--examples must be at least 4 (got {examples}); each split needs examples")
    out = Path(out)
    try:  # a real write, not os.access: root passes access checks on read-only mounts
        (out / "corpus").mkdir(parents=True, exist_ok=True)
        probe = out / ".toyland-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise DataError(f"cannot write to {out} ({err.strerror or err}); pick a writable --out directory") from None
    files = [write_corpus(out / "corpus" / "train.txt", docs=docs, seed=seed)]
    files += write_tasks(out, examples=examples, seed=seed)
    manifest = {"seed": seed, "docs": docs, "examples": examples,
                "files": {str(f.path.relative_to(out)): {"count": f.count, "unit": f.unit} for f in files}}
    (out / "toyland.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return files
