"""ELECTRA pre-training step: lmforge's ``rtd`` objective vs the same step built from HF transformers'
``ElectraForMaskedLM`` (generator) + ``ElectraForPreTraining`` (discriminator) with shared embeddings, the
way community PyTorch ports of ELECTRA build it. Same weights, same batches, same machine, same run.

    python benchmarks/electra.py [--steps 10] [--warmup 2] [--threads 2] [--batch 32] [--device cpu|cuda]
                                 [--precision fp32|bf16] [--refdata DIR]

Workload: electra-small (discriminator L12 / H256 / A4, E 128, V 30,522; generator 0.25 x: H64 / A1,
embeddings shared), seq 128, tiny-shakespeare in the BERT uncased vocabulary, fp32, dropout 0.1, AdamW,
clipping at 1.0. One step = make the batch, generator forward, sample, discriminator forward, backward of
``MLM + 50 x RTD``, clip, optimizer step, zero_grad:

* lmforge: ``ReplacedTokenDetection.loss(model, batch)``, what ``Trainer`` runs per step (the generator's
  vocabulary projection at the masked rows only, its last layer at those rows only, the CPU fast paths);
* HF: the generator computes logits at every position (``ElectraForMaskedLM(..., labels=)``), the masked
  rows are gathered for sampling, the discriminator runs on the corrupted batch
  (``ElectraForPreTraining(..., labels=)``), ``loss = gen.loss + 50 * disc.loss``.

Both sides take their batches from lmforge's rtd ``BatchSource`` (same masks, same ``sample_seed``s) and
sample with ``lmforge.objectives.rtd.sample_tokens``, so the same batch gives the same replacements; the
loss of step 0 is computed by both in eval mode (no dropout) before training and printed side by side.
Weights: an lmforge pair built with seed 0, exported with ``export_hf`` for the HF side.

Each library runs in its own subprocess (its own peak RSS, ``torch.set_num_threads(--threads)``); after
``--warmup`` untimed steps the two take turns one step at a time (the order flips every round), so a change
in a shared machine's load hits both; the table gives each side's median step. Tokens/s = batch x 128 / step.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REFDATA = (REPO / ".." / "shared" / "refdata").resolve()
SEQ = 128
GEN_SIZE = 0.25


def _autocast(device: str, bf16: bool):
    import contextlib

    import torch

    return torch.autocast(device_type=device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def prepare(root: Path) -> None:
    """tiny-shakespeare shards (BERT uncased) and the initial weights, lmforge and HF format, in ``root``."""
    sys.path.insert(0, str(REPO / "tests" / "data"))
    import tokfixtures
    import torch

    from lmforge import Model
    from lmforge.data.shards import prepare_shards
    from lmforge.objectives import build_objective
    from lmforge.objectives.rtd import RTDConfig

    tok = tokfixtures.bert_tokenizer(REFDATA)
    prepare_shards([REFDATA / "text" / "tinyshakespeare.txt"], tokenizer=tok, out=root / "shards", doc_mode="blank",
                   val_fraction=0.01, progress=False)
    torch.manual_seed(0)
    disc = Model.from_preset("electra-small", head="rtd", vocab_size=len(tok))
    objective = build_objective("rtd", tokenizer=tok, seq_len=SEQ, rtd=RTDConfig(generator_size=GEN_SIZE))
    gen = objective.attach(disc)
    disc.save_pretrained(root / "lmforge-disc")
    gen.save_pretrained(root / "lmforge-gen")
    disc.export_hf(root / "hf-disc")
    gen.export_hf(root / "hf-gen")


def _objective_and_source(root: Path, batch: int):
    from lmforge.data.shards import ShardDataset
    from lmforge.objectives import BatchSource, build_objective
    from lmforge.objectives.rtd import RTDConfig

    ds = ShardDataset(root / "shards", "train")
    objective = build_objective("rtd", tokenizer=ds.load_tokenizer(), seq_len=SEQ,
                                rtd=RTDConfig(generator_size=GEN_SIZE))
    return objective, BatchSource(objective, ds, batch_size=batch, seed=0)


def _lmforge(root: Path, args: argparse.Namespace):
    """(loss(batch), step(i), parameters) for lmforge: the rtd objective on the lmforge pair."""
    import torch

    from lmforge import Model
    from lmforge.train.config import TrainConfig
    from lmforge.train.loop import to_device
    from lmforge.train.optim import build_optimizer, param_groups

    device = torch.device(args.device)
    objective, source = _objective_and_source(root, args.batch)
    disc = Model.from_pretrained(root / "lmforge-disc").to(device)
    gen = objective.attach(disc, Model.from_pretrained(root / "lmforge-gen"))
    named = list(disc.named_parameters())
    seen = {id(p) for _, p in named}
    named += [(f"generator.{n}", p) for n, p in gen.named_parameters() if id(p) not in seen]  # as Trainer does
    cfg = TrainConfig(lr=5e-4, adam_eps=1e-6)
    opt = build_optimizer(param_groups(named, lr=cfg.lr, weight_decay=cfg.weight_decay), cfg)
    params = [p for _, p in named]

    def loss_of(batch) -> torch.Tensor:
        return objective.loss(disc, batch)[0]

    def step(i: int) -> float:
        batch = to_device(source.batch(0, i), device)
        with _autocast(args.device, args.precision == "bf16"):
            loss = loss_of(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return disc, source, loss_of, step, params


def _hf(root: Path, args: argparse.Namespace):
    """The same for HF: ElectraForMaskedLM + ElectraForPreTraining sharing one embedding module."""
    import torch
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    from lmforge.objectives.rtd import sample_tokens
    from lmforge.train.loop import to_device

    device = torch.device(args.device)
    _, source = _objective_and_source(root, args.batch)
    disc = ElectraForPreTraining.from_pretrained(root / "hf-disc", attn_implementation="sdpa").to(device)
    gen = ElectraForMaskedLM.from_pretrained(root / "hf-gen", attn_implementation="sdpa").to(device)
    gen.electra.embeddings = disc.electra.embeddings  # word, position, token type, LayerNorm: one module
    gen.generator_lm_head.weight = disc.electra.embeddings.word_embeddings.weight  # tied to the shared table
    params = list({id(p): p for p in [*disc.parameters(), *gen.parameters()]}.values())
    opt = torch.optim.AdamW(params, lr=5e-4, eps=1e-6, weight_decay=0.01, fused=True)

    def loss_of(batch) -> torch.Tensor:
        ids, labels = batch["input_ids"], batch["labels"]
        mask, types = batch.get("attention_mask"), batch.get("token_type_ids")
        gen.train(disc.training)
        out = gen(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)  # (B, L, V) logits
        keep = labels != -100
        with torch.no_grad():
            sampled = sample_tokens(out.logits[keep].detach(), keep.sum(1).tolist(), batch["sample_seed"].tolist())
            original = torch.where(keep, labels, ids)
            fake = original.clone()
            fake[keep] = sampled
        d = disc(input_ids=fake, attention_mask=mask, token_type_ids=types, labels=(fake != original).long())
        return out.loss + 50.0 * d.loss

    def step(i: int) -> float:
        batch = to_device(source.batch(0, i), device)
        with _autocast(args.device, args.precision == "bf16"):
            loss = loss_of(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return disc, source, loss_of, step, params


def _child(lib: str, root: Path, args: argparse.Namespace) -> None:
    """Answer "step" with the step's seconds, "done" with params and peak memory; first the eval-mode loss."""
    import torch

    from lmforge.train.loop import to_device

    torch.set_num_threads(args.threads)
    disc, source, loss_of, step, params = (_lmforge if lib == "lmforge" else _hf)(root, args)
    disc.eval()
    with torch.no_grad():
        check = float(loss_of(to_device(source.batch(0, 0), torch.device(args.device))))
    disc.train()
    for i in range(args.warmup):
        step(i)
    print(json.dumps({"ready": True, "eval_loss": check}), flush=True)
    i = args.warmup
    for line in sys.stdin:
        if line.strip() == "done":
            break
        _sync(args.device)
        t, c = time.perf_counter(), time.process_time()
        loss = step(i)
        _sync(args.device)
        print(json.dumps({"step_s": time.perf_counter() - t, "cpu_s": time.process_time() - c, "loss": loss}),
              flush=True)
        i += 1
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else 0.0
    print(json.dumps({"params": sum(p.numel() for p in params), "gpu_peak_mb": gpu_mb,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)


def _interleaved(root: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, dict]:
    flags = ["--threads", str(args.threads), "--batch", str(args.batch), "--warmup", str(args.warmup),
             "--device", args.device, "--precision", args.precision, "--refdata", str(REFDATA)]
    procs = {lib: subprocess.Popen([sys.executable, __file__, "--child", lib, str(root), *flags], env=env, text=True,
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE) for lib in ("hf", "lmforge")}

    def reply(lib: str) -> dict:
        line = procs[lib].stdout.readline()
        if not line:
            raise RuntimeError(f"the {lib} benchmark process died (exit {procs[lib].wait()})")
        return json.loads(line)

    results: dict[str, dict] = {lib: {"eval_loss": reply(lib)["eval_loss"], "times": [], "cpu": [], "losses": []}
                                for lib in procs}
    for r in range(args.steps):
        for lib in (("hf", "lmforge") if r % 2 == 0 else ("lmforge", "hf")):
            procs[lib].stdin.write("step\n")
            procs[lib].stdin.flush()
            rec = reply(lib)
            results[lib]["times"].append(rec["step_s"])
            results[lib]["cpu"].append(rec["cpu_s"])
            results[lib]["losses"].append(rec["loss"])
    for lib, proc in procs.items():
        proc.stdin.write("done\n")
        proc.stdin.flush()
        results[lib].update(reply(lib))
        proc.wait()
        r = results[lib]
        r["step_s"], r["cpu_s"] = statistics.median(r["times"]), statistics.median(r["cpu"])
        r["tokens_per_s"] = args.batch * SEQ / r["step_s"]
        print(f"  {lib:8s} steps {' '.join(f'{t:.2f}' for t in r['times'])} s -> median {r['step_s']:.2f} s, "
              f"{r['tokens_per_s']:,.0f} tokens/s, peak RSS {r['peak_rss_mb']:,.0f} MB", file=sys.stderr)
    return results


def machine(device: str) -> str:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    where = torch.cuda.get_device_name() if device == "cuda" else f"{cpu}, {os.cpu_count()} cores"
    return f"{where}, torch {torch.__version__}, transformers {transformers.__version__}"


def main() -> int:
    global REFDATA
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10, help="timed steps per library, taken in turns")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per library first")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in both processes")
    ap.add_argument("--batch", type=int, default=32, help="sequences of 128 tokens per step")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast on both sides")
    ap.add_argument("--refdata", type=Path, default=REFDATA, help="the shared reference data folder")
    ap.add_argument("--child", nargs=2, metavar=("LIB", "ROOT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    REFDATA = args.refdata.resolve()
    if args.child:
        _child(args.child[0], Path(args.child[1]), args)
        return 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false"}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        prepare(Path(tmp))
        results = _interleaved(Path(tmp), args, env)
    hf, lm = results["hf"], results["lmforge"]
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine(args.device)}; {args.threads} threads per "
          f"process, load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after; HF and lmforge stepped in "
          f"turns, median of {args.steps} steps each after {args.warmup} warm-up; batch {args.batch} x {SEQ}, "
          f"{args.precision}, dropout 0.1\n")
    memory = "GPU peak memory" if args.device == "cuda" else "peak RSS"
    mem = "gpu_peak_mb" if args.device == "cuda" else "peak_rss_mb"
    print(f"| workload | params | HF tokens/s | lmforge tokens/s | speed-up | HF {memory} | lmforge {memory} |")
    print("|---|---|---|---|---|---|---|")
    print(f"| electra-small rtd (disc L12/H256/A4 + gen H64/A1, E 128, V 30,522) | {lm['params'] / 1e6:.1f}M | "
          f"{hf['tokens_per_s']:,.0f} | {lm['tokens_per_s']:,.0f} | **{lm['tokens_per_s'] / hf['tokens_per_s']:.2f}x** "
          f"| {hf[mem]:,.0f} MB | {lm[mem]:,.0f} MB |")
    rel = abs(hf["eval_loss"] - lm["eval_loss"]) / abs(hf["eval_loss"])
    print(f"\nSame loss on batch 0 (eval mode, same weights and samples): HF {hf['eval_loss']:.6f}, lmforge "
          f"{lm['eval_loss']:.6f} (relative difference {rel:.1e}). CPU time per step (median, all threads): HF "
          f"{hf['cpu_s']:.2f} s, lmforge {lm['cpu_s']:.2f} s ({hf['cpu_s'] / lm['cpu_s']:.2f}x).")
    return 0 if rel < 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
