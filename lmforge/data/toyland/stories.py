"""Toyland's stories: a few entities told in a fixed script, the facts they state and the ones they leave out.

Each document introduces 2-3 entities (a name, a species, a colour, a home, a food, a trait, a friend),
then background clauses, an event, its consequence, how the day went and a closing line. The next
sentence is predictable from the story (NSP / SOP are learnable) and the stated facts can be asked
about; some facts are left unstated on purpose (the unanswerable SQuAD v2 questions ask about those).
"""
from __future__ import annotations

import dataclasses
import random

from lmforge.data.toyland.grammar import Grammar, Sentence, add_verb, other_number_form
from lmforge.data.toyland.lexicon import (
    ANIMALS, COLOURS, FOODS, HOMES, NAMES, PLUR, QUALITY_NEG, QUALITY_POS, SING, SIZES, THINGS, TRAITS_NEG,
    TRAITS_POS, VALENCE, a_or_an,
)


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
_WORD_UPOS = {"some": "DET", "the": "DET", "a": "DET", "into": "ADP", "out": "ADP", "of": "ADP", "to": "ADP",
              "under": "ADP", "for": "ADP", "and": "CCONJ", "it": "PRON", "very": "ADV", "home": "ADV",
              "hungry": "ADJ", "tired": "ADJ", "all": "DET", "afternoon": "NOUN", "lake": "NOUN",
              "water": "NOUN", "tree": "NOUN", "leg": "NOUN", "game": "NOUN", "song": "NOUN", "cake": "NOUN",
              "kite": "NOUN", "rain": "VERB"}


def render_event(template: str, *, a: str, b: str, food: str, thing: str, subject: str | None = None) -> Sentence:
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
            s.main_verb = add_verb(s, p[2:], number)
            s.verb_alternative = other_number_form(s.tokens[s.main_verb].form)
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
    ev = render_event(EVENTS[i][0], **roles)
    # "One day, ..." opens the event so the script position is visible to NSP / SOP
    ev.tokens[0].form = ev.tokens[0].form if ev.tokens[0].upos == "PROPN" else ev.tokens[0].form.lower()
    lead = Sentence()
    lead.extend(["One", "day", ","], ["NUM", "NOUN", "PUNCT"])
    if lead.main_verb is None and ev.main_verb is not None:
        lead.main_verb = ev.main_verb + 3
    lead.tokens += ev.tokens
    lead.subject_number, lead.verb_alternative = ev.subject_number, ev.verb_alternative
    return i, lead, render_event(EVENTS[i][1], **roles), roles


@dataclasses.dataclass
class _Draft:
    """A story being written: its sentences and the facts they state, located once the text is final."""

    sentences: list[Sentence] = dataclasses.field(default_factory=list)
    pending: list[tuple[int, str, str, str]] = dataclasses.field(default_factory=list)  # (sentence, entity, attr, value)
    unstated: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def say(self, s: Sentence, *facts: tuple[str, str, str]) -> None:
        """End ``s`` and append it; ``facts`` are the (entity, attribute, value) it states."""
        self.sentences.append(s.end())
        self.pending.extend((len(self.sentences) - 1, e, attr, v) for e, attr, v in facts)

    def states(self, entity: str, attribute: str) -> bool:
        return (entity, attribute) not in self.unstated

    def located_facts(self) -> list[Fact]:
        """Each pending fact with its value's character offset, found inside its own sentence."""
        starts, pos = [], 0
        for sent in self.sentences:
            starts.append(pos)
            pos += len(sent.text) + 1
        facts = []
        for i, e, attr, value in self.pending:
            t = self.sentences[i].text
            at = _find_word(t, value, after=len(e) if t.startswith(e) and value != e else 0)
            facts.append(Fact(e, attr, value, starts[i] + at))
        return facts


