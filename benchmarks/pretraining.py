"""Pre-training throughput: lmforge vs HF transformers, same architecture, same batch, same machine, same run.

    python benchmarks/pretraining.py [--steps 12] [--warmup 2] [--threads 2] [--only mlm|clm]
                                     [--device cpu|cuda] [--size mini|base] [--precision fp32|bf16]
                                     [--batch 32] [--seq 128] [--compile] [--wrap none|ddp|fsdp]
                                     [--refdata DIR]

Two workloads (the issue's): a bert-mini shaped MLM (L4 / H256 / A4, vocab 30,522, seq 128, batch 32)
and a GPT-2 of the same shape doing CLM (vocab 50,257). Both sides run one full training step per
batch (make the batch, forward, backward, clip to 1.0, fused AdamW, zero_grad) on tiny-shakespeare,
fp32, dropout 0.1 as in the published configs, the same seed (0) for weights and data order:

* lmforge: the `mlm` / `clm` objective's own batches (``BatchSource``), ``objective.loss(model, batch)``
  -- exactly what ``Trainer`` does per step.
* HF: ``BertForMaskedLM`` / ``GPT2LMHeadModel`` with ``attn_implementation="sdpa"``, batches from HF's
  ``DataCollatorForLanguageModeling`` (mlm_probability 0.15 / mlm=False), ``model(**batch).loss``.

Each (library, workload) lives in its own subprocess (so its peak resident memory, ru_maxrss, is its own)
with ``torch.set_num_threads(--threads)``. After ``--warmup`` untimed steps each, the two processes of a
workload take turns one step at a time (HF, lmforge, lmforge, HF, ...: the order flips every round), so
a change in the load of a shared machine hits both sides; the table gives the median step of each side.
Tokens/s counts batch x seq_len per step for both.

GPU rows (``--device cuda``): the same steps on the GPU, ``--size base`` for the bert-base / GPT-2 small
shapes (L12/H768/A12), ``--precision bf16`` for bf16 autocast around forward + loss on both sides (what
lmforge's Trainer does on CUDA by default; HF Trainer's ``bf16=True``), with each step timed after a
device synchronisation. The batch is still built on the host inside the step, for both. MFU = model FLOPs
per second / the GPU's dense peak for the precision (H100 SXM: 989 TFLOP/s bf16, 67 fp32 without tensor
cores; an unknown GPU gets no MFU), with model FLOPs per token = 6 x (non-embedding parameters + the
V x H output product) + 12 x layers x H x seq (attention scores and mixing; Kaplan et al. 2020 / PaLM's count).

``--seq`` sets the sequence length (GPT-2's 1024 for the CLM MFU row), ``--compile`` wraps BOTH sides'
models in ``torch.compile`` (untimed warm-up steps include the compilation), ``--dropout`` sets every
dropout of both models (0 as llm.c trains), ``--lmforge-only`` runs lmforge's side alone (MFU sweeps
without the reference's compile time), ``--profile N`` prints each side's top operators over N more
steps (torch.profiler, device time on a GPU), and ``--wrap ddp|fsdp`` runs
lmforge's side inside a one-process group (nccl on CUDA, gloo on CPU) wrapped in DDP or FSDP2
(``fully_shard`` per block, then the root, as ``lmforge.train.distributed.wrap_model`` does): with one
process this measures what the wrapper costs per step, not scaling.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFDATA = (REPO / ".." / "shared" / "refdata").resolve()  # --refdata replaces it
SEQ = 128
BATCH = 32  # --batch replaces it
SIZES = {"mini": {"layers": 4, "hidden": 256, "heads": 4}, "base": {"layers": 12, "hidden": 768, "heads": 12}}
PEAK_TFLOPS = {"H100": {"bf16": 989.0, "fp32": 67.0}, "H200": {"bf16": 989.0, "fp32": 67.0}}


class Setup:
    """What every process of a run shares (parsed once from the command line)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = args.device
        self.size = args.size
        self.bf16 = args.precision == "bf16"
        self.compile = args.compile
        self.wrap = args.wrap
        self.dropout = args.dropout
        self.profile = args.profile

    def autocast(self):
        import contextlib

        import torch

        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device, dtype=torch.bfloat16)

    def sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()


def _shards(kind: str, root: Path) -> Path:
    """tiny-shakespeare shards for the BERT uncased (mlm) or GPT-2 (clm) vocabulary (cached per run)."""
    sys.path.insert(0, str(REPO / "tests" / "data"))
    import tokfixtures

    from lmforge.data.shards import prepare_shards

    out = root / kind
    if not (out / "meta.json").is_file():
        tok = tokfixtures.bert_tokenizer(REFDATA) if kind == "mlm" else tokfixtures.gpt2_tokenizer(REFDATA)
        prepare_shards([REFDATA / "text" / "tinyshakespeare.txt"], tokenizer=tok, out=out, doc_mode="blank",
                       val_fraction=0.01, progress=False)
    return out


