"""`lmforge compress`: quantize or prune a saved model, save the result, and report what it cost and gained.

    from lmforge.recipes.compress import CompressConfig, compress
    result = compress(CompressConfig(model="runs/cola", method="int8", out="runs/cola-int8",
                                     eval_task="glue-cola", eval_data="glue/CoLA"))

Methods: ``int8`` (int8 weights, activations quantized at run time), ``int8-weight`` (weight-only int8, for
decoding), ``bf16`` (lmforge.nn.quantized; ``compression/quantize.py`` times the kernels on the model's
shapes and takes the fastest), ``prune-heads`` / ``prune-ffn`` (``compression/prune.py``: importance by the
gradient of a head / neuron gate over calibration data, the least important removed), ``magnitude``
(unstructured; reported honestly: dense kernels save nothing).

Data: ``eval_task`` + ``eval_data`` score the model by the task's main metric on ``eval_split`` (default:
the task's dev split) and calibrate pruning on ``calib_split`` (default: train); ``eval_text`` scores
perplexity on the second half of a text file and calibrates on the first half. Output directory: the
compressed model (``Model.from_pretrained(out)``), its tokenizer, ``task.json`` when the input had one, and
report.md / report.json / report.png (``compression/report.py``).
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lmforge.errors import ConfigError, DataError, InputError

Log = Callable[[str], None]
METHODS = ("int8", "int8-weight", "bf16", "prune-heads", "prune-ffn", "magnitude")
QUANTIZE = ("int8", "int8-weight", "bf16")
PRUNE = ("prune-heads", "prune-ffn")


def _print(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclasses.dataclass
class CompressConfig:
    """One compression run (the flags of ``lmforge compress``)."""

    model: str  # lmforge model directory with its tokenizer (a fine-tuned one for --eval-task)
    method: str  # one of METHODS
    out: str  # output directory (must not be the model directory)
    amount: float = 0.5  # prune-heads / prune-ffn: fraction of heads / neurons removed; magnitude: sparsity
    kernel: str = "auto"  # int8 / int8-weight kernel (lmforge.nn.quantized.KERNELS); "auto" = the fastest measured here
    eval_task: str | None = None  # task name (lmforge.tasks); default: the model's task.json when eval_data is given
    eval_data: str | None = None  # the task's data directory
    eval_text: str | None = None  # a text file: perplexity on its second half, calibration on its first half
    eval_split: str | None = None  # the scored split (default: the task's first eval split)
    calib_split: str = "train"  # the split pruning scores heads / neurons on (and --recover-steps trains on)
    calib_examples: int = 256  # examples (or text windows) used for calibration
    eval_examples: int | None = None  # score at most this many examples (None: the whole split)
    seq_len: int = 128  # tokens per text window and per latency input
    eval_tokens: int = 32768  # at most this many tokens of --eval-text per half
    recover_steps: int = 0  # fine-tuning steps after pruning (the lmforge trainer), on the calibration data
    recover_lr: float = 5e-5  # their learning rate
    batch_size: int = 32  # calibration / scoring / recovery batch size
    repeats: int = 5  # timed runs per latency figure (median)
    threads: int | None = None  # torch threads for the whole run (None: torch's default)
    memory: bool = True  # measure peak memory (one fresh process per model, a few seconds each)
    overwrite: bool = False  # write into a non-empty --out
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            from lmforge.errors import suggest

            raise ConfigError(f"--method {self.method!r} is not one of: {', '.join(METHODS)}."
                              f"{suggest(self.method, METHODS)}")
        if self.method in (*PRUNE, "magnitude") and not 0 < self.amount < 1:
            raise ConfigError(f"--amount {self.amount} must be a fraction in (0, 1) for {self.method}.")
        if self.eval_text is not None and (self.eval_task is not None or self.eval_data is not None):
            raise ConfigError("give either --eval-text or --eval-task / --eval-data, not both.")
        if self.eval_task is not None and self.eval_data is None:
            raise ConfigError("--eval-task needs --eval-data DIR (the task's files).")
        if self.recover_steps < 0 or (self.recover_steps and self.method not in (*PRUNE, "magnitude")):
            raise ConfigError("--recover-steps fine-tunes after pruning (prune-heads, prune-ffn, magnitude); "
                              f"{self.method} models are not trained.")
        for name in ("calib_examples", "seq_len", "eval_tokens", "batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1.")


@dataclasses.dataclass
class Quality:
    """How the run scores a model, and the data pruning / recovery use."""

    on: str  # "glue-cola dev (n=...)" / "text.txt, second half (N tokens)"
    score: Callable[[torch.nn.Module], dict[str, float]]
    loss: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    calib: list[dict[str, torch.Tensor]]  # calibration batches
    calib_items: list[Any]  # the same data unbatched (recovery training)
    collate: Callable[[list[Any]], dict[str, torch.Tensor]]
    main: str  # the headline metric
    extra_files: list[Path] = dataclasses.field(default_factory=list)  # copied into out (task.json)


# what a previous compress run leaves in --out besides the model files (which are replaced): --overwrite removes
# them so an old recovery log or report cannot sit beside the new model
OWNED = ("recover", "report.md", "report.json", "report.png", "task.json")


def check_out(model_dir: Path, out: Path, *, overwrite: bool) -> None:
    """The output-directory rule of every command (recipes/outputs.py), and never the model directory itself."""
    from lmforge.recipes.outputs import check_out_dir

    if out.resolve() == model_dir.resolve():
        raise InputError(f"--out {out} is the model directory; nothing was written. Give a new directory: the "
                         "compressed model must not replace the original.")
    check_out_dir(out, overwrite=overwrite, owned=OWNED)


# ------------------------------------------------------------------ quality and calibration data
def task_quality(config: CompressConfig, model: Any, tokenizer: Any, model_dir: Path, log: Log) -> Quality:
    """Score by the task's main metric; calibrate on its training split. Refuses data of another task."""
    from lmforge.recipes.finetune import (_featurize, _pad_id, add_decoder_tokens, default_max_length, evaluate,
                                          task_from_state)
    from lmforge.tasks import get_task

    state_file = model_dir / "task.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else None
    if state is not None and config.eval_task not in (None, state["task"]):
        raise InputError(f"--eval-task {config.eval_task} but {model_dir} was fine-tuned for {state['task']} "
                         f"(its task.json); score it with --eval-task {state['task']} and that task's data.")
    if state is None and config.eval_task is None:
        raise InputError(f"{model_dir} has no task.json (it was not fine-tuned by lmforge); pass --eval-task.")
    task = (task_from_state({k: v for k, v in state.items() if k != "max_length"}) if state is not None
            else get_task(config.eval_task))
    want = task.head(model.config)
    if any(getattr(model.config, k) != v for k, v in want.items()):
        have = {k: getattr(model.config, k) for k in want}
        raise InputError(f"the model's head {have} does not fit task {task.name} (it needs {want}); compress the "
                         f"model fine-tuned for {task.name}, or score this one with --eval-text.")
    max_length = int((state or {}).get("max_length") or default_max_length(task))
    decoder = add_decoder_tokens(tokenizer) if model.config.causal else None
    segments = model.config.type_vocab_size > 1
    split = config.eval_split or task.eval_splits[0]
    examples = task.read(config.eval_data, split)[: config.eval_examples]
    features = _featurize(task, examples, tokenizer, max_length=max_length, decoder=decoder, training=False,
                          what=split, log=log, segments=segments)
    pad = _pad_id(tokenizer)
    calib: list[Any] = []
    if config.method in PRUNE or config.recover_steps:
        try:
            train = task.read(config.eval_data, config.calib_split)
        except DataError as err:
            raise DataError(f"{err}. Pruning scores heads / neurons on the {config.calib_split!r} split; pass "
                            "--calib-split with a split the data has.") from err
        calib = _featurize(task, train[: config.calib_examples], tokenizer, max_length=max_length,
                           decoder=decoder, training=True, what=config.calib_split, log=log, segments=segments)

    def score(m: torch.nn.Module) -> dict[str, float]:
        _, scores = evaluate(m, task, examples, features, pad_id=pad, batch_size=config.batch_size)
        return {k: float(v) for k, v in scores.items() if isinstance(v, (int, float))}

    def loss(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return m(**batch).loss

    def collate(items: list[Any]) -> dict[str, torch.Tensor]:
        return task.collate(items, pad_id=pad)

    batches = [collate(calib[i:i + config.batch_size]) for i in range(0, len(calib), config.batch_size)]
    return Quality(on=f"{task.name} {split} (n={len(examples)})", score=score, loss=loss, calib=batches,
                   calib_items=calib, collate=collate, main=task.main_metric,
                   extra_files=[state_file] if state is not None else [])


def text_quality(config: CompressConfig, model: Any, tokenizer: Any) -> Quality:
    from lmforge.compression.quality import check_lm, lm_batches, lm_loss, perplexity, text_windows

    check_lm(model.config)
    seq_len = min(config.seq_len, model.config.max_length)
    calib_windows, eval_windows = text_windows(config.eval_text, tokenizer, seq_len=seq_len,
                                               max_tokens=config.eval_tokens)
    calib_windows = calib_windows[: config.calib_examples]
    mask_id = getattr(tokenizer, "mask_token_id", None)
    evaluation = lm_batches(eval_windows, model.config, mask_id, batch_size=config.batch_size, seed=config.seed)
    calib = lm_batches(calib_windows, model.config, mask_id, batch_size=config.batch_size, seed=config.seed + 1)
    tokens = len(eval_windows) * seq_len

    def collate(items: list[Any]) -> dict[str, torch.Tensor]:
        from lmforge.compression.quality import lm_batch

        return lm_batch(list(items), model.config, mask_id, seed=int(torch.randint(0, 2**31, ()).item()))

    return Quality(on=f"{Path(config.eval_text).name}, second half ({tokens:,} tokens)",
                   score=lambda m: perplexity(m, evaluation), loss=lm_loss, calib=calib,
                   calib_items=calib_windows, collate=collate, main="perplexity")


# ------------------------------------------------------------------ the methods
def recover(model: Any, quality: Quality, config: CompressConfig, out: Path, log: Log) -> None:
    """``recover_steps`` steps of the lmforge trainer on the calibration data (the pruned model in place)."""
    from lmforge.train import TrainConfig, Trainer
    from lmforge.train.loop import list_source

    batch = min(config.batch_size, len(quality.calib_items))
    source = list_source(quality.calib_items, quality.collate, batch_size=batch, seed=config.seed)

    class Objective:
        def loss(self, m: torch.nn.Module, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
            value = quality.loss(m, b)
            return value, {"loss": value.detach()}

    tc = TrainConfig(max_steps=config.recover_steps, batch_size=batch, seq_len=config.seq_len, lr=config.recover_lr,
                     warmup_ratio=0.1, seed=config.seed, progress=False, log_every=max(1, config.recover_steps // 4))
    run_dir = out / "recover"
    log(f"recovering: {config.recover_steps} fine-tuning steps at lr {config.recover_lr} on "
        f"{len(quality.calib_items)} calibration examples (log: {run_dir})")
    Trainer(model, Objective(), source, tc, out_dir=run_dir).train()
    for name in ("model.safetensors", "config.json"):  # the compressed model is written to out itself
        (run_dir / name).unlink(missing_ok=True)


def apply_method(model: Any, config: CompressConfig, quality: Quality | None, out: Path, log: Log
                 ) -> tuple[Any, dict[str, Any]]:
    """The compressed model and what the report says about how it was made."""
    from lmforge.compression import prune as pruning
    from lmforge.compression.quantize import quantize

    info: dict[str, Any] = {}
    if config.method in QUANTIZE:
        if config.method != "bf16" and any(p.device.type != "cpu" for p in model.parameters()):
            raise InputError(f"the {config.method} kernels run on CPU only; compress on CPU.")
        model, done = quantize(model, config.method, kernel=config.kernel, repeats=config.repeats)
        info.update(kernel=done["kernel"], kernels=done["kernels"], kernel_chosen=config.kernel)
        if done["kernel"]:
            from lmforge.nn.quantized import KERNELS

            info["kernel_about"] = KERNELS[config.method][done["kernel"]].about
        if config.method == "bf16" and not torch.backends.mkldnn.is_available():
            info.setdefault("notes", []).append("this torch has no oneDNN: bf16 products are emulated (slow).")
        return model, info
    if config.method == "magnitude":
        sparsity = pruning.magnitude_prune(model, config.amount)
        info["sparsity"] = sum(sparsity.values()) / len(sparsity)
    else:
        if quality is None:
            raise InputError(f"{config.method} scores heads / neurons on data: give --eval-task + --eval-data "
                             "(a fine-tuned model) or --eval-text (a language model).")
        if config.method == "prune-heads":  # what cannot be done is said before the importance pass
            if "bigbird" in model.config.attention_kinds:
                raise InputError("prune-heads cannot prune BigBird attention (its random blocks are drawn per head "
                                 "index); use --method prune-ffn, or a quantization method.")
            pruning.heads_to_keep([torch.zeros(layer.attn.num_heads) for layer in model.body.layers], config.amount)
        heads, neurons = pruning.importance(model, quality.calib, quality.loss)
        if config.method == "prune-heads":
            keep = pruning.heads_to_keep(pruning.normalize_head_scores(heads), config.amount)
            model = pruning.prune(model, heads=keep)
            info["kept_heads"] = keep
        else:
            keep = pruning.neurons_to_keep(neurons, config.amount)
            model = pruning.prune(model, neurons=keep)
            info["kept_neurons_per_layer"] = [len(k) for k in keep]
        log(f"{config.method}: layer heads {model.config.layer_heads or 'unchanged'}, MLP widths "
            f"{model.config.layer_ffn_sizes or 'unchanged'}")
    if config.recover_steps:
        if quality is None:
            raise InputError("--recover-steps trains on the calibration data: give --eval-task/--eval-data or --eval-text.")
        recover(model, quality, config, out, log)
        if config.method == "magnitude":  # training moved the zeros: prune again to the same sparsity
            sparsity = pruning.magnitude_prune(model, config.amount)
            info["sparsity"] = sum(sparsity.values()) / len(sparsity)
    return model, info


# ------------------------------------------------------------------ the run
def compress(config: CompressConfig, *, log: Log = _print) -> dict[str, Any]:
    """Compress ``config.model`` into ``config.out``; returns the report (also written as report.json / .md / .png)."""
    from lmforge.compression import measure
    from lmforge.compression.report import write_report
    from lmforge.models.model import Model
    from lmforge.recipes.loading import load_model_and_tokenizer
    from lmforge.train.loop import seed_everything

    model_dir, out = Path(config.model), Path(config.out)
    if not model_dir.is_dir():
        raise InputError(f"--model {model_dir} is not a model directory.")
    check_out(model_dir, out, overwrite=config.overwrite)
    if config.threads:
        torch.set_num_threads(config.threads)
    seed_everything(config.seed)
    before, tokenizer = load_model_and_tokenizer(model_dir)
    if before.config.quantization is not None:
        raise InputError(f"{model_dir} is already quantized ({before.config.quantization['method']}); compress the "
                         "float model (prune first, then quantize).")
    quality = None
    if config.eval_text is not None:
        quality = text_quality(config, before, tokenizer)
    elif config.eval_data is not None:
        quality = task_quality(config, before, tokenizer, model_dir, log)
    machine = measure.machine()
    log(f"compressing {model_dir} with {config.method} on {machine['cpu']} ({machine['threads']} thread(s), load "
        f"{machine['load_average']})")

    working, _ = load_model_and_tokenizer(model_dir)  # the copy that is compressed (the original stays for the report)
    after, info = apply_method(working, config, quality, out, log)
    after._set_config(after.config.replace(extra={**after.config.extra, "compression": {
        "method": config.method, "from": str(model_dir), "amount": config.amount if config.method not in QUANTIZE
        else None, "kernel": info.get("kernel")}}))
    out.mkdir(parents=True, exist_ok=True)
    after.save_pretrained(out)
    tokenizer.save_pretrained(out)
    for file in quality.extra_files if quality else []:
        shutil.copy(file, out / file.name)
    after = Model.from_pretrained(out).eval()  # measure what was saved: the round trip is part of the product
    if info.get("kernel"):
        log(f"{config.method}: kernel {info['kernel']} ({info['kernel_about']})")

    models = {"before": before.eval(), "after": after}
    length = min(config.seq_len, before.config.max_length)
    rows: dict[str, dict[str, Any]] = {name: {} for name in models}
    for name, m in models.items():
        rows[name].update(parameters=measure.count_parameters(m), memory_mb=measure.memory_bytes(m) / 2**20)
    for name, directory in (("before", model_dir), ("after", out)):
        size = measure.disk_bytes(directory)
        rows[name]["disk_mb"] = None if size is None else size / 2**20
    log("timing forward passes (batch 1 and 32), models in turns ...")
    for batch in (1, 32):
        times = measure.forward_latency(models, batch=batch, length=length, repeats=config.repeats)
        for name, t in times.items():
            rows[name][f"latency_b{batch}_ms"] = t * 1e3
    if before.config.causal and before.config.head in ("clm", "extract"):
        log("timing greedy decoding at batch 1 ...")
        for name, t in measure.decode_latency(models, repeats=max(1, config.repeats // 2)).items():
            rows[name]["decode_ms_per_token"] = t * 1e3
    for name, directory in (("before", model_dir), ("after", out)) if config.memory else ():
        peak = measure.peak_memory(directory, batch=32, length=length, threads=torch.get_num_threads())
        rows[name].update(load_mb=peak and peak["load_mb"], peak_mb=peak and peak["peak_mb"])
    if quality is not None:
        log(f"scoring on {quality.on} ...")
        for name, m in models.items():
            rows[name]["quality"] = quality.score(m)
    if config.method == "magnitude":
        info["sparse_kernel"] = measure.sparse_vs_dense(after, repeats=config.repeats)
    report = {"method": config.method, "model": str(model_dir), "out": str(out), "repeats": config.repeats,
              "length": length, "amount": config.amount if config.method not in QUANTIZE else None,
              "machine": machine, "quality_on": quality.on if quality else None,
              "quality_main": quality.main if quality else None, **rows, **info}
    report.setdefault("notes", []).extend(_notes(report, config))
    write_report(report, out)
    log(f"wrote {out} (report.md)")
    return report


def _notes(report: dict[str, Any], config: CompressConfig) -> list[str]:
    """What a reader should not miss: slower results, unstructured sparsity, missing quality data."""
    notes = []
    b, a = report["before"], report["after"]
    labels = {"latency_b1_ms": "the batch-1 forward", "latency_b32_ms": "the batch-32 forward",
              "decode_ms_per_token": "greedy decoding"}
    slower = [f"{label} ({a[k] / b[k]:.2f}x the time)" for k, label in labels.items()
              if isinstance(b.get(k), float) and isinstance(a.get(k), float) and a[k] > b[k] * 1.05]
    if slower:
        notes.append(f"slower after {config.method} on this machine: {', '.join(slower)} (measured, not hidden).")
    if config.method == "magnitude":
        s = report.get("sparse_kernel", {})
        notes.append(f"magnitude pruning zeroes {report.get('sparsity', 0):.0%} of the body's Linear weights but the "
                     "model still runs dense kernels on a dense file: no time or bytes are saved"
                     + (f"; torch's CSR product on the largest layer took {s.get('csr_ms_rows_1', 0):.3f} ms vs "
                        f"{s.get('dense_ms_rows_1', 0):.3f} ms dense at 1 row" if s else "") + ".")
    if config.method == "int8-weight" and report.get("kernel") == "fused":
        notes.append("int8-weight is the decoding method: batches above "
                     "lmforge.nn.quantized.FUSED_MAX_ROWS rows dequantize each weight per call (the batch-32 "
                     "forward pays for that).")
    if report.get("quality_on") is None:
        notes.append("no quality figure: pass --eval-task/--eval-data or --eval-text.")
    return notes


__all__ = ["METHODS", "CompressConfig", "compress"]
