"""Fine-tuning and evaluation on a task: load the model for the task, featurize, train with the ONE
trainer (``lmforge.train``), evaluate every epoch, keep the best epoch, write the outputs.

    from lmforge.recipes.finetune import FinetuneConfig, finetune
    scores = finetune(FinetuneConfig(model="runs/bert", task="glue-cola", data="glue/CoLA", out="runs/cola"))

Output directory: the fine-tuned model (``Model.from_pretrained(out)``) with its tokenizer and
``task.json`` (task name, label names, options, tuned SQuAD v2 threshold), ``metrics.json`` (flat keys:
mcc, accuracy, f1, pearson, spearman, exact, HasAns_exact ...), ``predictions.tsv`` (GLUE layout:
index, prediction) or ``predictions.json`` (SQuAD: id -> answer text), ``confusion_matrix.png`` for
classification. ``seeds=[1, 2, 3]`` runs one fine-tuning per seed in ``out/seed-N`` and writes the
mean and standard deviation of every metric to ``out/metrics.json``.

Optimisation, as the BERT / GPT-1 / ELECTRA papers tune it: the pre-trained body at ``lr`` with
optional layer-wise decay (layer i of L gets ``lr * layer_lr_decay ** (L - i)``, the embeddings
``lr * layer_lr_decay ** (L + 1)``), the new head at ``head_lr``, linear warmup over ``warmup`` steps
(that fraction of the steps when < 1) then linear decay, AdamW with ``weight_decay`` (none on biases
and norms). Causal decoders are fine-tuned GPT-1 style: start / delimiter / extract tokens are added to
the tokenizer, the classifier reads the extract token, and ``lm_weight`` x the language-model loss is
added.
"""
from __future__ import annotations

import dataclasses
import json
import math
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmforge.errors import CheckpointError, ConfigError, suggest
from lmforge.nn.quantized import check_device
from lmforge.tasks import DecoderTokens, Example, Feature, Task, get_task
from lmforge.tasks.base import IGNORE_INDEX
from lmforge.train.distributed import is_rank_zero, resolve_device, tears_down_process_group

Log = Callable[[str], None]


def _print(msg: str) -> None:
    if is_rank_zero():  # under torchrun every rank runs this; one of them speaks
        print(msg, file=sys.stderr, flush=True)


@dataclasses.dataclass
class FinetuneConfig:
    """Everything one fine-tuning run needs (the CLI flags of ``lmforge finetune``, same names).

    ``layer_decay=`` and ``warmup_ratio=`` are the old names of ``layer_lr_decay`` and ``warmup``: still
    accepted, with a DeprecationWarning.
    """

    model: str  # a checkpoint directory (lmforge or HF) or a preset name (then `tokenizer` is needed)
    task: str  # a name in lmforge.tasks.TASKS
    data: str  # the directory holding the task's split files
    out: str  # output directory
    tokenizer: str | None = None  # tokenizer directory; default: the model directory's tokenizer
    from_scratch: bool = False  # same architecture, fresh weights (the no-pre-training baseline)
    epochs: float = 3.0
    max_steps: int | None = None  # stop after this many optimizer steps (None: `epochs` decides)
    lr: float | None = None  # the pre-trained body's peak learning rate (None: default_lr of the body's width)
    head_lr: float | None = None  # the new head's peak learning rate (default: lr)
    layer_lr_decay: float = 1.0  # layer-wise LR decay factor (1.0 = off; ELECTRA uses 0.8), as TrainConfig's
    warmup: float = 0.1  # linear warmup: steps (>= 1) or a fraction of the steps (< 1), as pretrain's --warmup
    weight_decay: float = 0.01
    batch_size: int = 32
    eval_batch_size: int = 64
    max_length: int | None = None  # tokens per input (None: 384 for SQuAD, else 128); longer ones are cut
    seed: int = 0  # TrainConfig's and pretrain's default: one default for every command
    patience: int | None = None  # stop after this many evaluations without improvement (None: never)
    lm_weight: float = 0.5  # GPT-1 auxiliary language-model loss weight (causal decoders only)
    train_split: str = "train"
    eval_split: str | None = None  # default: the task's dev split(s)
    device: str | None = None  # default: cuda when available
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, fp32 on CPU; or "fp32" / "bf16"
    save_every: int | None = None  # a resumable checkpoint every N optimizer steps (None: only the final model)
    resume: bool = False  # continue the interrupted run in ``out`` (a finished one is left as it is)
    progress: bool = True  # a progress bar with the loss and the time left
    task_options: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. text_column, doc_stride
    overwrite: bool = False  # start over in a non-empty `out` (the previous run's state and outputs are removed)
    allow_changes: bool = False  # resume with settings that differ from the saved run's (otherwise refused)
    # speed (docs/finetuning.md, "Speed"): batches of similar length, layers on the real tokens only,
    # features cached beside the data, a classifier's last layer on [CLS] only
    group_by_length: bool = True  # training batches drawn from length-sorted chunks of the shuffled order
    padding_free: bool = True  # the body skips padded positions (same function; nn/attention/unpadded.py)
    feature_cache: bool = True  # featurize once per dataset + tokenizer + options (tasks/cache.py)
    cls_only: bool = True  # a [CLS] classifier's last layer computes position 0 alone (training and evaluation)
    sparse_rows: bool = True  # CPU: the word table's gradient is the batch's rows (train/optim.py SparseRows)
    layer_decay: dataclasses.InitVar[float | None] = None  # deprecated name of layer_lr_decay
    warmup_ratio: dataclasses.InitVar[float | None] = None  # deprecated name of warmup

    def __post_init__(self, layer_decay: float | None, warmup_ratio: float | None) -> None:
        import warnings

        renamed = (("layer_decay", layer_decay, "layer_lr_decay"), ("warmup_ratio", warmup_ratio, "warmup"))
        for old, value, new in renamed:
            if value is not None:
                warnings.warn(f"FinetuneConfig({old}=) is deprecated; use {new}= (same meaning)", DeprecationWarning,
                              stacklevel=3)
                setattr(self, new, value)
        checks = {"epochs": self.epochs > 0, "lr": self.lr is None or self.lr > 0, "batch_size": self.batch_size > 0,
                  "max_length": self.max_length is None or self.max_length > 8, "warmup": self.warmup >= 0,
                  "layer_lr_decay": 0 < self.layer_lr_decay <= 1, "lm_weight": self.lm_weight >= 0,
                  "head_lr": self.head_lr is None or self.head_lr > 0,
                  "max_steps": self.max_steps is None or self.max_steps > 0,
                  "save_every": self.save_every is None or self.save_every > 0}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            said = ", ".join(f"{b}={getattr(self, b)!r}" for b in bad)
            raise ConfigError(f"impossible fine-tuning setting(s): {said}",
                              cli="impossible fine-tuning setting(s): "
                                  + ", ".join(f"--{b.replace('_', '-')} {getattr(self, b)}" for b in bad))