def _lmforge(kind: str, shards: Path, setup: Setup):
    """(step function, model) for lmforge."""
    import torch

    from lmforge import Model, ModelConfig
    from lmforge.data.shards import ShardDataset
    from lmforge.objectives import BatchSource, build_objective
    from lmforge.train.config import TrainConfig
    from lmforge.train.loop import to_device
    from lmforge.train.optim import build_optimizer, param_groups

    ds = ShardDataset(shards, "train")
    tok = ds.load_tokenizer()
    objective = build_objective(kind, tokenizer=tok, seq_len=SEQ)
    preset = {("mlm", "mini"): "bert-mini", ("clm", "mini"): "gpt-mini",  # L4/H256/A4
              ("mlm", "base"): "bert-base", ("clm", "base"): "gpt2"}[(kind, setup.size)]  # L12/H768/A12
    config = ModelConfig.from_preset(preset, vocab_size=30522 if kind == "mlm" else 50257,
                                     head="mlm" if kind == "mlm" else "clm", hidden_dropout=setup.dropout,
                                     attention_dropout=setup.dropout, embedding_dropout=setup.dropout)
    torch.manual_seed(0)
    model = Model(config).to(setup.device)
    model.train()
    cfg = TrainConfig(lr=1e-4)
    wrapped = _wrap(model, setup)
    opt = build_optimizer(param_groups(model.named_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay), cfg)
    model = torch.compile(wrapped) if setup.compile else wrapped
    source = BatchSource(objective, ds, batch_size=BATCH, seed=0)

    def step(i: int) -> float:
        epoch, at = divmod(i, source.steps_per_epoch)  # long sequences x big batches outrun one epoch
        batch = to_device(source.batch(epoch, at), torch.device(setup.device))
        with setup.autocast():
            loss, _ = objective.loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, model


def _wrap(model, setup: Setup):
    """``model`` in a one-process DDP / FSDP2 wrapper (``--wrap``), or itself."""
    if setup.wrap == "none":
        return model
    import torch
    import torch.distributed as dist

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(29500 + os.getpid() % 1000))
    dist.init_process_group("nccl" if setup.device == "cuda" else "gloo", rank=0, world_size=1)
    if setup.wrap == "ddp":
        ids = [torch.cuda.current_device()] if setup.device == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
    from torch.distributed.fsdp import fully_shard

    for layer in model.body.layers:  # as lmforge.train.distributed.wrap_model: one group per block, then the root
        fully_shard(layer)
    fully_shard(model)
    return model


def _hf(kind: str, shards: Path, setup: Setup):
    import numpy as np
    import torch
    from transformers import (BertConfig, BertForMaskedLM, BertTokenizerFast, DataCollatorForLanguageModeling,
                              GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast)

    from lmforge.data.shards import ShardDataset

    ds = ShardDataset(shards, "train")
    torch.manual_seed(0)
    shape = SIZES[setup.size]
    if kind == "mlm":
        tok = BertTokenizerFast(str(REFDATA / "tokenizers/bert-base-uncased/vocab.txt"), do_lower_case=True)
        config = BertConfig(vocab_size=30522, hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
                            num_attention_heads=shape["heads"], intermediate_size=4 * shape["hidden"],
                            hidden_dropout_prob=setup.dropout, attention_probs_dropout_prob=setup.dropout,
                            attn_implementation="sdpa")
        model = BertForMaskedLM(config)
        collator = DataCollatorForLanguageModeling(tok, mlm=True, mlm_probability=0.15, return_tensors="pt")
        body = SEQ - 2  # [CLS] ... [SEP]
    else:
        d = REFDATA / "tokenizers/gpt2"
        tok = GPT2TokenizerFast(str(d / "vocab.json"), str(d / "merges.txt"))
        tok.pad_token = tok.eos_token
        config = GPT2Config(vocab_size=50257, n_embd=shape["hidden"], n_layer=shape["layers"], n_head=shape["heads"],
                            n_inner=4 * shape["hidden"], n_positions=1024, resid_pdrop=setup.dropout,
                            embd_pdrop=setup.dropout, attn_pdrop=setup.dropout, attn_implementation="sdpa")
        model = GPT2LMHeadModel(config)
        collator = DataCollatorForLanguageModeling(tok, mlm=False, return_tensors="pt")
        body = SEQ
    model.to(setup.device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=True)  # HF Trainer's default
    if setup.compile:
        model = torch.compile(model)
    tokens = ds.tokens(0, ds.num_tokens).astype(np.int64)

    def step(i: int) -> float:
        rows = []
        for j in range(BATCH):
            start = ((i * BATCH + j) * body) % (len(tokens) - body)
            ids = tokens[start:start + body].tolist()
            rows.append({"input_ids": [tok.cls_token_id, *ids, tok.sep_token_id] if kind == "mlm" else ids})
        batch = {k: v.to(setup.device, non_blocking=True) for k, v in collator(rows).items()}
        with setup.autocast():
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step, model


