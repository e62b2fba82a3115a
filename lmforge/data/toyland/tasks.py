"""Toyland's tasks in their official formats, the pre-training corpus, and ``generate`` that writes them all.

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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lmforge.data.toyland.grammar import (
    CORRUPTION_SOURCE, CORRUPTION_WEIGHTS, CORRUPTIONS, Grammar, Sentence, add_verb, corrupt, render,
)
from lmforge.data.toyland.lexicon import (
    ANIMALS, COLOURS, FOODS, HOMES, NAMES, PLUR, PREPOSITIONS, QUALITY_NEG, QUALITY_POS, SING, SIZES,
    TRAITS_NEG, TRAITS_POS, VALENCE, a_or_an,
)
from lmforge.data.toyland.stories import EVENTS, Story, StoryWriter, event_pair, render_event
from lmforge.errors import DataError

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
        kind = rng.choices(CORRUPTIONS, CORRUPTION_WEIGHTS)[0]
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
    if r < 0.4:
        label = _sst2_trait(rng, g, s, negated)
    elif r < 0.75:
        label = _sst2_liking(rng, s, negated)
    else:
        label = _sst2_quality(rng, s, negated)
    if negated:
        label = 1 - label
    return s.end(), label


def _sst2_trait(rng: random.Random, g: Grammar, s: Sentence, negated: bool) -> int:
    """ "the fox near the owls is (not) kind": the valence of the trait, before negation."""
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
    add_verb(s, "be", number)
    if negated:
        s.add("not", "PART")
    if rng.random() < 0.3:
        s.add(rng.choice(["very", "really", "quite"]), "ADV")
    adj = rng.choice(TRAITS_POS + TRAITS_NEG)
    s.add(adj, "ADJ")
    return VALENCE[adj]


def _sst2_liking(rng: random.Random, s: Sentence, negated: bool) -> int:
    """ "Ada does not like the soup": whether the verb likes, before negation."""
    s.add(rng.choice(NAMES), "PROPN")
    verb = rng.choice(["like", "love", "enjoy", "hate", "dislike"])
    if negated:
        if rng.random() < 0.3:
            s.add("never", "ADV")
            add_verb(s, verb, SING)
        else:
            add_verb(s, "do", SING)
            s.add("not", "PART")
            s.add(verb, "VERB", verb, "VerbForm=Inf")
    else:
        add_verb(s, verb, SING)
    if rng.random() < 0.5:
        adj = rng.choice(QUALITY_POS + QUALITY_NEG) if rng.random() < 0.4 else None
        s.add("the", "DET")
        if adj:
            s.add(adj, "ADJ")
        s.add(rng.choice(FOODS), "NOUN")
    else:
        s.add(rng.choice(FOODS), "NOUN")
    return int(verb in ("like", "love", "enjoy"))


def _sst2_quality(rng: random.Random, s: Sentence, negated: bool) -> int:
    """ "the bread is not fresh" / "it is not a good day": the quality's valence, before negation."""
    if rng.random() < 0.5:
        s.extend(["the", rng.choice(FOODS)], ["DET", "NOUN"])
        add_verb(s, "be", PLUR if s.tokens[-1].form.endswith("s") else SING)
        if negated:
            s.add("not", "PART")
        adj = rng.choice(QUALITY_POS + QUALITY_NEG)
        s.add(adj, "ADJ")
    else:
        s.add("it", "PRON")
        add_verb(s, "be", SING)
        if negated:
            s.add("not", "PART")
        adj = rng.choice(QUALITY_POS + QUALITY_NEG)
        s.extend([a_or_an(adj), adj, rng.choice(["day", "song", "story", "game"])], ["DET", "ADJ", "NOUN"])
    return VALENCE[adj]


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
        s = render_event(EVENTS[other][1], **roles, subject=subject)
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
    """Every task's splits under ``out/<task>/``; each task draws from its own seeded stream."""
    sizes = split_sizes(examples)
    files = _write_cola(out, sizes, seed)
    files += _write_sst2(out, sizes, seed)
    files += _write_rte(out, sizes, seed)
    files += _write_squad(out, sizes, seed)
    files += _write_swag(out, sizes, seed)
    files += _write_pos(out, sizes, seed)
    return files


_DEV_NAME = {"rte": "val", "swag": "val"}  # SuperGLUE and SWAG call it val