def default_lr(hidden_size: int) -> float:
    """The fine-tuning learning rate when none is given: 2e-5 for a BERT-base-wide body (768; the BERT
    paper's grid is 2e-5..5e-5), times (768 / width) ** 1.5 for a narrower one, between 1e-5 and 3e-4 (the
    top of the grid Turc et al. 2019 fine-tuned their compact BERTs with: 3e-4, 1e-4, 5e-5, 3e-5).
    bert-tiny (128) gets 2.9e-4, bert-mini (256) 1.0e-4, 512 wide 3.7e-5, bert-large (1024) 1.3e-5.
    Why: at 2e-5 a 128-wide model barely moves in 3 epochs (SST-2 8,000 rows, a pre-trained bert-tiny:
    0.736 dev accuracy at 1e-4 against 0.811 at 3e-4, 3 seeds each; docs/pretraining.md section 8)."""
    return float(f"{min(3e-4, max(1e-5, 2e-5 * (768 / hidden_size) ** 1.5)):.2g}")


# ------------------------------------------------------------------ model + tokenizer for a task

def load_tokenizer(model: str, tokenizer: str | None) -> Any:
    source = tokenizer or model
    if not tokenizer and not Path(model).is_dir():
        from lmforge.presets import PRESETS

        if model not in PRESETS:  # said before "no tokenizer", which would call it a preset
            raise CheckpointError(f"--model {model!r} is neither a model directory nor a preset (`lmforge presets` "
                                  f"lists them).{suggest(model, PRESETS)}")
    if not Path(source).is_dir():
        what = f"--tokenizer {tokenizer} is not a directory" if tokenizer else f"{model!r} is a preset, which has none"
        raise CheckpointError(f"no tokenizer: {what}; pass --tokenizer DIR (a directory with tokenizer.json, "
                              "vocab.txt or vocab.json + merges.txt)")
    from lmforge import Tokenizer

    return Tokenizer.from_pretrained(source)


