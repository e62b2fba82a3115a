"""The worker behind `lmforge serve`: one thread owns the model, requests queue up and run in dynamic batches.

Why a thread: a PyTorch forward blocks whatever thread calls it, so running it on the event loop would
serialise every request and stall ``/health``; the worker runs the model (torch ops release the GIL) while
the event loop keeps answering. Results go back through ``Job.sink`` (the app wraps
``loop.call_soon_threadsafe``).

Completions decode with continuous batching (Orca, Yu et al. OSDI 2022: scheduling per iteration, not per
request). The running batch keeps one KV cache (``lmforge.nn.attention.KVCache``, (slots, heads, capacity,
head size) per layer) in which every row's tokens end at the same column ``t``: a row's cache is
right-aligned, its first columns masked out, exactly like a left-padded prompt in ``generate``. Then:

- one decode step feeds every row's last token at column ``t`` (its own position id, the key mask says
  which columns are its own) and samples each row with its own settings and its own seeded generator;
- a row that ends (eos, stop string, max_tokens, client gone, timeout) leaves at once: its slot is freed
  and its stream closed, the others go on; once a quarter of the slots are free the cache is compacted;
- requests that arrive while a batch runs are prefilled together (one left-padded forward, which also
  gives their first token) and join at the next step: into free slots when their prompts fit left of
  ``t``, else the cache is rebuilt around the live columns (``max live length + max tokens still to
  make`` wide, so memory follows the live rows, not the history).

When idle, the first request waits ``wait_ms`` for others (the batching window); while a batch runs a
step is the window. Embeddings, fill-mask and classification requests run between decode steps, those
that arrived together as one padded forward. Beam search (an lmforge extension field) runs ``generate``
alone between steps. A row alone in the batch computes what ``lmforge.generate`` computes for it (same
step code, same logits processors, same seeded generator), so a seeded completion returns generate's
tokens.
"""
from __future__ import annotations

import contextlib
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lmforge.errors import ConfigError, LmforgeError
from lmforge.generation import EagerStep, can_pack, generate, lm_field, lm_weight, process_logits
from lmforge.generation.static import BatchStep
from lmforge.generation.inputs import positions as mask_positions
from lmforge.nn.attention import KVCache
from lmforge.prompting.templates import cut_at_stop

Sink = Callable[[tuple[str, Any]], None]


@dataclass
class Job:
    """One request for the worker. ``sink`` receives ("token", dict) events (completions), then one
    ("done", result) or ("error", LmforgeError / message). ``cancel()`` (client gone) frees its slot at the
    next step; ``deadline`` (time.monotonic) ends it with a timeout."""

    sink: Sink
    deadline: float = math.inf
    created: float = field(default_factory=time.monotonic)
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True

    def expired(self, now: float) -> bool:
        return now > self.deadline


@dataclass
class CompletionJob(Job):
    """One completion choice: a prompt (token ids, no specials) and its decoding settings."""

    prompt: list[int] = field(default_factory=list)
    max_new: int = 16
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    num_beams: int = 1  # > 1: beam search through generate(), alone, no streaming


@dataclass
class EncodeJob(Job):
    """Embeddings / fill-mask / classification of token-id rows; ``run(rows_of_jobs)`` -> one result each."""

    kind: str = "embed"
    rows: list[Any] = field(default_factory=list)
    options: tuple = ()  # jobs batch together only with equal options (pooling, k ...)


class TextDelta:
    """The new text a row's latest token adds, as ``generation.TextStreamer`` shows it: text ending in an
    incomplete character (U+FFFD from a byte-level BPE token that splits it) is held back, and nothing from
    a stop string on is ever sent."""

    def __init__(self, tokenizer: Any, stop: Sequence[str], eos: int | None) -> None:
        self.tokenizer = tokenizer
        self.stop = list(stop)
        self.eos = eos
        self.shown = 0

    def text(self, tokens: list[int]) -> str:
        if tokens and tokens[-1] == self.eos:
            tokens = tokens[:-1]
        return self.tokenizer.decode(tokens)

    def delta(self, tokens: list[int], final: bool) -> tuple[str, bool]:
        """(text not sent yet, hit a stop string)."""
        text = self.text(tokens)
        cut = cut_at_stop(text, self.stop)
        hit = len(cut) < len(text)
        if cut.endswith("\ufffd") and not (final or hit):
            return "", False
        new = cut[self.shown:]
        self.shown = max(self.shown, len(cut))
        return new, hit


