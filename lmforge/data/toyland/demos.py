"""Natural demonstrations: a small share of corpus documents in which a task shows up the way it does in web text
(GPT-2's lesson, Radford et al. 2019 section 3: "TL;DR:" after articles, Q: / A: pairs, reviews with a verdict),
so that a language model pre-trained on the corpus can do those tasks zero- / few-shot.

  review   1-4 "Review: <a sentiment sentence> Sentiment: positive|negative." in a row
  tldr     a story, then "TL;DR: " and its summary (the event and its consequence, ``summary_of``)
  qa       a story, then 1-3 "Q: <question about a stated fact> A: <the answer>."
  translation  1-3 sentences of a story as "English: <sentence> Toyish: <the sentence in Toyish>" (toyish.py, the
           second toy language; not among the default kinds)
  io       2-6 "Input: <a sentiment sentence> Output: <answer>." in a row, every line of a document answering the
           same one of IO_TASKS (its sentiment, whether it is negated, whether it is about a person): the format
           does not say which task, only the answers of the lines before do (not among the default kinds)

Opt-in: ``generate_with_demonstrations`` / ``write_demo_corpus``; ``toyland.generate`` (the corpus of the quickstart's
BERT, pinned by a test) does not use this module; the quickstart's GPT and the lab's zero- / few-shot runs do. With a share > 0 the stories keep their order and text (the demo
documents come from their own seeded streams and are interleaved).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from lmforge.data.toyland.stories import Story, StoryWriter
from lmforge.errors import DataError

KINDS = ("review", "tldr", "qa", "translation", "io")
DEFAULT_KINDS = ("review", "tldr", "qa")  # the corpus the lab's runs were measured on (translation came later)
VERDICTS = ("negative", "positive")  # sst2 labels 0 / 1
QA_ATTRIBUTES = ("home", "food", "colour", "species", "trait")
# the io kind's tasks over the same sentences: name -> answer words for label 0 / 1; a document's task is drawn
# uniformly, so that without lines before it a model cannot know which task an "Input: ... Output:" line asks
IO_TASKS = {"sentiment": VERDICTS, "negation": ("no", "yes"), "person": ("thing", "person")}
# the few-shot corpus (`lmforge lab fewshot` and the quickstart's GPT): 70% demonstrations, 3/7 review runs, 3/7 io
# runs, 1/7 Q: / A: stories. At a 30% review share a 0.8M-parameter GPT never learnt the verdict in 1200 steps
# (zero-shot 0.555 on 200 dev sentences); with 52% reviews it reached 0.675, with 30% reviews + 30% io 0.675 too
FEWSHOT_SHARE, FEWSHOT_KINDS = 0.7, ("review", "review", "review", "io", "io", "io", "qa")


def review_line(sentence: str, label: int) -> str:
    """One demonstration: the toy sentiment task's sentence and its verdict (the lab's prompt format, one line)."""
    return f"Review: {sentence} Sentiment: {VERDICTS[label]}."


def summary_of(story: Story) -> str:
    """The reference summary: the story's event (without "One day,") and its consequence."""
    if story.event is None:
        raise DataError("this story has no event to summarise")
    ev, cons = story.event
    text = ev.text.removeprefix("One day, ")
    return f"{text[:1].upper()}{text[1:]} {cons.text}"


def review_doc(rng: random.Random) -> str:
    from lmforge.data.toyland.tasks import sst2_sentence

    lines = []
    for _ in range(rng.randint(1, 4)):
        s, label = sst2_sentence(rng)
        lines.append(review_line(s.text, label))
    return " ".join(lines)


def io_answer(task: str, sentence: str, label: int) -> int:
    """The label of ``sentence`` (a toy sentiment sentence with sentiment ``label``) for one of IO_TASKS."""
    words = sentence.rstrip(".").split()
    if task == "sentiment":
        return label
    if task == "negation":
        return int("not" in words or "never" in words)
    if task == "person":  # a toy sentiment sentence about a person starts with the person's name
        from lmforge.data.toyland.lexicon import NAMES

        return int(words[0] in NAMES)
    raise DataError(f"unknown io task {task!r}; known: {', '.join(IO_TASKS)}")


