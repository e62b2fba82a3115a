"""Toyland's natural demonstrations (demos.py): opt-in, the stories around them unchanged, each kind well formed."""
from __future__ import annotations

import json
import random
import re

import pytest

from lmforge.data import toyland
from lmforge.data.toyland.demos import VERDICTS, summary_of, write_demo_corpus
from lmforge.data.toyland.tasks import write_corpus
from lmforge.errors import DataError


def test_generate_with_demonstrations_keeps_the_tasks(tmp_path):
    from lmforge.data.toyland.demos import generate_with_demonstrations

    toyland.generate(tmp_path / "a", docs=30, examples=8, seed=1)
    n = generate_with_demonstrations(tmp_path / "b", docs=30, examples=8, seed=1, share=0.5)
    assert (tmp_path / "a/sst2/dev.tsv").read_bytes() == (tmp_path / "b/sst2/dev.tsv").read_bytes()
    assert "Review:" not in (tmp_path / "a/corpus/train.txt").read_text()  # the default corpus has none
    lines = (tmp_path / "b/corpus/train.txt").read_text().splitlines()
    assert len(lines) == 30 and sum(("Review:" in d or "TL;DR:" in d or " Q: " in d) for d in lines) == n > 0
    manifest = json.loads((tmp_path / "b/toyland.json").read_text())
    assert manifest["docs"] == 30 and manifest["demonstrations"]["documents"] == n


def test_stories_keep_their_order_and_text(tmp_path):
    write_corpus(tmp_path / "plain.txt", docs=200, seed=2)
    n = write_demo_corpus(tmp_path / "demo.txt", docs=200, seed=2, share=0.2)
    plain = (tmp_path / "plain.txt").read_text().splitlines()
    demo = (tmp_path / "demo.txt").read_text().splitlines()
    assert len(demo) == 200 and 20 <= n <= 60  # about a fifth (binomial, seeded)
    stories = [d for d in demo if not any(m in d for m in ("Review:", "TL;DR:", " Q: "))]
    assert len(stories) == 200 - n and stories == plain[:200 - n]  # the same story stream, demos interleaved


def test_each_kind_is_well_formed(tmp_path):
    write_demo_corpus(tmp_path / "c.txt", docs=300, seed=0, share=1.0)
    docs = (tmp_path / "c.txt").read_text().splitlines()
    reviews = [d for d in docs if d.startswith("Review:")]
    tldr = [d for d in docs if "TL;DR:" in d]
    qa = [d for d in docs if " Q: " in d]
    assert reviews and tldr and qa and len(reviews) + len(tldr) + len(qa) == 300
    for d in reviews:  # every review ends with a verdict word
        parts = re.findall(r"Review: (.+?) Sentiment: (\w+)\.", d)
        assert parts and all(v in VERDICTS for _, v in parts) and d.count("Review:") == len(parts)
    for d in tldr:  # the summary's sentences are sentences of the story
        story, summary = d.split(" TL;DR: ")
        first, second = re.findall(r"[^.]+\.", summary)
        assert first.strip().lower() in story.lower() and second.strip() in story
    for d in qa:  # every answer is stated in the story
        story = d.split(" Q: ")[0]
        for answer in re.findall(r"A: (.+?)\.", d):
            assert answer in story


def test_summary_is_the_event_and_its_consequence():
    story = toyland.StoryWriter(random.Random(5)).story()
    ev, cons = story.event
    summary = summary_of(story)
    assert summary.endswith(cons.text) and not summary.startswith("One day")
    assert summary[:-len(cons.text)].strip().lower() == ev.text.removeprefix("One day, ").lower()


def test_bad_share_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="between 0 and 1"):
        write_demo_corpus(tmp_path / "c.txt", docs=5, seed=0, share=1.5)
    with pytest.raises(DataError, match="kinds"):
        write_demo_corpus(tmp_path / "c.txt", docs=5, seed=0, share=0.5, kinds=("poems",))


def test_io_documents_answer_one_task_and_the_answers_are_right(tmp_path):
    # the task-neutral kind: every line of a document answers the same task; the answers follow the sentence
    from lmforge.data.toyland.demos import IO_TASKS, KINDS, WRITERS, io_answer
    from lmforge.data.toyland.lexicon import NAMES
    from lmforge.data.toyland.tasks import sst2_sentence

    assert set(WRITERS) == set(KINDS)  # every kind has a writer
    write_demo_corpus(tmp_path / "io.txt", docs=300, seed=0, share=1.0, kinds=("io",))
    docs = (tmp_path / "io.txt").read_text().splitlines()
    tasks_seen = set()
    for d in docs:
        lines = re.findall(r"Input: (.+?) Output: (\w+)\.", d)
        assert 2 <= len(lines) <= 6 and d.count("Input:") == len(lines)
        task, = {t for t, words in IO_TASKS.items() if all(a in words for _, a in lines)} or {None}
        assert task is not None, d  # no two tasks share an answer word, so each document names exactly one
        tasks_seen.add(task)
    assert tasks_seen == set(IO_TASKS)
    rng = random.Random(3)
    for _ in range(300):  # negation and person read off the words; sentiment is the task's own label
        s, label = sst2_sentence(rng)
        words = s.text.rstrip(".").split()
        assert io_answer("sentiment", s.text, label) == label
        assert io_answer("negation", s.text, label) == int("not" in words or "never" in words)
        assert io_answer("person", s.text, label) == int(s.tokens[0].upos == "PROPN")
        assert io_answer("person", s.text, label) == int(words[0] in NAMES)
    with pytest.raises(DataError, match="unknown io task"):
        io_answer("colour", "It is a red day.", 1)