class Row:
    """A completion being decoded: its job, generator, tokens so far and text state."""

    def __init__(self, job: CompletionJob, tokenizer: Any, eos: int | None, device: torch.device | str = "cpu") -> None:
        self.job = job
        self.device = device
        self.tokens: list[int] = []
        self.generator = None
        if job.do_sample:  # on the logits' device, as generate() makes it
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(job.seed if job.seed is not None else int(torch.randint(2**62, ()).item()))
        self.plain = not job.do_sample and job.repetition_penalty == 1.0  # a batched argmax serves it
        self.texts = TextDelta(tokenizer, job.stop, eos)
        self.eos = eos

    @property
    def remaining(self) -> int:
        return self.job.max_new - len(self.tokens)

    @property
    def live(self) -> int:
        """Cache columns this row fills once its latest token is written."""
        return len(self.job.prompt) + len(self.tokens) - 1

    def pick(self, logits: torch.Tensor) -> int:
        """The next token from this row's logits (1, V), as ``generate``'s decode loop picks it."""
        j = self.job
        seen = torch.tensor([j.prompt + self.tokens], dtype=torch.long, device=logits.device)
        step = process_logits(logits, seen, do_sample=j.do_sample, temperature=j.temperature, top_k=j.top_k,
                              top_p=j.top_p, repetition_penalty=j.repetition_penalty)
        if j.do_sample:
            return int(torch.multinomial(step.softmax(dim=-1), 1, generator=self.generator))
        return int(step.argmax(dim=-1))

    def add(self, token: int) -> str | None:
        """Record ``token``, send its text, return why the row ends (None: it goes on)."""
        self.tokens.append(token)
        reason = None
        if token == self.eos:
            reason = "stop"
        elif self.remaining <= 0:
            reason = "length"
        delta, hit = self.texts.delta(self.tokens, final=reason is not None)
        if hit:
            reason = "stop"
        if delta:
            self.job.sink(("token", {"text": delta, "token_id": token}))
        return reason

    def finish(self, reason: str) -> None:
        text = cut_at_stop(self.texts.text(self.tokens), self.job.stop)
        self.job.sink(("done", {"text": text, "token_ids": list(self.tokens), "finish_reason": reason,
                                "prompt_tokens": len(self.job.prompt), "completion_tokens": len(self.tokens)}))


@dataclass
class Joining:
    """Prefilled rows waiting to join the running batch: their cache (width columns, left-padded), key mask
    (n, width), next position ids (n,) and ``index``, which rows of those go on (the rest ended at once)."""

    rows: list[Row]
    cache: KVCache
    mask: torch.Tensor
    pos: torch.Tensor
    index: torch.Tensor
    width: int


def _place(dst: KVCache, dst_mask: torch.Tensor, rows: slice, end: int, src: KVCache, src_mask: torch.Tensor,
           index: torch.Tensor, src_end: int, cols: int) -> None:
    """Copy rows ``index`` of ``src``'s columns [src_end - cols, src_end) into rows ``rows`` of ``dst``'s
    columns [end - cols, end), K, V and key mask (slice first: only those columns are copied)."""
    for layer in range(len(dst.keys)):
        dst.keys[layer][rows, :, end - cols:end] = src.keys[layer][:, :, src_end - cols:src_end].index_select(0, index)
        dst.values[layer][rows, :, end - cols:end] = \
            src.values[layer][:, :, src_end - cols:src_end].index_select(0, index)
    dst_mask[rows, end - cols:end] = src_mask[:, src_end - cols:src_end].index_select(0, index)


