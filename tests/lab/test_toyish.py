"""Toyish, the second toy language (lmforge/data/toyland/toyish.py), and the corpus's translation demonstrations."""
from __future__ import annotations

import random
import re

from lmforge.data.toyland import StoryWriter
from lmforge.data.toyland.demos import write_demo_corpus
from lmforge.data.toyland.tasks import write_corpus
from lmforge.data.toyland.toyish import stem, translate


def _sentences(n_stories: int, seed: int = 0):
    writer = StoryWriter(random.Random(seed))
    return [s for _ in range(n_stories) for s in writer.story().sentences]


def test_one_stem_per_lemma_and_no_two_lemmas_share_one():
    lemmas = {t.lemma.lower() for s in _sentences(500) for t in s.tokens if t.upos not in ("PROPN", "PUNCT")}
    stems = {stem(lemma) for lemma in lemmas}
    assert len(lemmas) > 150 and len(stems) == len(lemmas)  # a translation can be read back word by word
    assert all(re.fullmatch(r"([bdfgklmnprstvz][aeiou]){3}", s) for s in stems)
    assert stem("Fox") == stem("fox") == "dakiru"  # pinned: a pure function of the lemma, the same on every machine


def test_translation_rules_number_order_names():
    by_text = {s.text: s for s in _sentences(300)}
    s = next(s for t, s in by_text.items() if re.fullmatch(r"\w+ is a \w+ \w+ \w+\.", t))  # "Alma is a big black squirrel."
    name, _, _, adj1, adj2, noun = s.text[:-1].split()
    assert translate(s) == f"{name} {stem('be')}t {stem('a')} {stem(noun)} {stem(adj1)} {stem(adj2)}."
    plural = next(s for s in by_text.values()
                  if any(t.upos == "NOUN" and "Number=Plur" in t.feats for t in s.tokens))
    noun = next(t for t in plural.tokens if t.upos == "NOUN" and "Number=Plur" in t.feats)
    assert f"{stem(noun.lemma)}n" in translate(plural).lower()
    verbs = [t for s in by_text.values() for t in s.tokens if t.upos == "VERB"]
    assert {"Number=Sing|Person=3", "Number=Plur"} & {t.feats for t in verbs}
    for s in list(by_text.values())[:200]:  # as many words as the English, names kept, capital and full stop
        out = translate(s)
        assert len(out.replace(",", "").split()) == sum(t.upos != "PUNCT" for t in s.tokens)
        assert out[0].isupper() and out.endswith(".")
        assert {t.form for t in s.tokens if t.upos == "PROPN"} <= set(re.findall(r"\w+", out))


def test_translation_demonstrations_in_the_corpus(tmp_path):
    write_corpus(tmp_path / "plain.txt", docs=100, seed=3)
    n = write_demo_corpus(tmp_path / "demo.txt", docs=100, seed=3, share=0.3, kinds=("translation",))
    plain = (tmp_path / "plain.txt").read_text().splitlines()
    demo = (tmp_path / "demo.txt").read_text().splitlines()
    pairs = [d for d in demo if d.startswith("English: ")]
    assert len(pairs) == n > 10 and [d for d in demo if d not in pairs] == plain[:100 - n]
    for d in pairs:
        parts = re.split(r" ?(English|Toyish): ", d)[1:]
        assert 2 <= len(parts) // 2 <= 6 and parts[0::4] == ["English"] * (len(parts) // 4)
        assert parts[2::4] == ["Toyish"] * (len(parts) // 4)
    # the default kinds do not include translation (the lab's measured corpora stay as they were)
    write_demo_corpus(tmp_path / "default.txt", docs=100, seed=3, share=0.5)
    assert "Toyish:" not in (tmp_path / "default.txt").read_text()


def test_lab_translation_distractors_and_fresh_evaluation_sentences(tmp_path):
    from lmforge.lab.translation import DISTRACTORS, _render, candidates, evaluation_sentences, shot_pool, usable

    write_demo_corpus(tmp_path / "c.txt", docs=300, seed=0, share=0.6, kinds=("translation",))
    corpus = (tmp_path / "c.txt").read_text()
    sentences, skipped = evaluation_sentences(corpus, 40)
    assert len({s.text for s in sentences}) == 40 and all(usable(s) for s in sentences)
    assert skipped > 0  # the toy language is small: some drawn sentences are in the corpus, and were left out
    assert not any(s.text in corpus or translate(s) in corpus for s in sentences)
    lemmas = sorted({t.lemma.lower() for s in sentences for t in s.tokens if t.upos in ("NOUN", "ADJ", "VERB")})
    rng = random.Random(0)
    for s in sentences:
        assert _render(s.tokens, s.tokens[0].form[:1].isupper()) == translate(s)  # the helper is toyish's rendering
        cands = candidates(s, sentences, rng, lemmas)
        assert cands[0] == translate(s) and len(cands) == 1 + len(DISTRACTORS)
        assert len(set(cands)) == len(cands)  # each distractor differs from the correct one and from each other
        order, number, lexicon = cands[1:4]
        assert sorted(re.findall(r"\w+", order)) == sorted(re.findall(r"\w+", cands[0]))  # same words, other order
        words = re.findall(r"\w+", cands[0])
        changed = [(a, b) for a, b in zip(re.findall(r"\w+", number), words) if a != b]
        assert len(changed) == 1 and changed[0][0][:-1] == changed[0][1][:-1]  # one word: its suffix
        assert changed[0][0][-1] + changed[0][1][-1] in ("tr", "rt")
        assert sum(a != b for a, b in zip(re.findall(r"\w+", lexicon), words)) == 1  # one word: its stem
    pool = shot_pool({s.text for s in sentences}, 30)
    assert len(pool) == 30 and not {e for e, _ in pool} & {s.text for s in sentences}
