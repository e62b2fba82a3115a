"""The worker's batching, without HTTP: requests sent together decode together, a finished row leaves
while the others go on, late requests join a running batch, a cancelled row frees its slot, and every row
still gets exactly lmforge.generate's tokens."""
from __future__ import annotations

import threading
import time

import torch

from lmforge.generation import generate
from lmforge.serving.batcher import Batcher, CompletionJob, TextDelta

from .conftest import load


class Collector:
    """Sinks for jobs; remembers every event and the decode step at which each job ended."""

    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher
        self.events: dict[int, list] = {}
        self.ended_at: dict[int, int] = {}
        self.done = threading.Condition()

    def sink(self, i: int):
        self.events[i] = []

        def put(event):
            with self.done:
                self.events[i].append(event)
                if event[0] in ("done", "error"):
                    decoder = self.batcher.decoder
                    self.ended_at[i] = decoder.steps if decoder is not None else 0
                    self.done.notify_all()
        return put

    def wait(self, n: int, seconds: float = 30) -> None:
        with self.done:
            assert self.done.wait_for(lambda: len(self.ended_at) >= n, seconds), self.events

    def tokens(self, i: int) -> list[int]:
        return self.events[i][-1][1]["token_ids"]


def solo(model, tok, prompt: list[int], n: int) -> list[int]:
    return generate(model, torch.tensor([prompt]), max_new_tokens=n, return_prompt=False)[0].tolist()


def test_rows_batch_leave_and_join(gpt_dir):
    model, tok = load(gpt_dir)
    sizes = []
    batcher = Batcher(model, tok, max_batch=8, wait_ms=200, on_step=sizes.append)
    out = Collector(batcher)
    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in
               ("the first prompt", "a second, longer prompt here", "three", "and a fourth one")]
    lengths = [3, 12, 8, 12]
    batcher.start()
    try:
        # sent within the 200 ms window: one prefill, then decoded together
        for i in range(4):
            batcher.submit(CompletionJob(sink=out.sink(i), prompt=prompts[i], max_new=lengths[i]))
        while not batcher.decoder or batcher.decoder.steps < 4:
            time.sleep(0.001)
        # a late request joins the running batch
        late = tok("late", add_special_tokens=False)["input_ids"]
        batcher.submit(CompletionJob(sink=out.sink(4), prompt=late, max_new=6))
        out.wait(5)
    finally:
        batcher.stop()
    assert sizes[0] == 4  # the four decoded together from the first step
    # the 3-token request left after 2 steps (its first token came from the prefill) while the rest went on
    assert out.ended_at[0] == 2 and max(out.ended_at.values()) > 2
    assert sizes[2] == 3 and 4 in sizes[4:7]  # the late one joined the three still running
    for i in range(4):
        assert out.tokens(i) == solo(model, tok, prompts[i], lengths[i])
    assert out.tokens(4) == solo(model, tok, late, 6)
    streamed = "".join(e[1]["text"] for e in out.events[1] if e[0] == "token")
    assert streamed == out.events[1][-1][1]["text"] == tok.decode(out.tokens(1))


def test_cancelled_row_frees_its_slot(gpt_dir):
    model, tok = load(gpt_dir)
    batcher = Batcher(model, tok, max_batch=4, wait_ms=0)
    out = Collector(batcher)
    prompt = tok("hello", add_special_tokens=False)["input_ids"]
    jobs = [CompletionJob(sink=out.sink(i), prompt=prompt, max_new=50) for i in range(2)]
    batcher.start()
    try:
        for job in jobs:
            batcher.submit(job)
        while not out.events[0] or not out.events[1]:
            time.sleep(0.001)
        jobs[0].cancel()
        out.wait(2)
    finally:
        batcher.stop()
    assert out.events[0][-1] == ("error", "cancelled")
    assert out.ended_at[0] < out.ended_at[1]
    assert out.tokens(1) == solo(model, tok, prompt, 50)


def test_text_delta_holds_back_split_characters_and_stop_strings(gpt2_tok):
    tok = gpt2_tok
    ids = tok("naïve café ☃ end", add_special_tokens=False)["input_ids"]
    delta = TextDelta(tok, stop=[" end"], eos=tok.eos_token_id)
    sent = []
    for n in range(1, len(ids) + 1):
        text, hit = delta.delta(ids[:n], final=n == len(ids))
        assert "\ufffd" not in text  # a byte-level token that splits a character waits for the rest
        sent.append(text)
        if hit:
            break
    assert hit and "".join(sent) == "naïve café ☃"