def _child(lib: str, kind: str, shards: Path, warmup: int, threads: int, setup: Setup) -> None:
    """Serve timed steps over stdin/stdout: "step" -> the step's seconds; "done" -> params and peak RSS."""
    import torch

    torch.set_num_threads(threads)
    step, model = (_lmforge if lib == "lmforge" else _hf)(kind, shards, setup)
    for i in range(warmup):
        step(i)
    i = warmup
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "done":
            break
        setup.sync()
        t, c = time.perf_counter(), time.process_time()
        step(i)
        setup.sync()
        print(json.dumps({"step_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}), flush=True)
        i += 1
    if setup.profile:  # where a step's device time goes, after the timed steps (stderr)
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if setup.device == "cuda" else [])
        with profile(activities=acts) as prof:
            for _ in range(setup.profile):
                step(i)
                i += 1
            setup.sync()
        key = "self_cuda_time_total" if setup.device == "cuda" else "self_cpu_time_total"
        print(f"--- {lib} profile of {setup.profile} steps, by {key} ---", file=sys.stderr)
        print(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=70), file=sys.stderr)
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if setup.device == "cuda" else 0.0
    dense = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    print(json.dumps({"params": sum(p.numel() for p in model.parameters()), "dense_params": dense, "gpu_peak_mb": gpu_mb,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def _interleaved(kind: str, shards: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, dict]:
    """Both libraries' processes for one workload, stepped in turns; per library: median step, RSS, params."""
    procs = {lib: subprocess.Popen([sys.executable, __file__, "--child", lib, kind, str(shards), "--warmup",
                                    str(args.warmup), "--threads", str(args.threads), "--device", args.device,
                                    "--size", args.size, "--precision", args.precision, "--batch",
                                    str(args.batch), "--seq", str(SEQ), "--wrap", args.wrap,
                                    "--dropout", str(args.dropout), "--profile", str(args.profile),
                                    *(["--compile"] if args.compile else []), "--refdata", str(REFDATA)], env=env, text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for lib in args.libs}

    def reply(lib: str) -> str:
        line = procs[lib].stdout.readline()
        if not line:
            raise RuntimeError(f"the {lib} {kind} benchmark process died (exit {procs[lib].wait()})")
        return line

    for lib in procs:
        assert reply(lib).strip() == "ready"
    times: dict[str, list[float]] = {lib: [] for lib in procs}
    cpu: dict[str, list[float]] = {lib: [] for lib in procs}
    for r in range(args.steps):
        for lib in (args.libs if r % 2 == 0 else args.libs[::-1]):
            procs[lib].stdin.write("step\n")
            procs[lib].stdin.flush()
            rec = json.loads(reply(lib))
            times[lib].append(rec["step_s"])
            cpu[lib].append(rec["cpu_s"])
    results = {}
    for lib, proc in procs.items():
        proc.stdin.write("done\n")
        proc.stdin.flush()
        info = json.loads(reply(lib))
        proc.wait()
        median = statistics.median(times[lib])
        results[lib] = {**info, "step_s": median, "tokens_per_s": BATCH * SEQ / median, "times": times[lib],
                        "cpu_s": statistics.median(cpu[lib])}
        print(f"  {lib:8s} {kind}: steps {' '.join(f'{t:.2f}' for t in times[lib])} s -> median {median:.2f} s, "
              f"{BATCH * SEQ / median:,.0f} tokens/s, peak RSS {info['peak_rss_mb']:,.0f} MB", file=sys.stderr)
    return results


def model_flops_per_token(dense_params: int, kind: str, size: str) -> float:
    """Training FLOPs per token: 6 x (parameters outside the embedding tables + the V x H output product)
    + attention's 12 x L x H x seq (forward + backward of QK^T and PV)."""
    shape = SIZES[size]
    vocab = 30522 if kind == "mlm" else 50257
    return 6 * (dense_params + vocab * shape["hidden"]) + 12 * shape["layers"] * shape["hidden"] * SEQ


def main() -> int:
    global BATCH, REFDATA, SEQ
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12, help="timed steps per library, taken in turns")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per library first")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every process")
    ap.add_argument("--only", choices=["mlm", "clm"], default=None)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--size", choices=list(SIZES), default="mini", help="mini: L4/H256/A4; base: L12/H768/A12")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast on both sides")
    ap.add_argument("--batch", type=int, default=BATCH, help="sequences of --seq tokens per step")
    ap.add_argument("--seq", type=int, default=SEQ, help="tokens per sequence")
    ap.add_argument("--compile", action="store_true", help="torch.compile both sides' models")
    ap.add_argument("--wrap", choices=["none", "ddp", "fsdp"], default="none",
                    help="lmforge's model in a one-process DDP / FSDP2 wrapper")
    ap.add_argument("--dropout", type=float, default=0.1, help="every dropout of both models (0: as llm.c trains)")
    ap.add_argument("--lmforge-only", dest="libs", action="store_const", const=("lmforge",), default=("hf", "lmforge"),
                    help="run lmforge's side alone (throughput / MFU sweeps without the reference's compile)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after the timed steps, profile N more steps per side and print the top operators")
    ap.add_argument("--refdata", type=Path, default=REFDATA, help="the shared reference data folder")
    ap.add_argument("--child", nargs=3, metavar=("LIB", "KIND", "SHARDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    BATCH, REFDATA, SEQ = args.batch, args.refdata.resolve(), args.seq
    setup = Setup(args)
    if args.child:
        lib, kind, shards = args.child
        _child(lib, kind, Path(shards), args.warmup, args.threads, setup)
        return 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false"}
    kinds = [args.only] if args.only else ["mlm", "clm"]
    results: dict[tuple[str, str], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            shards = _shards(kind, Path(tmp))
            for lib, r in _interleaved(kind, shards, args, env).items():
                results[(lib, kind)] = r
    import torch

    cuda = args.device == "cuda"
    where = (torch.cuda.get_device_name() if cuda else
             f"{os.cpu_count()}-core CPU (load average at the end {os.getloadavg()[0]:.1f})")
    peak = next((v for k, v in PEAK_TFLOPS.items() if cuda and k in where), {}).get(args.precision)
    print(f"\n{time.strftime('%Y-%m-%d')}, {where}, torch {torch.__version__}, {args.threads} threads per process; "
          f"{'HF and lmforge stepped in turns' if len(args.libs) == 2 else 'lmforge alone'}, median of {args.steps} steps each after {args.warmup} warm-up; "
          f"batch {BATCH} x {SEQ} tokens, {args.precision}{' autocast' if setup.bf16 else ''}, dropout {args.dropout}"
          f"{(', torch.compile on both sides' if len(args.libs) == 2 else ', torch.compile') if args.compile else ''}"
          f"{f', lmforge in one-process {args.wrap.upper()}' if args.wrap != 'none' else ''}\n")
    memory = "GPU peak memory" if cuda else "peak RSS"
    mfu_head = " HF MFU | lmforge MFU |" if peak else ""
    print(f"| workload | params | HF tokens/s | lmforge tokens/s | speed-up |{mfu_head} HF {memory} | lmforge {memory} |")
    print("|---|---|---|---|---|" + "---|" * (4 if peak else 2))
    shape = SIZES[args.size]
    shape_name = f"L{shape['layers']}/H{shape['hidden']}/A{shape['heads']}"
    names = {"mlm": f"{'bert-base' if args.size == 'base' else 'bert-mini'} MLM ({shape_name}, V 30,522)",
             "clm": f"GPT-2 {shape_name} CLM (V 50,257)"}
    for kind in kinds:
        lm = results[("lmforge", kind)]
        hf = results.get(("hf", kind))
        mem = "gpu_peak_mb" if cuda else "peak_rss_mb"
        mfu = ""
        if peak:
            per_token = model_flops_per_token(lm["dense_params"], kind, args.size)
            mfu = "".join(f" {r['tokens_per_s'] * per_token / (peak * 1e12):.1%} |" if r else " - |" for r in (hf, lm))
        if hf is None:  # --lmforge-only
            print(f"| {names[kind]} | {lm['params'] / 1e6:.1f}M | - | {lm['tokens_per_s']:,.0f} | - |{mfu} - | "
                  f"{lm[mem]:,.0f} MB |")
            continue
        print(f"| {names[kind]} | {lm['params'] / 1e6:.1f}M | {hf['tokens_per_s']:,.0f} | {lm['tokens_per_s']:,.0f} | "
              f"**{lm['tokens_per_s'] / hf['tokens_per_s']:.2f}x** |{mfu} {hf[mem]:,.0f} MB | {lm[mem]:,.0f} MB |")
    # process CPU seconds per step: what each side computes, less sensitive to other jobs' load (with
    # several threads it also counts the time a thread spins waiting for the other)
    if not cuda and len(args.libs) == 2:
        print("\nCPU time per step (median, all threads of the process): " + "; ".join(
            f"{kind} HF {results[('hf', kind)]['cpu_s']:.2f} s, lmforge {results[('lmforge', kind)]['cpu_s']:.2f} s "
            f"({results[('hf', kind)]['cpu_s'] / results[('lmforge', kind)]['cpu_s']:.2f}x)" for kind in kinds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
