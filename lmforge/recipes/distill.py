"""`lmforge distill`: a smaller student from a trained teacher on the pre-training shards, with the
``distilbert``, ``tinybert`` or ``logits`` recipe (the losses: ``lmforge.objectives.distill``).

    from lmforge.recipes.distill import DistillConfig, distill
    from lmforge.train import TrainConfig
    distill(DistillConfig(teacher="runs/bert", data="shards", out="runs/student", train=TrainConfig(max_steps=500)))

The run is an ordinary Trainer run: progress, metrics.jsonl with each loss term, atomic checkpoints,
bitwise ``resume``; a resume with other recipe settings is refused (all differences listed). The student is
saved as an ordinary lmforge model directory with the shards' tokenizer (``lmforge export`` writes a
6-layer BERT student without segments as HF DistilBERT). docs/distillation.md has the formulas and a
worked example.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lmforge.errors import ConfigError
from lmforge.train.config import TrainConfig
from lmforge.train.distributed import tears_down_process_group

Log = Callable[[str], None]
STUDENT_INITS = ("auto", "teacher", "random")
# published defaults per recipe (distilbert: the training command of HF's distillation README)
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "distilbert": dict(temperature=2.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0),
    "logits": dict(temperature=2.0, alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=0.0),
    "tinybert": dict(temperature=1.0, alpha_ce=0.0, alpha_mlm=0.0, alpha_cos=0.0),
}


@dataclass
class DistillConfig:
    """Who teaches whom on what; the training knobs (steps, batch, lr, checkpoints ...) live in ``train``."""

    teacher: str | None = None  # a trained model directory (lmforge or HF) with an mlm / clm head
    data: str | None = None  # the shard directory `lmforge prepare` wrote (with the teacher's tokenizer)
    out: str | None = None  # output directory (student model, checkpoints/, metrics.jsonl, loss.png)
    student: str | None = None  # preset | ModelConfig .yaml/.json | model dir; None: the teacher with half its layers
    recipe: str = "distilbert"  # distilbert | tinybert | logits
    student_layers: int | None = None  # the student's depth (overrides the preset / config / default)
    layer_map: list[int] | None = None  # student layer i starts from teacher layer layer_map[i] (init from teacher)
    student_init: str = "auto"  # auto (teacher when the widths match, except tinybert) | teacher | random
    temperature: float | None = None  # None: the recipe's default (2.0)
    alpha_ce: float | None = None  # weight of T^2 KL (5.0)
    alpha_mlm: float | None = None  # weight of the hard MLM / CLM loss (2.0)
    alpha_cos: float | None = None  # weight of the cosine loss (distilbert 1.0, else 0)
    ce_positions: str = "masked"  # KL rows: masked tokens, or "all" real tokens
    mask_prob: float | None = None  # MLM masking rate (0.15)
    cache_topk: int | None = None  # logits recipe, causal teacher: cache its top-k logits per position once (OUT/teacher-topk)
    val_batches: int = 20  # validation batches per evaluation (0 = none)
    task: str | None = None  # tinybert task distillation: a task name (lmforge.tasks.TASKS); then no ``data``
    task_data: str | None = None  # the task's data directory
    task_epochs: float = 10.0  # task stage 1 (intermediate layers) epochs (TinyBERT's README: 10 on GLUE)
    pred_epochs: float = 3.0  # task stage 2 (prediction layer) epochs (TinyBERT's README: 3)
    device: str | None = None  # "cpu" / "cuda"; default: CUDA when available
    resume: bool = False  # continue from the newest checkpoint in ``out``
    overwrite: bool = False  # start over in a non-empty ``out``
    allow_changes: bool = False  # resume with other settings than the saved run's
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=1000))  # the training loop's knobs

    def __post_init__(self) -> None:
        for name in ("teacher", "out", *(("task_data",) if self.task else ("data",))):
            if not getattr(self, name):
                raise ConfigError(f"--{name.replace('_', '-')} is required" + (" with --task" if self.task else ""))
        if self.task and self.recipe != "tinybert":
            raise ConfigError(f"task distillation (--task) is TinyBERT's second step; use --recipe tinybert (the "
                              f"{self.recipe} recipe distils on pre-training shards, then `lmforge finetune` the student)")
        if self.student_init not in STUDENT_INITS:
            raise ConfigError(f"--student-init must be one of {', '.join(STUDENT_INITS)}, got {self.student_init!r}")

    def loss(self) -> Any:
        """The DistillLoss: the recipe's defaults where a weight was not given."""
        from lmforge.objectives.distill import RECIPES, DistillLoss

        if self.recipe not in RECIPES:
            from lmforge.errors import suggest

            raise ConfigError(f"unknown --recipe {self.recipe!r}; choose one of {', '.join(RECIPES)}."
                              + suggest(self.recipe, RECIPES))
        given = {k: getattr(self, k) for k in ("temperature", "alpha_ce", "alpha_mlm", "alpha_cos")}
        if self.recipe == "tinybert" and any(v is not None for v in given.values()):
            raise ConfigError("the tinybert recipe's general distillation has no temperature or alpha weights (its "
                              "attention and hidden-state losses are summed unweighted); drop those flags")
        values = {k: v if v is not None else RECIPE_DEFAULTS[self.recipe][k] for k, v in given.items()}
        return DistillLoss(recipe=self.recipe, ce_positions=self.ce_positions, **values)


