"""The CPU training attention of padding-free fine-tuning, forward + backward, by implementation, side by side.

    python benchmarks/attention_core.py [--threads 1 2] [--repeats 9]

One attention sublayer's core (from the fused q / k / v rows of the real tokens to the output rows, dropout 0.1)
on batches of B sequences whose real lengths are 70-100 % of the batch length T (as length-grouped batches are),
4 heads of 64 (bert-mini): the median of ``--repeats`` forward + backward passes, in turns, each implementation
on the same rows:

* ``sdpa``: HF BERT's path in training: the rows scattered into (B, T, 3H), then
  ``F.scaled_dot_product_attention(dropout_p=0.1)`` with the padding mask (its math path on CPU);
* ``explicit``: lmforge before 2026-12-05: the same layout, lmforge's chunked explicit softmax
  (``cpu_fastpath.explicit_attention``) under autograd;
* ``packed``: ``cpu_fastpath.packed_attention`` (batched, its own backward);
* ``varlen``: ``cpu_fastpath.varlen_attention`` (one sequence at a time, its own backward).

``finetune`` takes ``varlen`` from ``cpu_fastpath.varlen_from(threads)`` tokens on and ``packed`` below. Results:
docs/finetuning.md, "Attention one sequence at a time".
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F

import lmforge.nn.attention.cpu_fastpath as cf

NH, HS, P = 4, 64, 0.1
SHAPES = [(16, 32), (32, 32), (64, 32), (96, 32), (128, 16), (256, 16), (384, 16)]  # (T, B)


def implementations(T: int, B: int) -> tuple[dict, torch.Tensor, torch.Tensor]:
    H = NH * HS
    g = torch.Generator().manual_seed(T)
    lengths = torch.randint(int(T * 0.7), T + 1, (B,), generator=g)
    lengths[0] = T
    keys = torch.arange(T)[None] < lengths[:, None]
    index = keys.reshape(-1).nonzero().squeeze(1)
    pad = (~keys).reshape(-1).nonzero().squeeze(1)
    rows, pads = (index // T, index % T), (pad // T, pad % T)
    mask = keys[:, None, None, :]
    qkv = torch.randn(index.numel(), 3 * H, generator=g, requires_grad=True)
    grad = torch.randn(index.numel(), H, generator=g)

    def heads() -> tuple[torch.Tensor, ...]:
        full = qkv.new_zeros(B * T, 3 * H).index_copy(0, index, qkv)
        return full.view(B, T, 3, NH, HS).permute(2, 0, 3, 1, 4).contiguous().unbind(0)  # (B, nh, T, hs)

    def back(y: torch.Tensor) -> torch.Tensor:  # (B, nh, T, hs) -> the real rows (N, H)
        return y.transpose(1, 2).reshape(B * T, H).index_select(0, index)

    def sdpa() -> torch.Tensor:
        q, k, v = heads()
        return back(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=P))

    def explicit() -> torch.Tensor:
        q, k, v = (t.reshape(B * NH, T, HS) for t in heads())
        return back(cf.explicit_attention(q, k, v, batch=B, dense_mask=mask, p=P).view(B, NH, T, HS))

    def packed() -> torch.Tensor:
        return cf.packed_attention(qkv, rows=rows, pads=pads, dense_mask=mask, batch=B, length=T, heads=NH, p=P)

    def varlen() -> torch.Tensor:
        return cf.varlen_attention(qkv, lengths=lengths.tolist(), heads=NH, causal=False, p=P)

    return {"sdpa": sdpa, "explicit": explicit, "packed": packed, "varlen": varlen}, qkv, grad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, load {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| threads | T | B | real tokens | sdpa ms | explicit ms | packed ms | varlen ms | sdpa / packed | "
          "sdpa / varlen | taken |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for T, B in SHAPES:
            fns, qkv, grad = implementations(T, B)
            times: dict[str, list[float]] = {name: [] for name in fns}
            for _ in range(args.repeats):
                for name, fn in fns.items():
                    t = time.perf_counter()
                    fn().backward(grad)
                    times[name].append(time.perf_counter() - t)
                    qkv.grad = None
            ms = {name: sorted(v)[len(v) // 2] * 1e3 for name, v in times.items()}
            taken = "varlen" if T >= cf.varlen_from(threads) else "packed"
            print(f"| {threads} | {T} | {B} | {qkv.size(0)} | {ms['sdpa']:.1f} | {ms['explicit']:.1f} | "
                  f"{ms['packed']:.1f} | {ms['varlen']:.1f} | {ms['sdpa'] / ms['packed']:.2f}x | "
                  f"{ms['sdpa'] / ms['varlen']:.2f}x | {taken} |")
    print(f"# load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
