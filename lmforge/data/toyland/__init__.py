"""Toyland: a built-in, seedable English-like language with a pre-training corpus and labelled tasks.

Nothing is downloaded and no text is copied: every sentence comes from a small grammar over a lexicon
of a few hundred words, so ``lmforge quickstart`` runs offline and the same seed always gives the
same bytes.

  lexicon.py   the words: nouns, names, verbs with their number, adjectives with their valence
  grammar.py   tagged sentences with agreement across attractors; corruptions for CoLA negatives
  stories.py   a few entities told in a fixed script; the facts stated and the ones left out
  tasks.py     CoLA, SST-2, RTE, SQuAD v1.1 / v2.0, SWAG, POS in their official formats; ``generate``
  demos.py     opt-in natural demonstrations in the corpus (reviews + verdicts, Q: / A:, "TL;DR:")
"""
from lmforge.data.toyland.grammar import (
    CORRUPTION_SOURCE, CORRUPTIONS, Grammar, Sentence, Token, corrupt, other_number_form, render,
)
from lmforge.data.toyland.lexicon import (
    ADVERBIALS, ANIMALS, AUX_FORMS, COLOURS, DET_NUMBER, DET_UPOS, DETS, EVENT_VERBS, FOODS, HOMES, NAMES,
    NOUN_LEMMA, NOUN_NUMBER, NOUNS, PEOPLE, PERSON_NOUNS, PLUR, PREPOSITIONS, QUALITY_NEG, QUALITY_POS, SING,
    SIZES, THINGS, TRAITS_NEG, TRAITS_POS, VALENCE, VERB_FORMS, VERB_NUMBER, VERBS_INTR, VERBS_TR, a_or_an,
    lexicon,
)
from lmforge.data.toyland.stories import EVENT_VALENCE, EVENTS, Entity, Fact, Story, StoryWriter, event_pair
from lmforge.data.toyland.tasks import (
    QUESTIONS, SPLITS, WrittenFile, cola_examples, conllu, generate, rte_pair, split_sizes, squad_article,
    sst2_sentence, swag_item, write_corpus, write_tasks,
)

__all__ = [
    "ADVERBIALS", "ANIMALS", "AUX_FORMS", "COLOURS", "CORRUPTIONS", "CORRUPTION_SOURCE", "DETS", "DET_NUMBER",
    "DET_UPOS", "EVENTS", "EVENT_VALENCE", "EVENT_VERBS", "FOODS", "HOMES", "NAMES", "NOUNS", "NOUN_LEMMA",
    "NOUN_NUMBER", "PEOPLE", "PERSON_NOUNS", "PLUR", "PREPOSITIONS", "QUALITY_NEG", "QUALITY_POS", "QUESTIONS",
    "SING", "SIZES", "SPLITS", "THINGS", "TRAITS_NEG", "TRAITS_POS", "VALENCE", "VERBS_INTR", "VERBS_TR",
    "VERB_FORMS", "VERB_NUMBER", "Entity", "Fact", "Grammar", "Sentence", "Story", "StoryWriter", "Token",
    "WrittenFile", "a_or_an", "cola_examples", "conllu", "corrupt", "event_pair", "generate", "lexicon",
    "other_number_form", "render", "rte_pair", "split_sizes", "squad_article", "sst2_sentence", "swag_item",
    "write_corpus", "write_tasks",
]