def _student_config(config: DistillConfig, teacher_config: Any, log: Log) -> tuple[Any, str]:
    """The student's ModelConfig and how it was given ("default" | "preset" | "file" | "dir")."""
    from lmforge import PRESETS, ModelConfig
    from lmforge.train.config import load_yaml

    spec = config.student
    vocab = teacher_config.vocab_size
    if spec is None:
        if config.recipe == "tinybert":
            raise ConfigError("the tinybert recipe needs --student (a narrower preset or config: TinyBERT students "
                              "are another width, with the teacher's number of heads)")
        layers = config.student_layers or max(1, teacher_config.num_layers // 2)
        student = teacher_config.replace(num_layers=layers, num_layer_groups=None)
        if teacher_config.family == "bert" and teacher_config.embed_size == teacher_config.hidden_size:
            # DistilBERT: BERT without segment embeddings and pooler, a ReLU classifier on the first token
            student = student.replace(family="distilbert", type_vocab_size=0, pooler=False,
                                      classifier_activation="relu", classifier_dropout=0.2)
        return student, "default"
    path = Path(spec)
    if path.is_dir():
        from lmforge.config import CONFIG_NAME

        saved = ModelConfig.load(path) if (path / CONFIG_NAME).is_file() else None
        if saved is None:
            raise ConfigError(f"--student {path} holds no {CONFIG_NAME}; give a model directory, a preset or a config")
        if saved.vocab_size != vocab:
            raise ConfigError(f"the teacher has a vocabulary of {vocab:,} ids and the student in {path} "
                              f"{saved.vocab_size:,}; distillation compares their distributions id by id, so both "
                              "must use the same tokenizer")
        return saved, "dir"
    if path.suffix in (".yaml", ".yml", ".json"):
        if not path.is_file():
            raise ConfigError(f"student config file not found: {path}")
        data = json.loads(path.read_text(encoding="utf-8")) if path.suffix == ".json" else load_yaml(path)
        if "vocab_size" in data and data["vocab_size"] != vocab:
            raise ConfigError(f"the teacher has a vocabulary of {vocab:,} ids and the student config {path} says "
                              f"{data['vocab_size']:,}; drop vocab_size from it (the student takes the teacher's)")
        base = data.pop("preset", None)
        student = ModelConfig.from_preset(base, **data) if base is not None else ModelConfig.from_dict(data)
        how = "file"
    elif spec in PRESETS:
        student = ModelConfig.from_preset(spec)
        how = "preset"
    else:
        from lmforge.errors import suggest

        raise ConfigError(f"--student {spec!r} is neither a preset, a config file nor a model directory."
                          + suggest(spec, PRESETS) + " See `lmforge presets`.")
    specials = {k: getattr(teacher_config, k) for k in ("pad_token_id", "bos_token_id", "eos_token_id")}
    student = student.replace(vocab_size=vocab, **specials)
    if config.student_layers:
        student = student.replace(num_layers=config.student_layers)
    return student, how


def build_student(config: DistillConfig, teacher: Any, *, head: str, log: Log) -> tuple[Any, list[int] | None]:
    """The student model (head ``head``), initialised from the teacher where the recipe says; returns it and
    the layer map used (None for a random init or a student directory's own weights)."""
    from lmforge import Model
    from lmforge.objectives.distill import check_layer_map, distilbert_layer_map, init_from_teacher

    student_config, how = _student_config(config, teacher.config, log)
    if how == "dir":
        if config.student_layers or config.layer_map:
            raise ConfigError("--student-layers and --layer-map shape a new student; a student directory keeps its "
                              "own depth and weights")
        return Model.from_pretrained(Path(str(config.student)), head=head), None
    student = Model(student_config.replace(head=head))
    init = config.student_init
    if init == "auto":
        same_width = student_config.hidden_size == teacher.config.hidden_size and \
            student_config.embed_size == teacher.config.embed_size
        init = "teacher" if same_width and config.recipe != "tinybert" else "random"
    if init == "random":
        if config.layer_map:
            raise ConfigError("--layer-map says which teacher layer each student layer starts from; it needs "
                              "--student-init teacher")
        log(f"student: {student_config.num_layers} layers of {student_config.hidden_size}, random init")
        return student, None
    t_layers, s_layers = teacher.config.num_stored_layers, student.config.num_stored_layers
    layer_map = (check_layer_map(config.layer_map, teacher_layers=t_layers, student_layers=s_layers)
                 if config.layer_map else distilbert_layer_map(t_layers, s_layers))
    pairs = init_from_teacher(student, teacher, layer_map)
    log(f"student: {s_layers} layers of {student_config.hidden_size} from teacher layers {layer_map} "
        f"({len(pairs)} tensors copied)")
    return student, layer_map


def _run_record(config: DistillConfig, loss: Any, train_set: Any, layer_map: list[int] | None) -> dict[str, Any]:
    """The settings a resume compares: the recipe and its resolved weights, both models, the data."""
    run = {"teacher": config.teacher, "student": config.student, "data": config.data, **dataclasses.asdict(loss),
           "student_layers": config.student_layers, "layer_map": layer_map, "student_init": config.student_init,
           "mask_prob": config.mask_prob, "val_batches": config.val_batches, "cache_topk": config.cache_topk}
    for name in ("teacher", "student", "data"):
        if run[name] is not None and Path(str(run[name])).exists():
            run[name] = str(Path(str(run[name])).resolve())
    run["data_tokenizer_hash"] = train_set.tokenizer_hash
    run["data_train_tokens"] = train_set.num_tokens
    return run


def evaluator(objective: Any, source: Any, *, device: Any, max_batches: int) -> Callable[[Any], dict[str, float]]:
    """Validation: every loss term of the recipe (and the student's agreement with the teacher) on the first
    ``max_batches`` validation batches, the same ones at every evaluation."""
    from lmforge.objectives.base import COUNT_METRICS, reduce_metrics
    from lmforge.train.loop import to_device

    n = min(max_batches, source.steps_per_epoch)

    def evaluate(model: Any) -> dict[str, float]:
        items = [objective.loss(model, to_device(source.batch(0, i), device))[1] for i in range(n)]
        return {k: v for k, v in reduce_metrics(items).items() if k not in COUNT_METRICS}

    return evaluate


CACHE_DIR = "teacher-topk"


def _cache(config: DistillConfig, teacher: Any, windows: Any, train_set: Any, *, log: Log) -> Any:
    """OUT/teacher-topk for this teacher (path, size and time of its weights) and these shards."""
    from lmforge.objectives.distill import TopKCache

    weights = Path(str(config.teacher)) / "model.safetensors"
    stat = weights.stat() if weights.is_file() else None
    identity = {"teacher": str(Path(str(config.teacher)).resolve()), "teacher_bytes": stat.st_size if stat else None,
                "teacher_mtime_ns": stat.st_mtime_ns if stat else None, "data_tokenizer_hash": train_set.tokenizer_hash,
                "data_train_tokens": train_set.num_tokens}
    return TopKCache.open_or_build(Path(str(config.out)) / CACHE_DIR, teacher, windows, k=int(config.cache_topk),
                                   identity=identity, batch_size=config.train.batch_size, log=log)


def load_teacher(path: str) -> Any:
    from lmforge import Model

    teacher_dir = Path(path)
    if not teacher_dir.is_dir():
        raise ConfigError(f"--teacher {teacher_dir} is not a model directory; give a trained model (the --out of "
                          "`lmforge pretrain`, or an HF directory)")
    return Model.from_pretrained(teacher_dir)


class TaskDistillation:
    """TinyBERT's task-specific distillation on fine-tuning batches (task_distill.py): stage "intermediate" =
    the attention-score and projected hidden-state losses of general distillation; stage "prediction" = soft
    cross-entropy to the fine-tuned teacher's logits at ``temperature`` (1), or, for a regression task, MSE to
    the gold scores as the reference does. Collation is the fine-tuning objective's."""

    name = "distill-task"

    def __init__(self, base: Any, teacher: Any, student: Any, *, stage: str, temperature: float = 1.0) -> None:
        from lmforge.objectives.distill import DistillLoss, Distillation

        self.base, self.teacher, self.stage, self.temperature = base, teacher, stage, temperature
        self.head, self.seq_len = base.head, base.seq_len
        # the general recipe's checks, maps and projection (the task batch replaces the MLM batch)
        self.inner = Distillation(SimpleNamespace(head=base.head, seq_len=0), teacher, DistillLoss(recipe="tinybert"),
                                  student_config=student.config)
        if stage == "prediction" and teacher.config.num_labels != student.config.num_labels:
            raise ConfigError(f"the teacher predicts {teacher.config.num_labels} label(s), the student "
                              f"{student.config.num_labels}; both must be heads of the same task")

    def heads(self, config: Any) -> str:
        return self.base.heads(config)

    def extra_modules(self) -> dict[str, Any]:
        return self.inner.extra_modules() if self.stage == "intermediate" else {}

    def examples(self, features: Any) -> Any:
        return self.base.examples(features)

    def collate(self, features: Any) -> Any:
        return self.base.collate(features)

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        import torch

        from lmforge.nn import losses
        from lmforge.objectives.distill import tinybert_terms

        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if next(self.teacher.parameters()).device != batch["input_ids"].device:
            self.teacher.to(batch["input_ids"].device)
        self.teacher.eval()
        if self.stage == "intermediate":
            kw = {"output_hidden_states": True, "output_attentions": "scores"}
            s = model(**inputs, **kw)
            with torch.no_grad():
                t = self.teacher(**inputs, **kw)
            att, hidden = tinybert_terms(s, t, att_map=self.inner.att_map, hidden_map=self.inner.hidden_map,
                                         projection=self.inner.projection, key_padding=batch.get("attention_mask"))
            loss = att + hidden
            return loss, {"loss": loss.detach(), "att_loss": att.detach(), "hidden_loss": hidden.detach()}
        s = model(**inputs).logits  # (B, C)
        if s.size(-1) == 1:  # regression: MSE to the gold scores (task_distill.py)
            loss = losses.sequence_classification_loss(s, batch["labels"])
        else:
            with torch.no_grad():
                t = self.teacher(**inputs).logits
            loss = losses.soft_cross_entropy(s, t, temperature=self.temperature)
        return loss, {"loss": loss.detach(), "pred_loss": loss.detach()}


def distill_task(config: DistillConfig, *, log: Log) -> dict[str, float]:
    """TinyBERT's task distillation: stage 1 (intermediate layers, ``task_epochs``) into OUT/intermediate,
    then stage 2 (prediction layer, ``pred_epochs``) into OUT/prediction (the student to use), each a fine-tuning run of the student with
    the teacher's loss in place of the task loss. Returns the final student's scores on the dev split."""
    from lmforge.recipes.finetune import FinetuneConfig, finetune

    teacher = load_teacher(str(config.teacher))
    task_file = Path(str(config.teacher)) / "task.json"
    saved_task = json.loads(task_file.read_text()).get("task") if task_file.is_file() else None
    if saved_task != config.task:
        what = f"was fine-tuned on {saved_task}" if saved_task else "was not fine-tuned on a task (no task.json)"
        raise ConfigError(f"task distillation needs a teacher fine-tuned on {config.task}, and {config.teacher} "
                          f"{what}; fine-tune it first (`lmforge finetune --task {config.task} ...`) and pass that "
                          "directory as --teacher")
    if not config.student or not Path(config.student).is_dir():
        raise ConfigError("task distillation starts from a student directory (the --out of the general tinybert "
                          f"run); got --student {config.student}")
    out, train = Path(str(config.out)), config.train
    common = dict(task=config.task, data=str(config.task_data), lr=train.lr, batch_size=train.batch_size,
                  max_length=train.seq_len, seed=train.seed, warmup=train.warmup_ratio or train.warmup_steps,
                  device=config.device, progress=train.progress, overwrite=config.overwrite, resume=config.resume,
                  allow_changes=config.allow_changes)
    stages = (("intermediate", str(config.student), out / "intermediate", config.task_epochs),
              ("prediction", str(out / "intermediate"), out / "prediction", config.pred_epochs))
    scores: dict[str, float] = {}
    for stage, model, where, epochs in stages:
        log(f"tinybert task distillation, stage {'1: intermediate layers' if stage == 'intermediate' else '2: prediction layer'}"
            f" ({epochs:g} epochs) -> {where}")

        def wrap(base: Any, student: Any, stage: str = stage) -> TaskDistillation:
            return TaskDistillation(base, teacher, student, stage=stage)

        # stage 1 has no meaningful score (the classifier is not trained yet): keep its last epoch
        changes = {"best_metric": None, "load_best_at_end": False, "patience": None} if stage == "intermediate" else None
        scores = finetune(FinetuneConfig(model=model, out=str(where), epochs=epochs, **common), log=log,
                          wrap_objective=wrap, train_changes=changes)
    return scores


@tears_down_process_group  # under torchrun: leave the process group on every way out
def distill(config: DistillConfig, *, log: Log | None = None) -> Any:
    """Distil as ``config`` says; writes the student, tokenizer, metrics.jsonl and loss.png to ``out``.
    Returns the Trainer's TrainResult."""
    from lmforge.data.shards import ShardDataset
    from lmforge.objectives import BatchSource, build_objective
    from lmforge.objectives.distill import Distillation
    from lmforge.objectives.mlm import MaskingConfig
    from lmforge.recipes.outputs import RUN_STATE, check_out_dir
    from lmforge.recipes.pretrain import _train_set, check_model_tokenizer
    from lmforge.train import Trainer
    from lmforge.train.distributed import init_distributed
    from lmforge.train.loop import seed_everything

    info = init_distributed(config.device)
    if log is None:
        def log(message: str) -> None:
            if info.is_main:
                print(message, flush=True)
    if config.task:
        return distill_task(config, log=log)
    loss = config.loss()
    out, train = Path(str(config.out)), config.train
    owned = (*RUN_STATE, CACHE_DIR, CACHE_DIR + ".tmp")
    check_out_dir(out, overwrite=config.overwrite, resume=config.resume, owned=owned, remove=False)
    train_set, tokenizer = _train_set(SimpleNamespace(data=config.data, tokenizer=None))
    teacher = load_teacher(str(config.teacher))
    check_model_tokenizer(SimpleNamespace(model=config.teacher, data=config.data), train_set, log=log)
    if teacher.config.vocab_size != len(tokenizer):
        raise ConfigError(f"the teacher has a vocabulary of {teacher.config.vocab_size:,} ids and the shards' "
                          f"tokenizer {len(tokenizer):,}; make the shards with the teacher's tokenizer")
    name = "clm" if teacher.config.causal else "mlm"
    if loss.recipe != "tinybert" and teacher.config.head not in ({"clm"} if name == "clm" else {"mlm", "pretraining"}):
        raise ConfigError(f"the {loss.recipe} recipe distils the teacher's {name.upper()} predictions, and the teacher "
                          f"in {config.teacher} has the {teacher.config.head!r} head; give the pre-trained checkpoint "
                          f"(with its {name} head) as --teacher")
    masking = MaskingConfig(mask_prob=config.mask_prob) if config.mask_prob is not None and name == "mlm" else None
    base = build_objective(name, tokenizer=tokenizer, seq_len=train.seq_len, masking=masking)
    seed_everything(train.seed)
    student, layer_map = build_student(config, teacher, head=base.head, log=log)
    if config.cache_topk and (loss.recipe != "logits" or name != "clm"):
        raise ConfigError("cached teacher logits (--cache-topk) are for --recipe logits with a causal teacher: its "
                          "windows are the same every epoch, while MLM masks change")
    objective = Distillation(base, teacher, loss, student_config=student.config)
    if loss.recipe == "tinybert":
        log(f"tinybert: attention map {objective.att_map}, hidden-state map {objective.hidden_map} (0 = embeddings), "
            f"projection {student.config.hidden_size} -> {teacher.config.hidden_size}")
    longest = min(student.config.max_length, teacher.config.max_length)
    if train.seq_len > longest:
        raise ConfigError(f"--seq-len {train.seq_len} is longer than the {longest} positions the teacher and student "
                          "both have; lower --seq-len")
    source = BatchSource(objective, train_set, batch_size=train.batch_size, seed=train.seed, rank=info.rank,
                         world_size=info.world_size)
    evaluate = None
    if config.val_batches > 0 and "val" in train_set.meta.get("splits", {}):
        val = BatchSource(objective, ShardDataset(Path(str(config.data)), "val"), batch_size=train.batch_size,
                          seed=train.seed, shuffle=False)
        evaluate = evaluator(objective, val, device=info.device, max_batches=config.val_batches)
    t_params, s_params = teacher.num_parameters(), student.num_parameters()
    weights = "" if loss.recipe == "tinybert" else (f": {loss.alpha_ce:g} x T^2 KL (T={loss.temperature:g}) + "
                                                    f"{loss.alpha_mlm:g} x {name} + {loss.alpha_cos:g} x cos")
    log(f"distill {loss.recipe}{weights}; teacher {t_params:,} parameters -> student {s_params:,} "
        f"({s_params / t_params:.0%}), {train_set.num_tokens:,} tokens")
    check_out_dir(out, overwrite=config.overwrite, resume=config.resume, owned=owned, remove=info.is_main)
    if config.cache_topk:
        objective.cache = _cache(config, teacher.to(info.device), base.examples(train_set), train_set, log=log)
        source = BatchSource(objective, train_set, batch_size=train.batch_size, seed=train.seed, rank=info.rank,
                             world_size=info.world_size)  # the examples now carry their window (cache row)
    trainer = Trainer(student, objective, source, train, out_dir=out, evaluate=evaluate, tokenizer=tokenizer,
                      dist=info, run_config=_run_record(config, loss, train_set, layer_map))
    result = trainer.train(resume=config.resume, allow_changes=config.allow_changes)
    if result.stopped != "already_complete":
        log(f"done: {result.step} steps; student, tokenizer, metrics.jsonl and loss.png in {out}")
    return result


__all__ = ["DistillConfig", "RECIPE_DEFAULTS", "build_student", "distill", "load_teacher"]
