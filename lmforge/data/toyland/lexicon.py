"""Toyland's lexicon: every word the generator can write, with its number, valence and part of speech.

A few hundred words: determiners, nouns with singular / plural forms (some irregular: mouse/mice,
wolf/wolves), names, colours, sizes, adjectives with positive or negative valence, verbs in 3rd-singular /
plural present, prepositions and adverbials.
"""
from __future__ import annotations

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
# verbs that only the story events use (give, thank, ...): in the lexicon, never drawn by the grammar
EVENT_VERBS: dict[str, str] = {
    "give": "gives", "thank": "thanks", "lose": "loses", "look": "looks", "fall": "falls", "pull": "pulls",
    "start": "starts", "show": "shows", "bring": "brings", "hurt": "hurts", "carry": "carries", "win": "wins",
    "bake": "bakes", "eat": "eats", "build": "builds", "fly": "flies", "live": "lives", "go": "goes",
    "share": "shares", "dislike": "dislikes", "hate": "hates", "enjoy": "enjoys",
}
VERB_FORMS: dict[str, dict[str, str]] = {lem: {SING: s, PLUR: lem}
                                         for lem, s in {**VERBS_INTR, **VERBS_TR, **EVENT_VERBS}.items()}
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