def add_decoder_tokens(tokenizer: Any) -> DecoderTokens:
    """Add GPT-1's start / delimiter / extract tokens (once) and return their ids."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in DecoderTokens.NAMES if t not in vocab]
    if missing:
        # the list replaces the previous additional tokens (HF semantics): keep the ones already there
        kept = list(getattr(tokenizer, "additional_special_tokens", []))
        tokenizer.add_special_tokens({"additional_special_tokens": [*kept, *missing]})
        vocab = tokenizer.get_vocab()
    start, delimiter, extract = (vocab[t] for t in DecoderTokens.NAMES)
    return DecoderTokens(start=start, delimiter=delimiter, extract=extract)


def load_model(spec: str, task: Task, tokenizer: Any, *, from_scratch: bool = False,
               log: Log = _print) -> tuple[Any, DecoderTokens | None]:
    """The model for ``task``: its saved head when it fits, else its body + a fresh head (said once).

    A preset (or ``from_scratch``) builds fresh weights sized to the tokenizer. A causal decoder gets
    GPT-1's added tokens and a resized embedding matrix.
    """
    from lmforge import Model, ModelConfig
    from lmforge.models.hf import is_hf_dir
    from lmforge.presets import PRESETS

    path = Path(spec)
    if path.is_dir():
        hf = is_hf_dir(path)
        config = None if hf else ModelConfig.load(path)
    elif spec in PRESETS:
        config, hf, from_scratch = ModelConfig.from_preset(spec, vocab_size=len(tokenizer)), False, True
    else:
        raise CheckpointError(f"--model {spec!r} is neither a model directory nor a preset "
                              f"(`lmforge presets` lists them).{suggest(spec, PRESETS)}")
    if hf:  # converted on load (below, once); the converter keeps the body and starts a head the checkpoint lacks
        from lmforge.models.hf import get_adapter, read_hf_config

        hf_config = read_hf_config(path)
        config = get_adapter(hf_config["model_type"]).config_from_hf(hf_config, where=str(path))
    assert config is not None
    want = task.head(config)
    fits = all(getattr(config, k) == v for k, v in want.items())
    if from_scratch:
        model = Model(config.replace(**want))
        log(f"built {spec} with fresh weights and a '{want['head']}' head ({want['num_labels']} output(s))")
    elif fits:
        model = Model.from_pretrained(path)
    else:
        model = Model.from_pretrained(path, **want)
        if config.head == want["head"] and config.num_labels == want["num_labels"]:
            # same head and width, another use (a GPT-1 SWAG head, one score per ending, for STS-B, which
            # sums both orders): from_pretrained kept its classifier, but it was trained for something else
            model.head.classifier.apply(model._init_module)
        sized = config.head in ("seq-cls", "token-cls", "extract")  # heads whose width is num_labels
        saved = f"a '{config.head}' head" + (f" ({config.num_labels} output(s))" if sized else "") \
            if config.head else "no head"
        log(f"{spec} has {saved}; loaded its body and added a fresh '{want['head']}' head "
            f"({want['num_labels']} output(s)) for {task.name}")
    decoder = None
    if model.config.causal:
        decoder = add_decoder_tokens(tokenizer)
        if len(tokenizer) > model.config.vocab_size:
            model.resize_token_embeddings(len(tokenizer))
    else:  # the message suggests resize_token_embeddings (an id past the table would crash later)
        from lmforge.tokenization import check_model_vocab

        check_model_vocab(model.config.vocab_size, tokenizer, cli="pass that one with --tokenizer DIR, or leave "
                          "--tokenizer out to use the model directory's")
    return model, decoder


# ------------------------------------------------------------------ evaluation

class TaskObjective:
    """The objective-like object the trainer calls for fine-tuning: collate features and compute the
    task loss (the head's standard loss via ``labels=``), plus GPT-1's auxiliary LM loss for decoders."""

    name = "finetune"

    def __init__(self, task: Task, *, pad_id: int, decoder: DecoderTokens | None, lm_weight: float) -> None:
        self.task, self.pad_id, self.decoder, self.lm_weight = task, pad_id, decoder, lm_weight
        self.head = ""
        self.seq_len = 0

    def heads(self, config: Any) -> str:
        return str(self.task.head(config)["head"])

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        return {}

    def examples(self, features: Sequence[Feature]) -> "FeatureSet":
        return FeatureSet(features)

    def collate(self, features: Sequence[Feature]) -> dict[str, torch.Tensor]:
        return self.task.collate(features, pad_id=self.pad_id)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = model(**batch)
        loss = out.loss
        metrics = {"task_loss": loss.detach()}
        if self.decoder is not None and self.lm_weight > 0 and getattr(out, "lm_logits", None) is not None:
            from lmforge.nn.losses import causal_lm_loss

            ids = batch["input_ids"]
            labels = ids.masked_fill(batch["attention_mask"] == 0, IGNORE_INDEX)
            lm_logits = out.lm_logits
            lm = causal_lm_loss(lm_logits.reshape(-1, *lm_logits.shape[-2:]), labels.reshape(-1, labels.size(-1)))
            loss = loss + self.lm_weight * lm
            metrics["lm_loss"] = lm.detach()
        metrics["loss"] = loss.detach()
        return loss, metrics


class FeatureSet:
    """Features as the trainer's ExampleSet: example(index) is a pure function of the index."""

    def __init__(self, features: Sequence[Feature]) -> None:
        self.features = list(features)

    def __len__(self) -> int:
        return len(self.features)

    def example(self, index: int, *, seed: int = 0, epoch: int = 0) -> Feature:
        return self.features[index]


# On CPU an evaluation batch goes through the model in forwards whose largest activation (3H or F numbers a
# position) stays within this: larger blocks come from glibc as fresh mmapped pages, page-faulted and zeroed on
# every use. SQuAD's 101 dev windows (bert-mini, --eval-batch-size 64): 2.84 s a pass, ~1.9 s in forwards of
# 8-24 windows (docs/finetuning.md, "Evaluation in smaller forwards").
EVAL_CHUNK_BYTES = 16 * 2 ** 20


def _batches(features: Sequence[Feature], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Feature indices in batches of similar length (sorted by length: less padding in evaluation), at most
    ``batch_size`` features and, when given, ``max_tokens`` padded positions each (one feature at least)."""
    order = sorted(range(len(features)), key=lambda i: _length(features[i]))
    batches: list[list[int]] = []
    piece: list[int] = []
    for i in order:  # ascending: the feature added last is the longest of its batch
        if piece and (len(piece) == batch_size or (max_tokens is not None
                                                    and (len(piece) + 1) * _positions(features[i]) > max_tokens)):
            batches.append(piece)
            piece = []
        piece.append(i)
    return batches + [piece] if piece else batches


def _length(feature: Feature) -> int:
    ids = feature["input_ids"]
    return max(len(r) for r in ids) if ids and isinstance(ids[0], list) else len(ids)


def _positions(feature: Feature) -> int:
    """Padded positions of one feature in a batch of its length: rows x length (a multiple-choice one has a row
    per choice)."""
    ids = feature["input_ids"]
    return len(ids) * _length(feature) if ids and isinstance(ids[0], list) else len(ids)


def _eval_positions(model: torch.nn.Module) -> int | None:
    """Positions a CPU forward may hold under EVAL_CHUNK_BYTES (None: not an lmforge body, no limit)."""
    config = getattr(model, "config", None)
    hidden = getattr(config, "hidden_size", None)
    if not isinstance(hidden, int):
        return None
    inner = getattr(config, "intermediate_size", None) or 4 * hidden
    # activations take the floating weights' dtype (an int8-quantized model still computes in float)
    size = max((p.element_size() for p in model.parameters() if p.is_floating_point()), default=4)
    return max(1, EVAL_CHUNK_BYTES // (max(3 * hidden, inner) * size))


@torch.no_grad()
def predict(model: torch.nn.Module, task: Task, examples: Sequence[Example], features: Sequence[Feature], *,
            pad_id: int, batch_size: int = 64) -> list[Any]:
    """One prediction per example (task.postprocess of the model's outputs)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    # a [CLS] classifier: the last layer computes position 0 alone (the same logits, less work)
    first = {"first_token_only": True} if getattr(model, "reads_first_token", False) and getattr(
        model, "cls_only_last_layer", False) else {}
    outputs: list[Any] = [None] * len(features)
    max_tokens = _eval_positions(model) if device.type == "cpu" else None
    for idx in _batches(features, batch_size, max_tokens):
        batch = task.collate([features[i] for i in idx], pad_id=pad_id)
        inputs = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "start_positions", "end_positions")}
        out = model(**inputs, **first)
        for i, value in zip(idx, task.split_outputs(out, batch)):
            outputs[i] = value
    model.train(was_training)
    return task.postprocess(outputs, features, examples)


def evaluate(model: torch.nn.Module, task: Task, examples: Sequence[Example], features: Sequence[Feature], *,
             pad_id: int, batch_size: int = 64) -> tuple[list[Any], dict[str, float]]:
    predictions = predict(model, task, examples, features, pad_id=pad_id, batch_size=batch_size)
    return predictions, task.metric(predictions, examples)


# ------------------------------------------------------------------ outputs

def write_predictions(out: Path, task: Task, examples: Sequence[Example], predictions: Sequence[Any]) -> Path:
    """predictions.json (SQuAD: id -> answer) or predictions.tsv (GLUE layout: index, prediction)."""
    out.mkdir(parents=True, exist_ok=True)
    if task.kind == "span":
        path = out / "predictions.json"
        path.write_text(json.dumps({ex["id"]: task.prediction_text(p) for ex, p in zip(examples, predictions)},
                                   indent=1, ensure_ascii=False))
        return path
    path = out / "predictions.tsv"
    # the index is the file's own (GLUE test.tsv "index" column, SuperGLUE "idx"), else the row number
    lines = ["index\tprediction"] + [f"{ex['id']}\t{task.prediction_text(p)}" for ex, p in zip(examples, predictions)]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_confusion_matrix(path: Path, predictions: Sequence[int], examples: Sequence[Example],
                           labels: Sequence[str], title: str) -> None:
    from lmforge.tasks.metrics import confusion_matrix
    from lmforge.train.plot import confusion_chart

    cm = confusion_matrix(np.asarray(predictions), np.asarray([ex["label"] for ex in examples]), len(labels))
    confusion_chart(path, cm.tolist(), labels, title=title)


def task_state(task: Task) -> dict[str, Any]:
    """What task.json records so `evaluate` / `predict` rebuild the same task (labels, options)."""
    state = {"task": task.name, "labels": task.labels}
    for field in dataclasses.fields(task):  # type: ignore[arg-type]
        if field.name in ("text_column", "pair_column", "label_column", "doc_stride", "max_query_length",
                          "n_best", "max_answer_length", "null_threshold"):
            state[field.name] = getattr(task, field.name)
    return state


def task_from_state(state: dict[str, Any], name: str | None = None, **options: Any) -> Task:
    opts = {k: v for k, v in state.items() if k != "task"}
    opts.update(options)
    return get_task(name or state["task"], **opts)


def write_outputs(out: Path, task: Task, examples: Sequence[Example], predictions: Sequence[Any],
                  scores: dict[str, float], *, log: Log = _print) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(scores, indent=2) + "\n")
    write_predictions(out, task, examples, predictions)
    if task.kind == "classification" and task.labels and all(ex["label"] is not None for ex in examples):
        try:
            write_confusion_matrix(out / "confusion_matrix.png", predictions, examples, task.labels, task.name)
        except (ImportError, OSError) as err:  # a chart: the metrics and predictions above are what counts
            log(f"warning: confusion_matrix.png was not drawn ({err})")