class DecodeBatch:
    """The running completions: slots of rows (None = free) over one right-aligned KV cache."""

    def __init__(self, model: Any, tokenizer: Any, *, eos: int | None, pad: int, compile: bool | str = False) -> None:
        """``compile``: False, "auto" (True) or "all", see ``compiled_rows``."""
        self.model = model
        self.tokenizer = tokenizer
        self.eos = eos
        self.pad = pad
        self.field = lm_field(model)
        self.pack = can_pack(model)
        # compile: decode steps through the compiled step (generation.static.BatchStep), which traces the
        # layers' own forward: the packed GEMMs' patches are lifted around each compiled call (self._unpacked)
        self.compiled = BatchStep(model, lm_weight(model)) if compile else None
        # "auto": the compiled step where it was measured to win (docs/serving.md, --compile): one row on a CPU
        # float32 model (Inductor's fused GEMV beats MKL's), every row count elsewhere; at several rows on
        # such a CPU oneDNN's packed GEMM in the eager step is faster than Inductor's (GPT-2 small, 8 rows: 2x)
        self.compiled_rows = 1 if compile in (True, "auto") and self.pack else None  # None: every row count
        # decode steps through the packed GEMMs generate uses (generation.step.PackedLinear), made once
        self.step_fn = EagerStep(model, self.field, rows=2, pack=self.pack)
        self.rows: list[Row | None] = []
        self.cache: KVCache | None = None
        self.mask = self.pos = self.last = torch.zeros(0)
        self.steps = 0
        self.rebuilds = 0

    @property
    def active(self) -> int:
        return sum(r is not None for r in self.rows)

    # ------------------------------------------------------------------ joining
    def admit(self, jobs: list[CompletionJob]) -> None:
        """Prefill ``jobs`` together (their first token comes out here) and add the rows that go on."""
        rows = [Row(j, self.tokenizer, self.eos, self._device()) for j in jobs]
        width = max(len(j.prompt) for j in jobs)
        ids = torch.full((len(jobs), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.bool)
        for i, j in enumerate(jobs):
            ids[i, width - len(j.prompt):] = torch.tensor(j.prompt, dtype=torch.long)
            mask[i, width - len(j.prompt):] = True
        padded = not bool(mask.all())
        pos = mask_positions(mask) if padded else None
        cache = self.step_fn.new_cache(batch=len(jobs), capacity=width)
        device = self._device()
        logits, cache = self.step_fn(ids.to(device), mask.to(device) if padded else None,
                                     pos.to(device) if pos is not None else None, cache)
        going = self._advance(rows, logits.float())
        if not going:
            return
        next_pos = (pos[:, -1] + 1) if pos is not None else \
            torch.full((len(jobs),), width + self.model.config.position_offset, dtype=torch.long)
        self._join(Joining([rows[i] for i in going], cache, mask.to(device), next_pos.to(device),
                           torch.tensor(going, dtype=torch.long, device=device), width))

    @contextlib.contextmanager
    def _unpacked(self) -> Iterator[None]:
        """The layers' own forward for the compiled step (traced and guarded without the packed GEMMs'
        patches), the patches back after it: instance-dict swaps, microseconds, no copies."""
        lifted = [(m, m.__dict__.pop("forward")) for m, _ in self.step_fn.patched if "forward" in m.__dict__]
        try:
            yield
        finally:
            for module, forward in lifted:
                module.__dict__["forward"] = forward

    def _join(self, new: Joining) -> None:
        free = [i for i, r in enumerate(self.rows) if r is None]
        t = self.cache.length if self.cache is not None else 0
        if (self.cache is not None and len(free) >= len(new.rows) and new.width <= t
                and t + max(r.remaining for r in new.rows) <= self.cache.capacity):
            # into free slots, right-aligned at column t: only the new rows' columns are copied
            for n, slot in enumerate(free[:len(new.rows)]):
                row = int(new.index[n])
                for layer in range(len(self.cache.keys)):
                    self.cache.keys[layer][slot, :, t - new.width:t] = new.cache.keys[layer][row]
                    self.cache.values[layer][slot, :, t - new.width:t] = new.cache.values[layer][row]
                self.mask[slot] = False
                self.mask[slot, t - new.width:t] = new.mask[row]
                self.pos[slot] = new.pos[row]
                self.last[slot] = new.rows[n].tokens[-1]
                self.rows[slot] = new.rows[n]
            return
        self._rebuild(new)

    def _rebuild(self, new: Joining | None = None) -> None:
        """A fresh cache with the live rows (and ``new``'s), every row right-aligned at column ``live`` = the
        longest row, ``live + most tokens still to make`` wide: memory follows the live rows."""
        old = [(i, r) for i, r in enumerate(self.rows) if r is not None]
        rows = [r for _, r in old] + (new.rows if new is not None else [])
        live = max([r.live for _, r in old] + ([new.width] if new is not None else []))
        capacity = live + max(r.remaining for r in rows)
        device = self._device()
        cache = self._allocate(len(rows), capacity)
        mask = torch.zeros((len(rows), capacity), dtype=torch.bool, device=device)
        pos = []
        if old:
            keep = torch.tensor([i for i, _ in old], dtype=torch.long, device=device)
            t = self.cache.length
            _place(cache, mask, slice(0, len(old)), live, self.cache, self.mask, keep, t, min(t, live))
            pos.append(self.pos.index_select(0, keep))
        if new is not None:
            _place(cache, mask, slice(len(old), len(rows)), live, new.cache, new.mask, new.index, new.width, new.width)
            pos.append(new.pos.index_select(0, new.index))
        cache.length = live
        self.cache, self.mask, self.pos = cache, mask, torch.cat(pos)
        self.last = torch.tensor([r.tokens[-1] for r in rows], dtype=torch.long, device=device)
        self.rows = rows
        self.rebuilds += 1

    def _allocate(self, batch: int, capacity: int) -> KVCache:
        cache = KVCache.for_model(self.model.body, batch=batch, capacity=capacity)
        for t in (*cache.keys, *cache.values):
            t.zero_()  # masked columns get probability 0, but 0 x NaN from uninitialised memory would not
        return cache

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ decoding
    def step(self) -> None:
        """One token for every row; rows that end leave."""
        t = self.cache.length
        self.mask[:, t] = True
        ids = self.last[:, None]
        logits = None
        if self.compiled is not None and self.compiled.active and (
                self.compiled_rows is None or len(self.rows) <= self.compiled_rows):
            # the whole cache width under the key mask (the columns right of t are zeros, masked out)
            with self._unpacked():
                logits = self.compiled(ids, self.pos[:, None], self.mask, t, self.cache)
            if logits is not None:  # None: torch refused to compile (logged once), eager from now on
                self.cache.advance(1)
        if logits is None:
            logits, _ = self.step_fn(ids, self.mask[:, :t + 1], self.pos[:, None], self.cache)
        self.pos += 1
        self.steps += 1
        slots = [i for i, r in enumerate(self.rows) if r is not None]
        going = self._advance([self.rows[i] for i in slots], logits[slots].float(), slots=slots)
        for i in set(slots) - set(going):
            self.rows[i] = None
        for i, row in enumerate(self.rows):
            if row is None:  # a free slot keeps position 0 (its output is never read)
                self.mask[i] = False
                self.pos[i] = 0
            else:
                self.last[i] = row.tokens[-1]
        self._compact()

    def _advance(self, rows: list[Row], logits: torch.Tensor, slots: list[int] | None = None) -> list[int]:
        """Pick each row's token from ``logits`` (len(rows), V); returns the slots (or indices) that go on."""
        picks: list[int | None] = [None] * len(rows)
        plain = [i for i, r in enumerate(rows) if r.plain]
        if plain:
            for i, tok in zip(plain, logits[plain].argmax(dim=-1).tolist(), strict=True):
                picks[i] = tok
        for i, r in enumerate(rows):
            if picks[i] is None:
                picks[i] = r.pick(logits[i:i + 1])
        going = []
        for i, (r, tok) in enumerate(zip(rows, picks, strict=True)):
            reason = r.add(int(tok))
            if reason is None:
                going.append(slots[i] if slots is not None else i)
            else:
                r.finish(reason)
        return going

    def drop(self, slot: int, reason: str) -> None:
        """End a row from outside the step (client gone, timeout)."""
        row = self.rows[slot]
        if row is not None:
            row.job.sink(("error", reason))
            self.rows[slot] = None
            self.mask[slot] = False
            self.pos[slot] = 0

    def _compact(self) -> None:
        free = sum(r is None for r in self.rows)
        if not self.rows or free == 0:
            return
        if free == len(self.rows):
            self.rows, self.cache = [], None
            return
        if 4 * free >= len(self.rows):
            self._rebuild()


class Batcher:
    """The worker thread and its queue. ``submit(job)`` from any thread; ``start()`` / ``stop()``."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch: int = 16, wait_ms: float = 5.0,
                 encode: dict[str, Callable[..., list[Any]]] | None = None,
                 on_step: Callable[[int], None] | None = None, compile: bool | str = False) -> None:
        """``compile`` ("auto" = True, or "all"): decode through the compiled step (``generation.static.BatchStep``;
        "auto" where it is faster, see ``DecodeBatch.compiled_rows``), compiled here for the row counts it will
        serve (``warmup_seconds``) before any request comes."""
        if compile not in (False, True, "auto", "all"):
            raise ConfigError(f"compile must be False, True / 'auto' or 'all', got {compile!r}.",
                              cli=f"--compile takes auto (the default) or all, got {compile!r}.")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.wait = wait_ms / 1000.0
        self.encode = encode or {}
        self.on_step = on_step  # metrics: called with the batch's row count after each decode step
        eos = model.config.eos_token_id if model.config.eos_token_id is not None else tokenizer.eos_token_id
        self.eos = eos
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
        self.decoder: DecodeBatch | None = None
        self.inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.waiting: list[CompletionJob] = []
        self.encodes: list[EncodeJob] = []
        self.beams: list[CompletionJob] = []
        self.thread = threading.Thread(target=self._run, name="lmforge-serve-worker", daemon=True)
        self.compile = compile
        self.warmup_seconds = 0.0
        # OpenMP's thread count is per thread: the worker takes this thread's, the one the warm-up compiles
        # under (a compiled step guards on it, so a different count would recompile on the first request)
        self.threads = torch.get_num_threads()
        if compile:
            self.decoder = self._new_decoder()
            self.warmup_seconds = self._warm_up(self.decoder)
        self.stopping = False
        self.error: BaseException | None = None

    def _new_decoder(self) -> DecodeBatch:
        try:
            return DecodeBatch(self.model, self.tokenizer, eos=self.eos, pad=self.pad, compile=self.compile)
        except LmforgeError as err:
            if not self.compile:
                raise
            raise ConfigError(f"--compile compiles the completions' decode step, which needs a lmforge decoder "
                              f"with float weights ({err}); serve this model without --compile.") from None

    def _warm_up(self, decoder: DecodeBatch) -> float:
        """Compile the step before the first request (one row, several rows); ConfigError when it cannot."""
        try:
            with decoder._unpacked():
                return decoder.compiled.warm_up(decoder._allocate, several=decoder.compiled_rows != 1)
        except Exception as err:  # noqa: BLE001 - any compiler failure: one message, what to do
            raise ConfigError(f"--compile could not compile the decode step ({type(err).__name__}: "
                              f"{str(err).strip()[:300]}); serve without --compile (torch.compile's Inductor "
                              "needs a working C++ compiler on CPU).") from None

    # ------------------------------------------------------------------ from other threads
    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.stopping = True
        self.inbox.put(None)
        self.thread.join(timeout)
        if self.decoder is not None and not self.thread.is_alive():
            self.decoder.step_fn.close()  # the model's layers get their own forward back

    def submit(self, job: Job) -> None:
        self.inbox.put(job)

    def depth(self) -> int:
        """Requests waiting for the worker (not yet in a batch)."""
        return self.inbox.qsize() + len(self.waiting) + len(self.encodes) + len(self.beams)

    def running(self) -> int:
        return self.decoder.active if self.decoder is not None else 0

    # ------------------------------------------------------------------ the worker
    def _take(self, block: bool) -> bool:
        """Move jobs from the inbox into the work lists; False once stop() was called."""
        try:
            job = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
        except queue.Empty:
            return not self.stopping
        while True:
            if job is None:
                return False
            if isinstance(job, EncodeJob):
                self.encodes.append(job)
            elif isinstance(job, CompletionJob) and job.num_beams > 1:
                self.beams.append(job)
            else:
                self.waiting.append(job)
            try:
                job = self.inbox.get_nowait()
            except queue.Empty:
                return True

    def _busy(self) -> bool:
        return bool(self.waiting or self.encodes or self.beams or self.running())

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        torch.set_num_threads(self.threads)
        alive = True
        while alive or self._busy():
            try:
                if not self._busy():
                    alive = self._take(block=True) and alive
                    if self._busy():  # the batching window: let requests sent together arrive together
                        end = time.monotonic() + self.wait
                        while alive and time.monotonic() < end and len(self.waiting) < self.max_batch:
                            time.sleep(min(0.001, max(0.0, end - time.monotonic())))
                            alive = self._take(block=False) and alive
                else:
                    alive = self._take(block=False) and alive
                self._work()
            except BaseException as err:  # noqa: BLE001 - a bug must not leave clients waiting forever
                self.error = err
                self._fail_all(err)

    def _work(self) -> None:
        now = time.monotonic()
        self._expire(now)
        if self.encodes:
            self._run_encodes()
        if self.beams:
            self._run_beam(self.beams.pop(0))
        if self.waiting:
            running = self.running()
            room = self.max_batch - running
            if room > 0:
                jobs, self.waiting = self.waiting[:room], self.waiting[room:]
                if self.decoder is None:
                    self.decoder = self._new_decoder()
                self.decoder.admit(jobs)
        if self.decoder is not None and self.decoder.active:
            rows = self.decoder.active
            self.decoder.step()
            if self.on_step is not None:
                self.on_step(rows)

    def _expire(self, now: float) -> None:
        """Drop waiting or running work whose client left or whose time ran out."""
        for pending in (self.waiting, self.encodes, self.beams):
            for job in list(pending):
                if job.cancelled or job.expired(now):
                    pending.remove(job)
                    job.sink(("error", "cancelled" if job.cancelled else "timeout"))
        if self.decoder is not None:
            for slot, row in enumerate(self.decoder.rows):
                if row is not None and (row.job.cancelled or row.job.expired(now)):
                    self.decoder.drop(slot, "cancelled" if row.job.cancelled else "timeout")
            self.decoder._compact()

    def _run_encodes(self) -> None:
        """Every encode job that waits, grouped by kind and options, max_batch rows per forward."""
        groups: dict[tuple, list[EncodeJob]] = {}
        for job in self.encodes:
            groups.setdefault((job.kind, job.options), []).append(job)
        self.encodes = []
        for (kind, options), jobs in groups.items():
            batch: list[EncodeJob] = []
            for job in jobs:
                if batch and sum(len(j.rows) for j in batch) + len(job.rows) > self.max_batch:
                    self._encode_batch(kind, options, batch)
                    batch = []
                batch.append(job)
            self._encode_batch(kind, options, batch)

    def _encode_batch(self, kind: str, options: tuple, jobs: list[EncodeJob]) -> None:
        rows = [r for j in jobs for r in j.rows]
        try:
            results = self.encode[kind](rows, *options)
        except LmforgeError as err:
            for j in jobs:
                j.sink(("error", err))
            return
        at = 0
        for j in jobs:
            j.sink(("done", results[at:at + len(j.rows)]))
            at += len(j.rows)

    def _run_beam(self, job: CompletionJob) -> None:
        ids = torch.tensor([job.prompt], dtype=torch.long)
        try:
            out = generate(self.model, ids, max_new_tokens=job.max_new, num_beams=job.num_beams,
                           repetition_penalty=job.repetition_penalty, eos_token_id=self.eos, pad_token_id=self.pad,
                           return_scores=True)
        except LmforgeError as err:
            job.sink(("error", err))
            return
        tokens = out.tokens[0].tolist()
        reason = "stop" if out.stopped[0] == "eos" else "length"
        if reason == "stop":
            tokens = tokens[:tokens.index(self.eos) + 1] if self.eos in tokens else tokens
        row = Row(job, self.tokenizer, self.eos)
        row.tokens = tokens
        row.finish(reason)

    def _fail_all(self, err: BaseException) -> None:
        message = f"internal error in the model worker: {type(err).__name__}: {err}"
        for pending in (self.waiting, self.encodes, self.beams):
            for job in pending:
                job.sink(("error", message))
            pending.clear()
        if self.decoder is not None:
            for slot in range(len(self.decoder.rows)):
                self.decoder.drop(slot, message)
            self.decoder = None


__all__ = ["Batcher", "CompletionJob", "DecodeBatch", "EncodeJob", "Job", "Joining", "Row", "TextDelta"]