def io_line(task: str, sentence: str, label: int) -> str:
    """One task-neutral demonstration: the sentence and its answer for ``task`` (the lab's few-shot format)."""
    return f"Input: {sentence} Output: {IO_TASKS[task][io_answer(task, sentence, label)]}."


def io_doc(rng: random.Random) -> str:
    from lmforge.data.toyland.tasks import sst2_sentence

    task = rng.choice(list(IO_TASKS))
    lines = []
    for _ in range(rng.randint(2, 6)):
        s, label = sst2_sentence(rng)
        lines.append(io_line(task, s.text, label))
    return " ".join(lines)


def tldr_doc(writer: StoryWriter) -> str:
    story = writer.story()
    return f"{story.text} TL;DR: {summary_of(story)}"


def qa_doc(rng: random.Random, writer: StoryWriter) -> str:
    from lmforge.data.toyland.tasks import QUESTIONS

    story = writer.story()
    facts = [f for f in story.facts if f.attribute in QA_ATTRIBUTES]
    pairs = [f"Q: {QUESTIONS[f.attribute](f.entity)} A: {f.value}." for f in rng.sample(facts, min(len(facts),
                                                                                              rng.randint(1, 3)))]
    return " ".join([story.text, *pairs])


def translation_doc(rng: random.Random, writer: StoryWriter) -> str:
    """1-3 consecutive sentences of a story, each followed by its Toyish translation."""
    from lmforge.data.toyland.toyish import translate

    sentences = writer.story().sentences
    n = rng.randint(1, 3)
    start = rng.randrange(len(sentences) - n + 1)
    return " ".join(f"English: {s.text} Toyish: {translate(s)}" for s in sentences[start:start + n])


# kind -> document writer (the demo-text stream, the demo-stories writer); a kind uses the one it needs
WRITERS = {"review": lambda rng, writer: review_doc(rng), "tldr": lambda rng, writer: tldr_doc(writer),
           "qa": qa_doc, "translation": translation_doc, "io": lambda rng, writer: io_doc(rng)}


def write_demo_corpus(path: Path, *, docs: int, seed: int, share: float,
                      kinds: tuple[str, ...] = DEFAULT_KINDS) -> int:
    """The corpus with about ``share`` of its ``docs`` documents replaced by demonstrations; returns how many."""
    from lmforge.data.toyland.tasks import _rng

    if not 0.0 <= share <= 1.0:
        raise DataError(f"--demonstrations must be a share between 0 and 1, got {share}")
    unknown = set(kinds) - set(KINDS)
    if not kinds or unknown:
        raise DataError(f"demonstration kinds must be among {', '.join(KINDS)}, got {', '.join(kinds) or 'none'}")
    stories = StoryWriter(_rng(seed, "corpus"))  # the same stream (and so the same stories) as write_corpus
    pick, rng = _rng(seed, "demos"), _rng(seed, "demo-text")
    writer = StoryWriter(_rng(seed, "demo-stories"))
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(docs):
            if pick.random() < share:
                kind = pick.choice(kinds)
                n += 1
                text = WRITERS[kind](rng, writer)
            else:
                text = stories.story().text
            f.write(text + "\n")
    return n


def generate_with_demonstrations(out: str | Path, *, docs: int = 8000, examples: int = 1000, seed: int = 0,
                                 share: float = 0.1, kinds: tuple[str, ...] = DEFAULT_KINDS) -> int:
    """``toyland.generate`` (the same tasks) with a corpus of which about ``share`` are demonstrations; returns
    how many demonstration documents it holds (also in toyland.json)."""
    from lmforge.data.toyland.tasks import generate

    generate(out, docs=1, examples=examples, seed=seed)  # the tasks, checks and manifest; the corpus comes next
    out = Path(out)
    n = write_demo_corpus(out / "corpus" / "train.txt", docs=docs, seed=seed, share=share, kinds=kinds)
    manifest = json.loads((out / "toyland.json").read_text())
    manifest.update(docs=docs, demonstrations={"share": share, "kinds": list(kinds), "documents": n})
    manifest["files"]["corpus/train.txt"]["count"] = docs
    (out / "toyland.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return n