def summarize_seeds(results: Sequence[dict[str, float]], seeds: Sequence[int]) -> dict[str, Any]:
    """Mean and sample standard deviation of every metric over seeds: {key: mean, key_std: std}."""
    out: dict[str, Any] = {"seeds": list(seeds)}
    for key in results[0]:
        values = [float(r[key]) for r in results if key in r]
        out[key] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def format_scores(scores: dict[str, Any]) -> str:
    parts = []
    for k, v in scores.items():
        if k.endswith("_std") or k == "seeds":
            continue
        std = scores.get(f"{k}_std")
        if isinstance(v, float):
            parts.append(f"{k} {v:.4f}" + (f" +- {std:.4f}" if std is not None else ""))
        else:
            parts.append(f"{k} {v}")
    return ", ".join(parts)


# ------------------------------------------------------------------ the runs

# what a fine-tuning run writes besides the model: --overwrite removes them so no stale file survives
OUTPUTS = ("metrics.json", "predictions.tsv", "predictions.json", "confusion_matrix.png", "null_odds.json",
           "task.json")
# what to do with `out` and how to show progress: not settings, never compared
ACTIONS = ("resume", "overwrite", "allow_changes", "progress", "feature_cache")


def _run_record(config: FinetuneConfig) -> dict[str, Any]:
    """The settings a resume compares (the trainer adds its TrainConfig): paths made absolute."""
    run = {k: v for k, v in dataclasses.asdict(config).items() if k not in ACTIONS}
    for name in ("model", "data", "tokenizer"):
        if run[name] is not None and Path(run[name]).exists():
            run[name] = str(Path(run[name]).resolve())
    return run


