"""The before / after report of one compression run: report.json (everything), report.md (the tables a
person reads) and report.png (size, latency and quality side by side)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# row key -> (label, unit formatter); the order of the table
ROWS: list[tuple[str, str]] = [
    ("parameters", "parameters (stored numbers)"),
    ("disk_mb", "model.safetensors (MB)"),
    ("memory_mb", "weights in memory (MB)"),
    ("latency_b1_ms", "forward, batch 1 (ms)"),
    ("latency_b32_ms", "forward, batch 32 (ms)"),
    ("decode_ms_per_token", "greedy decode, batch 1 (ms / token)"),
    ("load_mb", "peak RSS of a process after loading (MB)"),
    ("peak_mb", "... and after one batch-32 forward (MB)"),
]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


def _ratio(before: Any, after: Any) -> str:
    if not isinstance(before, (int, float)) or not isinstance(after, (int, float)) or not before:
        return "-"
    return f"{after / before:.3f}x"


def markdown(report: dict[str, Any]) -> str:
    before, after = report["before"], report["after"]
    m = report["machine"]
    lines = [f"# lmforge compress: {report['method']}", ""]
    what = f"`{report['model']}` -> `{report['out']}`, method `{report['method']}`"
    if report.get("kernel"):
        what += f", kernel `{report['kernel']}` ({report.get('kernel_about', '')})"
    if report.get("amount") is not None:
        what += f", amount {report['amount']}"
    lines += [what + ".", ""]
    lines += [f"Machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch thread(s), load average "
              f"{m['load_average']} at the start, torch {m['torch']} ({m['cpu_capability']}), {m['date_utc']}. "
              f"Latencies: median of {report['repeats']} runs, the two models timed in turns; "
              f"forward inputs of {report['length']} tokens.", ""]
    lines += ["| | before | after | after / before |", "|---|---:|---:|---:|"]
    for key, label in ROWS:
        if before.get(key) is None and after.get(key) is None:
            continue
        lines.append(f"| {label} | {_fmt(before.get(key))} | {_fmt(after.get(key))} | "
                     f"{_ratio(before.get(key), after.get(key))} |")
    for key in sorted((set(before.get("quality", {})) | set(after.get("quality", {}))) - {"tokens"}):
        b, a = before.get("quality", {}).get(key), after.get("quality", {}).get(key)
        diff = f"{a - b:+.4f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "-"
        lines.append(f"| quality: {key} ({report.get('quality_on', '')}) | {_fmt(b)} | {_fmt(a)} | {diff} |")
    if report.get("kernels"):
        rows = sorted({k for e in report["kernels"].values() for k in e if k.startswith("ms_rows_")},
                      key=lambda k: int(k.rsplit("_", 1)[1]))
        lines += ["", "Kernels measured on this model's weights (median ms of one pass over the body's Linear "
                  "layers: all of them at 1 row, the first layer's at more rows; the fastest available one relative "
                  "to float32 was "
                  f"{'chosen' if report.get('kernel_chosen') == 'auto' else 'available; the kernel was given'}):", "",
                  "| kernel | what runs | " + " | ".join(f"{r.split('_')[-1]} row(s)" for r in rows) + " |",
                  "|---|---|" + "---:|" * len(rows)]
        for name, e in report["kernels"].items():
            cells = [_fmt(e.get(r)) if e["available"] else "not here" for r in rows]
            about = e["about"] if e["available"] else f"{e['about']} — cannot run: {e['why']}"
            lines.append(f"| {name} | {about} | " + " | ".join(cells) + " |")
    if report.get("sparse_kernel"):
        s = report["sparse_kernel"]
        rows = sorted({int(k.rsplit("_", 1)[1]) for k in s if "_ms_rows_" in k})
        lines += ["", f"Sparse kernel check (the largest Linear, {s['shape']}, sparsity {s['sparsity']:.2f}; median "
                  "ms): " + "; ".join(f"{m} row(s): dense {s[f'dense_ms_rows_{m}']:.3f}, CSR {s[f'csr_ms_rows_{m}']:.3f}"
                                      for m in rows) + "."]
    for note in report.get("notes", []):
        lines += ["", f"- {note}"]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before, after = report["before"], report["after"]
    keys = [(k, label) for k, label in ROWS if k != "parameters" and isinstance(before.get(k), (int, float))
            and isinstance(after.get(k), (int, float))]
    quality = [(k, v) for k, v in after.get("quality", {}).items()
               if isinstance(v, (int, float)) and isinstance(before.get("quality", {}).get(k), (int, float))]
    panels = keys + [(f"quality:{k}", f"{k} ({report.get('quality_on', '')})") for k, _ in quality[:1]]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(3.0 * max(len(panels), 1), 3.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        if key.startswith("quality:"):
            name = key.split(":", 1)[1]
            values = [before["quality"][name], after["quality"][name]]
        else:
            values = [before[key], after[key]]
        ax.bar(["before", "after"], values, color=["#888888", "#3a7bd5"])
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=8)
    fig.suptitle(f"lmforge compress --method {report['method']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """report.json, report.md and report.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "report.json", out / "report.md", out / "report.png"]
    files[0].write_text(json.dumps(report, indent=2) + "\n")
    files[1].write_text(markdown(report))
    plot(report, files[2])
    return files


__all__ = ["ROWS", "markdown", "plot", "write_report"]