class StoryWriter:
    """Writes one story at a time following the script (see the package docstring).

    Every part draws from the one ``rng`` in script order, so the same seed gives the same story.
    """

    STATE_P = 0.75  # chance each optional fact (home, food, colour) is stated
    BACKGROUND = (2, 3)  # how many generic clauses a story's background holds (drawn uniformly)

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.grammar = Grammar(rng)

    def story(self) -> Story:
        rng = self.rng
        ents = _world(rng, rng.choice([2, 2, 3]))
        a, b = ents[0], ents[1]
        draft = _Draft()
        self.introduce(draft, a, None)
        for e in ents[1:]:
            self.introduce(draft, e, a)
        intro_end = len(draft.sentences)
        for _ in range(rng.choice(self.BACKGROUND)):  # background: the agreement-rich generic sentences
            draft.sentences.append(self.grammar.clause())
        food = a.food if draft.states(a.name, "food") else rng.choice(FOODS)
        kind, ev, cons, _ = event_pair(rng, a.name, b.name, food)
        draft.sentences += [ev, cons]
        draft.sentences.append(self.day_verdict(kind))
        draft.sentences.append(self.closing(draft, a, b))
        return Story(ents, draft.sentences, draft.located_facts(), draft.unstated, intro_end, (ev, cons))

    # ------------------------------------------------------------ the introduction, one entity at a time
    def introduce(self, draft: _Draft, e: Entity, friend_of: Entity | None) -> None:
        """Friendship (after the first entity), species + colour, home, food, trait."""
        state_colour = self.rng.random() < self.STATE_P  # drawn first: the order fixes the seeded output
        if friend_of is not None:
            self.friendship(draft, e, friend_of)
        self.appearance(draft, e, state_colour=state_colour)
        self.home(draft, e)
        self.food(draft, e)
        self.trait(draft, e)

    def friendship(self, draft: _Draft, e: Entity, friend_of: Entity) -> None:
        s = Sentence()
        if self.rng.random() < 0.5:
            s.add(friend_of.name, "PROPN")
            s.main_verb = add_verb(s, "have", SING)
            s.extend(["a", "friend", "named", e.name], ["DET", "NOUN", "VERB", "PROPN"])
        else:
            s.extend([friend_of.name, "and", e.name], ["PROPN", "CCONJ", "PROPN"])
            s.main_verb = add_verb(s, "be", PLUR)
            s.add("friends", "NOUN", "friend", "Number=Plur")
        draft.say(s, (friend_of.name, "friend", e.name), (e.name, "friend", friend_of.name))

    def appearance(self, draft: _Draft, e: Entity, *, state_colour: bool) -> None:
        """ "Ada is a (small) (red) fox." """
        s = Sentence()
        s.add(e.name, "PROPN")
        s.main_verb = add_verb(s, "be", SING)
        words = ([e.size] if self.rng.random() < 0.5 else []) + ([e.colour] if state_colour else [])
        s.add(a_or_an((words or [e.species])[0]), "DET", "a")
        for w in words:
            s.add(w, "ADJ")
        s.add(e.species, "NOUN", e.species, "Number=Sing")
        facts = [(e.name, "species", e.species)] + ([(e.name, "colour", e.colour)] if state_colour else [])
        draft.say(s, *facts)
        if not state_colour:
            draft.unstated.append((e.name, "colour"))

    def home(self, draft: _Draft, e: Entity) -> None:
        if self.rng.random() >= self.STATE_P:
            draft.unstated.append((e.name, "home"))
            return
        s = Sentence()
        s.add(e.name, "PROPN")
        if self.rng.random() < 0.5:
            s.main_verb = add_verb(s, "live", SING)
            s.extend(["in", "the", e.home], ["ADP", "DET", "NOUN"])
        else:
            s.main_verb = add_verb(s, "have", SING)
            s.extend(["a", "home", "in", "the", e.home], ["DET", "NOUN", "ADP", "DET", "NOUN"])
        draft.say(s, (e.name, "home", "the " + e.home))

    def food(self, draft: _Draft, e: Entity) -> None:
        if self.rng.random() >= self.STATE_P:
            draft.unstated.append((e.name, "food"))
            return
        s = Sentence()
        s.add(e.name, "PROPN")
        if self.rng.random() < 0.5:
            s.main_verb = add_verb(s, "like", SING)
            s.add(e.food, "NOUN")
        else:
            s.main_verb = add_verb(s, "eat", SING)
            s.extend([e.food, "every", "day"], ["NOUN", "DET", "NOUN"])
        draft.say(s, (e.name, "food", e.food))

    def trait(self, draft: _Draft, e: Entity) -> None:
        s = Sentence()
        s.add(e.name, "PROPN")
        s.main_verb = add_verb(s, "be", SING)
        if self.rng.random() < 0.3:  # "not" + the opposite valence keeps the trait's sentiment
            opposite = TRAITS_NEG if VALENCE[e.trait] else TRAITS_POS
            s.add("not", "PART")
            s.add(self.rng.choice(opposite), "ADJ")
            draft.say(s)  # no fact: the trait itself is not written
        else:
            if self.rng.random() < 0.3:
                s.add("very", "ADV")
            s.add(e.trait, "ADJ")
            draft.say(s, (e.name, "trait", e.trait))

    # ------------------------------------------------------------ after the event
    def day_verdict(self, kind: int) -> Sentence:
        """How the day went: a sentiment line that follows from event ``kind``."""
        s = Sentence()
        s.extend(["It"], ["PRON"])
        s.main_verb = add_verb(s, "be", SING)
        good = EVENT_VALENCE[kind]
        if self.rng.random() < 0.3:
            s.add("not", "PART")
            good = 1 - good
        adj = self.rng.choice(QUALITY_POS if good else QUALITY_NEG)
        s.extend([a_or_an(adj), adj, "day"], ["DET", "ADJ", "NOUN"])
        return s.end()

    def closing(self, draft: _Draft, a: Entity, b: Entity) -> Sentence:
        """Going home (when the home was stated) or meeting again."""
        s = Sentence()
        if draft.states(a.name, "home") and self.rng.random() < 0.6:
            s.add(a.name, "PROPN")
            s.main_verb = add_verb(s, "go", SING)
            s.extend(["home", "to", "the", a.home, "in", "the", "evening"],
                     ["ADV", "ADP", "DET", "NOUN", "ADP", "DET", "NOUN"])
        else:
            s.extend([a.name, "and", b.name], ["PROPN", "CCONJ", "PROPN"])
            s.main_verb = add_verb(s, "meet", PLUR)
            s.extend(["again", "the", "next", "day"], ["ADV", "DET", "ADJ", "NOUN"])
        return s.end()


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