def default_max_length(task: Task) -> int:
    return 384 if task.kind == "span" else 128


def _split_suffix(i: int, split: str) -> str:
    """Metric-name suffix of the i-th evaluated split: none for the first, `_mm` for MNLI mismatched."""
    if i == 0:
        return ""
    return "_mm" if split.endswith("mismatched") else f"_{split}"


def _pad_id(tokenizer: Any) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return 0 if pad is None else int(pad)  # GPT-2 has no pad token: padded positions are masked anyway


def _featurize(task: Task, examples: Sequence[Example], tokenizer: Any, *, max_length: int,
               decoder: DecoderTokens | None, training: bool, what: str, log: Log,
               segments: bool = True, cache: Path | None = None) -> list[Feature]:
    """Features of ``examples`` (warning about truncation); ``segments=False`` drops the segment ids for a
    body with fewer than 2 segment embeddings (RoBERTa has 1): a tokenizer whose pair template numbers
    the second text 1 (a byte-level BPE one trained by lmforge) would index past that table."""
    from lmforge.tasks.cache import cached_featurize_all

    features, cut, _ = cached_featurize_all(task, examples, tokenizer, max_length=max_length, decoder=decoder,
                                            training=training, cache_dir=cache)
    if not segments:
        for f in features:
            f.pop("token_type_ids", None)
    if cut:
        log(f"warning: {cut} of {len(examples)} {what} inputs were longer than --max-length {max_length} "
            "tokens and were truncated")
    if training and len(features) < len(examples) and task.kind == "span":
        log(f"note: {len(examples) - len({f['example_index'] for f in features})} {what} question(s) without a "
            "locatable answer were skipped for training")
    return features