def _split_path(out: Path, task: str, split: str, suffix: str) -> Path:
    d = out / task
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{_DEV_NAME.get(task, 'dev') if split == 'dev' else split}{suffix}"


def _write_cola(out: Path, sizes: dict[str, int], seed: int) -> list[WrittenFile]:
    files = []
    for split, rows in cola_examples(_rng(seed, "cola"), sizes).items():
        p = _split_path(out, "cola", split, ".tsv")
        _write_lines(p, (f"{src}\t{label}\t{'' if label else '*'}\t{text}" for src, label, text in rows))
        files.append(WrittenFile(p, len(rows), "sentences"))
    return files


def _write_sst2(out: Path, sizes: dict[str, int], seed: int) -> list[WrittenFile]:
    rng = _rng(seed, "sst2")

    def draw() -> tuple[str, tuple[str, int]]:
        s, label = sst2_sentence(rng)
        return s.text, (s.text, label)
    files = []
    for split, rows in _Splitter(sizes).fill(draw).items():
        p = _split_path(out, "sst2", split, ".tsv")
        _write_lines(p, ["sentence\tlabel", *(f"{t}\t{label}" for t, label in rows)])
        files.append(WrittenFile(p, len(rows), "sentences"))
    return files


def _write_rte(out: Path, sizes: dict[str, int], seed: int) -> list[WrittenFile]:
    rng = _rng(seed, "rte")

    def draw() -> tuple[str, tuple[str, str, str]]:
        premise, hypothesis, label = rte_pair(rng)
        return premise + "\t" + hypothesis, (premise, hypothesis, label)
    files = []
    for split, rows in _Splitter(sizes).fill(draw).items():
        p = _split_path(out, "rte", split, ".jsonl")
        _write_lines(p, (json.dumps({"premise": pr, "hypothesis": h, "label": label, "idx": i})
                         for i, (pr, h, label) in enumerate(rows)))
        files.append(WrittenFile(p, len(rows), "pairs"))
    return files


def _write_squad(out: Path, sizes: dict[str, int], seed: int) -> list[WrittenFile]:
    """SQuAD v1.1 and v2.0: a story per article, a few questions each (so fewer articles than examples)."""
    files = []
    for task, v2 in (("squad", False), ("squad-v2", True)):
        rng = _rng(seed, task)
        counter = iter(range(10 ** 9))

        def draw(rng: random.Random = rng, v2: bool = v2) -> tuple[str, dict[str, Any]]:
            article, story = squad_article(rng, next(counter), v2=v2)
            return story.text, article
        article_sizes = {k: max(2, v // 4) for k, v in sizes.items()}
        for split, articles in _Splitter(article_sizes).fill(draw).items():
            p = _split_path(out, task, split, ".json")
            with open(p, "w", encoding="utf-8") as f:
                json.dump({"version": "v2.0" if v2 else "1.1", "data": articles}, f, ensure_ascii=False)
            files.append(WrittenFile(p, sum(len(a["paragraphs"][0]["qas"]) for a in articles), "questions"))
    return files


_SWAG_HEADER = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
                "ending0", "ending1", "ending2", "ending3", "label"]


def _write_swag(out: Path, sizes: dict[str, int], seed: int) -> list[WrittenFile]:
    rng = _rng(seed, "swag")

    def draw() -> tuple[str, tuple[str, str, list[str], int]]:
        item = swag_item(rng)
        return item[0] + " " + item[1] + " " + item[2][item[3]], item
    files = []
    for split, rows in _Splitter(sizes).fill(draw).items():
        p = _split_path(out, "swag", split, ".csv")
        with open(p, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(_SWAG_HEADER)
            for i, (s1, s2, endings, label) in enumerate(rows):
                w.writerow([i, f"toyland-{split}-{i}", i, f"{s1} {s2}", s1, s2, "gold", *endings, label])
        files.append(WrittenFile(p, len(rows), "items"))
    return files


def _write_pos(out: Path, sizes: dict[str, int], seed: int) -> list[WrittenFile]:
    """POS tagging: story and background sentences with their tags."""
    writer = StoryWriter(_rng(seed, "pos"))
    buffer: list[Sentence] = []

    def draw() -> tuple[str, Sentence]:
        if not buffer:
            buffer.extend(writer.story().sentences)
        s = buffer.pop()
        return s.text, s
    files = []
    for split, sents in _Splitter(sizes).fill(draw).items():
        p = _split_path(out, "pos", split, ".conllu")
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