def train_config(config: FinetuneConfig, task: Task, *, batch_size: int, max_length: int,
                 steps_per_epoch: int, hidden_size: int = 768) -> Any:
    """The trainer's TrainConfig for a fine-tuning run: evaluate every epoch, keep the best by the
    task's metric and end with it, stop early after ``patience`` epochs without improvement.
    ``hidden_size``: the body's width, for the default lr when ``config.lr`` is None (``default_lr``)."""
    from lmforge.train import TrainConfig

    steps = config.warmup >= 1  # as pretrain's --warmup: a step count, else a fraction of the total
    return TrainConfig(
        epochs=config.epochs, max_steps=config.max_steps, batch_size=batch_size, seq_len=max_length,
        lr=config.lr if config.lr is not None else default_lr(hidden_size),
        head_lr=config.head_lr, layer_lr_decay=config.layer_lr_decay, weight_decay=config.weight_decay,
        warmup_steps=int(config.warmup) if steps else 0, warmup_ratio=0.0 if steps else config.warmup,
        seed=config.seed, eval_every_epoch=True, best_metric=task.main_metric, best_mode="max",
        patience=config.patience, load_best_at_end=True, precision=config.precision, save_every=config.save_every,
        progress=config.progress, log_every=max(1, steps_per_epoch // 4))


def _keep_if_best(kept: dict[str, Any], scores: dict[str, float], predictions: list[Any], metric: str) -> None:
    """Keep an evaluation's predictions and scores when it is the best so far by the trainer's own rule
    (``train/loop.py`` ``_evaluate``: the first strictly greater finite value of the metric)."""
    value = float(scores[metric]) if metric in scores else math.nan
    if math.isfinite(value) and ("value" not in kept or value > kept["value"]):
        kept.update(value=value, scores=dict(scores), predictions=predictions)


def _best_eval_reusable(kept: dict[str, Any], metric: str, result: Any, tc: Any, trainer: Any,
                        config: FinetuneConfig, dist: Any) -> bool:
    """Whether the model the trainer ended with is the one whose evaluation ``kept`` holds, evaluated as the
    final scoring would: a fresh run (a resumed one may have its best before the restart) that loaded the
    best model at the end, kept by the task's metric, evaluated without autocast, on one process."""
    return bool(kept.get("predictions") is not None and not config.resume and tc.load_best_at_end
                and tc.best_mode == "max" and tc.best_metric == metric
                and trainer.autocast_dtype is None and dist.world_size == 1
                and result.stopped in ("completed", "early_stopping") and result.best_step is not None
                and result.best_metric == kept["value"])


def _sparse_rows_apply(model: Any, trainer: Any, tc: Any) -> bool:
    """Whether the word table's gradient should be row-sparse: one CPU process with lmforge's AdamW (which takes
    it exactly, train/optim.py ``SparseRows``), no torch.compile, and a table no output layer shares (a tied
    decoder's dense gradient would make the whole table's gradient dense anyway)."""
    decoder = model.get_output_embeddings()
    tied = decoder is not None and decoder.weight is model.get_input_embeddings().weight
    return (trainer.device.type == "cpu" and not trainer.dist.distributed and tc.optimizer == "adamw"
            and not tc.compile and not tied)


@tears_down_process_group  # under torchrun: leave the process group on every way out
def finetune(config: FinetuneConfig, *, log: Log = _print, wrap_objective: Callable[[Any, Any], Any] | None = None,
             train_changes: dict[str, Any] | None = None) -> dict[str, float]:
    """One fine-tuning run (see the module docstring); returns the best epoch's metrics.

    ``wrap_objective(task_objective, model)`` replaces the loss (TinyBERT's task distillation, recipes/distill.py)
    and ``train_changes`` fields of the TrainConfig (e.g. no keep-best for a stage without a meaningful score)."""
    from lmforge.objectives.base import BatchSource, LengthGroupedBatchSource
    from lmforge.recipes.outputs import RUN_STATE, check_out_dir
    from lmforge.train import Trainer
    from lmforge.train import checkpoint as ckpt
    from lmforge.train.distributed import barrier, init_distributed
    from lmforge.train.loop import seed_everything

    owned = (*RUN_STATE, *OUTPUTS)
    out = check_out_dir(config.out, overwrite=config.overwrite, resume=config.resume, owned=owned, remove=False)
    seed_everything(config.seed)  # the fresh head's initialisation depends on the seed too
    task = get_task(config.task, **config.task_options)
    tokenizer = load_tokenizer(config.model, config.tokenizer)
    max_length = config.max_length or default_max_length(task)
    # the training split first: it fixes the label set of `text` and `ner`
    train_examples = task.read(config.data, config.train_split)
    for message in getattr(task, "messages", []):
        log(message)
    splits = [config.eval_split] if config.eval_split else list(task.eval_splits)
    eval_sets = {split: task.read(config.data, split) for split in splits}
    model, decoder = load_model(config.model, task, tokenizer, from_scratch=config.from_scratch, log=log)
    if model.config.quantization is not None:  # int8 / bf16 weights from `lmforge compress` are for inference
        raise ConfigError(f"{config.model} is quantized ({model.config.quantization['method']}); fine-tune the float "
                          "model, then compress it (lmforge evaluate / predict run quantized models).")
    pad_id = _pad_id(tokenizer)
    if config.lr is None:  # one default that suits tiny and base models alike (default_lr)
        config = dataclasses.replace(config, lr=default_lr(model.config.hidden_size))
        log(f"learning rate {config.lr:g} (the default for a {model.config.hidden_size}-wide body; --lr to set)")
    segments = model.config.type_vocab_size > 1
    model.body.padding_free = config.padding_free
    model.cls_only_last_layer = config.cls_only
    cache = None
    if config.feature_cache:
        from lmforge.tasks.cache import cache_dir_for

        cache = cache_dir_for(config.data)
    train_features = _featurize(task, train_examples, tokenizer, max_length=max_length, decoder=decoder,
                                training=True, what=config.train_split, log=log, segments=segments, cache=cache)
    eval_features = {split: _featurize(task, exs, tokenizer, max_length=max_length, decoder=decoder,
                                       training=False, what=split, log=log, segments=segments, cache=cache)
                     for split, exs in eval_sets.items()}
    batch_size = min(config.batch_size, len(train_features))
    objective = TaskObjective(task, pad_id=pad_id, decoder=decoder, lm_weight=config.lm_weight)
    if wrap_objective is not None:
        objective = wrap_objective(objective, model)
    dist = init_distributed(config.device)  # under torchrun each process trains on its slice of each batch
    # everything is read and checked: only now does --overwrite remove the previous run's files
    check_out_dir(out, overwrite=config.overwrite, resume=config.resume, owned=owned, remove=dist.is_main)
    barrier(dist)
    # one process: every example every epoch, the last smaller batch kept (small GLUE sets have few
    # batches); several: equal shapes on every rank, so the last partial global batch is dropped
    layout = dict(batch_size=batch_size, seed=config.seed, rank=dist.rank, world_size=dist.world_size,
                  drop_last=dist.world_size > 1)
    if config.group_by_length:  # every example once per epoch, less padding (objectives/base.py)
        source = LengthGroupedBatchSource(objective, train_features, lengths=[_length(f) for f in train_features],
                                          **layout)
    else:
        source = BatchSource(objective, train_features, **layout)
    tc = train_config(config, task, batch_size=batch_size, max_length=max_length, steps_per_epoch=len(source))
    if train_changes:
        tc = dataclasses.replace(tc, **train_changes)

    best_eval: dict[str, Any] = {}  # the best evaluation's outputs, so the end need not score the best model again

    def evaluate_all(m: torch.nn.Module) -> dict[str, float]:
        scores: dict[str, float] = {}
        first: list[Any] = []
        for i, (split, exs) in enumerate(eval_sets.items()):
            p, s = evaluate(m, task, exs, eval_features[split], pad_id=pad_id, batch_size=config.eval_batch_size)
            first = p if i == 0 else first
            scores.update({f"{k}{_split_suffix(i, split)}": v for k, v in s.items()})
        _keep_if_best(best_eval, scores, first, task.main_metric)
        return scores

    state = {**task_state(task), "max_length": max_length}

    def save_task(directory: Path) -> None:
        (directory / "task.json").write_text(json.dumps(state, indent=2) + "\n")

    log(f"fine-tuning on {len(train_examples)} {config.train_split} examples ({len(train_features)} features), "
        f"evaluating on {', '.join(f'{s} ({len(e)})' for s, e in eval_sets.items())} every epoch; keeping the "
        f"best by {task.main_metric}")
    trainer = Trainer(model, objective, source, tc, out_dir=out, evaluate=evaluate_all,
                      tokenizer=tokenizer, save_extra=save_task, dist=dist, run_config=_run_record(config))
    word = model.get_input_embeddings()
    word.sparse = config.sparse_rows and _sparse_rows_apply(model, trainer, tc)
    try:
        result = trainer.train(resume=config.resume, allow_changes=config.allow_changes)
    finally:
        word.sparse = False  # the model leaves as it came (a sparse gradient needs SparseRows' optimizer)
    if result.stopped == "already_complete":
        if (out / "metrics.json").is_file():  # nothing to do: its scores as written
            return json.loads((out / "metrics.json").read_text())
        # trained, but stopped before its outputs were written: score the saved model and write them
        ckpt.load_weights(model, out / ckpt.WEIGHTS_FILE)
    if result.stopped == "early_stopping":
        log(f"stopped early at step {result.step} of {result.total_steps}")

    # the model now holds the best epoch's weights: its evaluation's outputs when this run made it, else
    # score it once more; then write the outputs
    model = trainer.model
    first = splits[0]
    if _best_eval_reusable(best_eval, task.main_metric, result, tc, trainer, config, dist):
        predictions, scores = best_eval["predictions"], dict(best_eval["scores"])
    else:
        predictions, scores = evaluate(model, task, eval_sets[first], eval_features[first], pad_id=pad_id,
                                       batch_size=config.eval_batch_size)
        for i, split in enumerate(splits[1:], 1):
            _, more = evaluate(model, task, eval_sets[split], eval_features[split], pad_id=pad_id,
                               batch_size=config.eval_batch_size)
            scores.update({f"{k}{_split_suffix(i, split)}": v for k, v in more.items()})
    if not dist.is_main:
        return scores
    if task.kind == "span" and "best_f1_thresh" in scores:
        # v2: predict with the null-score threshold that was best on this dev set
        state["null_threshold"] = task.tuned_threshold(scores, predictions)  # type: ignore[attr-defined]
        save_task(out)
        (out / "null_odds.json").write_text(json.dumps(
            {ex["id"]: p["null_odds"] for ex, p in zip(eval_sets[first], predictions)}, indent=1))
    write_outputs(out, task, eval_sets[first], predictions, scores, log=log)
    return scores


@tears_down_process_group  # one process group for all the seeds' runs
def finetune_seeds(config: FinetuneConfig, seeds: Sequence[int], *, log: Log = _print) -> dict[str, Any]:
    """One run per seed in OUT/seed-S; OUT/metrics.json holds the mean and std of every metric."""
    from lmforge.recipes.outputs import check_out_dir

    # the rule applies to OUT as a whole; each seed's run then checks (or clears) its own folder
    check_out_dir(config.out, overwrite=config.overwrite, resume=config.resume, remove=False)
    results = []
    for seed in seeds:
        log(f"--- seed {seed}")
        run = dataclasses.replace(config, seed=seed, out=str(Path(config.out) / f"seed-{seed}"))
        scores = finetune(run, log=log)
        log(f"seed {seed}: {format_scores(scores)}")
        results.append(scores)
    summary = summarize_seeds(results, seeds)
    Path(config.out).mkdir(parents=True, exist_ok=True)
    path, text = Path(config.out) / "metrics.json", json.dumps(summary, indent=2) + "\n"
    if not path.is_file() or path.read_text() != text:  # a resume of finished runs touches nothing
        path.write_text(text)
    return summary


def _load_for_inference(model_dir: str, *, task: str | None, tokenizer: str | None, max_length: int | None,
                        device: str | None, task_options: dict[str, Any], log: Log) -> tuple[Task, Any, Any, DecoderTokens | None, int]:
    path = Path(model_dir)
    state_file = path / "task.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else None
    if state is not None and (task is None or task == state["task"]):
        the_task = task_from_state({k: v for k, v in state.items() if k != "max_length"}, **task_options)
    elif task is not None:
        the_task = get_task(task, **task_options)
    else:
        raise CheckpointError(f"{path} has no task.json (it was not fine-tuned by lmforge); pass --task")
    tok = load_tokenizer(model_dir, tokenizer)
    if the_task.labels is None and the_task.kind in ("classification", "tagging"):
        raise CheckpointError(f"task {the_task.name} learns its labels from the training data; evaluate a "
                              "model fine-tuned by lmforge (its task.json holds them)")
    model, decoder = load_model(model_dir, the_task, tok, log=log)
    check_device(model.config, resolve_device(device))  # an int8 model from `lmforge compress`: CPU only
    model.body.padding_free = True  # same outputs at every real position, less work (nn/attention/unpadded.py)
    model.to(resolve_device(device))
    length = max_length or (state or {}).get("max_length") or default_max_length(the_task)
    return the_task, tok, model, decoder, int(length)


def evaluate_dir(model_dir: str, *, task: str | None, data: str, split: str | None = None, out: str | None = None,
                 tokenizer: str | None = None, max_length: int | None = None, batch_size: int = 64,
                 device: str | None = None, task_options: dict[str, Any] | None = None,
                 log: Log = _print, overwrite: bool = False) -> dict[str, float]:
    """`lmforge evaluate`: metrics of a fine-tuned model on one split (and outputs in ``out``)."""
    from lmforge.recipes.outputs import check_out_dir

    if out:
        check_out_dir(out, overwrite=overwrite)
    the_task, tok, model, decoder, length = _load_for_inference(
        model_dir, task=task, tokenizer=tokenizer, max_length=max_length, device=device,
        task_options=task_options or {}, log=log)
    split = split or the_task.eval_splits[0]
    examples = the_task.read(data, split)
    features = _featurize(the_task, examples, tok, max_length=length, decoder=decoder, training=False,
                          what=split, log=log, segments=model.config.type_vocab_size > 1)
    predictions, scores = evaluate(model, the_task, examples, features, pad_id=_pad_id(tok), batch_size=batch_size)
    if out:
        write_outputs(Path(out), the_task, examples, predictions, scores, log=log)
    return scores


def predict_dir(model_dir: str, *, task: str | None, data: str, split: str = "test", out: str,
                tokenizer: str | None = None, max_length: int | None = None, batch_size: int = 64,
                device: str | None = None, task_options: dict[str, Any] | None = None,
                log: Log = _print, overwrite: bool = False) -> tuple[Path, int]:
    """`lmforge predict`: predictions.tsv / predictions.json for one split (labels not needed)."""
    from lmforge.recipes.outputs import check_out_dir

    check_out_dir(out, overwrite=overwrite)
    the_task, tok, model, decoder, length = _load_for_inference(
        model_dir, task=task, tokenizer=tokenizer, max_length=max_length, device=device,
        task_options=task_options or {}, log=log)
    examples = the_task.read(data, split)
    features = _featurize(the_task, examples, tok, max_length=length, decoder=decoder, training=False,
                          what=split, log=log, segments=model.config.type_vocab_size > 1)
    predictions = predict(model, the_task, examples, features, pad_id=_pad_id(tok), batch_size=batch_size)
    return write_predictions(Path(out), the_task, examples, predictions), len(predictions)


__all__ = ["FinetuneConfig", "TaskObjective", "evaluate", "predict", "load_model", "load_tokenizer",
           "add_decoder_tokens", "write_outputs", "summarize_seeds", "finetune", "finetune_seeds"]
