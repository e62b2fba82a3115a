"""Pre-training on prepared shards with clm / mlm / mlm+nsp / mlm+sop / rtd (ELECTRA): ``PretrainConfig`` and
``pretrain()``.

    from lmforge.recipes.pretrain import PretrainConfig, pretrain
    from lmforge.train import TrainConfig
    pretrain(PretrainConfig(model="bert-tiny", data="shards", out="runs/bert", train=TrainConfig(max_steps=100)))

``resolve_config`` layers the options as `lmforge pretrain` does: TrainConfig defaults < a YAML file <
options given explicitly. Runs unchanged under ``torchrun --nproc_per_node N``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, DataError, suggest
from lmforge.train.config import TrainConfig, load_yaml
from lmforge.train.distributed import tears_down_process_group

Log = Callable[[str], None]


@dataclass
class PretrainConfig:
    """What to train on what; the training knobs (steps, batch, lr, checkpoints ...) live in ``train``."""

    model: str | None = None  # a preset name, a ModelConfig file (.yaml / .json) or a model directory
    objective: str = "mlm"  # clm | mlm | mlm+nsp | mlm+sop | rtd (alias electra)
    recipe: str | None = None  # "budget" / "budget-hf": Cramming's settings for small budgets (recipes/budget.py)
    data: str | None = None  # a shard directory written by `lmforge prepare`
    out: str | None = None  # output directory (final model, checkpoints/, metrics.jsonl, loss.png)
    tokenizer: str | None = None  # optional: check the shards against it too (a model dir's own is always checked)
    val_batches: int = 20  # validation batches per evaluation (0 switches validation off)
    mask_prob: float | None = None  # MLM: fraction of tokens selected (default 0.15)
    masking: str | None = None  # MLM: "dynamic" (RoBERTa) or "static" (BERT); default per objective
    whole_word: bool | None = None  # MLM: mask whole words
    dupe_factor: int | None = None  # static masking: masked copies of the data
    ngram: int | None = None  # MLM: mask spans of up to N words, p(n) ~ 1/n (ALBERT; default 3 for mlm+sop, else 1)
    generator_size: float | None = None  # rtd: generator hidden = this x the discriminator's (0.25; base 1/3)
    gen_weight: float | None = None  # rtd: weight of the generator's MLM loss (1.0)
    disc_weight: float | None = None  # rtd: weight of the discriminator's loss (50.0)
    device: str | None = None  # "cpu" / "cuda"; default: CUDA when available
    resume: bool = False  # continue from the newest checkpoint in ``out``
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_steps=1000))  # the training loop's knobs
    dry_run: bool = False  # print the resolved configuration and return without training
    overwrite: bool = False  # start over in a non-empty ``out`` (a previous run's checkpoints and metrics are removed)
    allow_changes: bool = False  # resume with settings that differ from the saved run's (otherwise refused)

    def __post_init__(self) -> None:
        for name in ("model", "data", "out"):
            if not getattr(self, name):
                raise ConfigError(f"--{name} is required (on the command line or in the --config file)")

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping `--dry-run` prints (the run options, resume, then every TrainConfig field)."""
        run = {name: getattr(self, name) for name in RUN_KEYS}
        return {**run, "resume": self.resume, **self.train.to_dict()}


# what to do with --out rather than settings of the run: never saved, never compared on resume
ACTIONS = ("resume", "overwrite", "allow_changes")
# the options a YAML file or a flag may set besides TrainConfig's fields
RUN_KEYS = tuple(f.name for f in fields(PretrainConfig) if f.name not in (*ACTIONS, "train", "dry_run"))
ALIASES = {"tokens": "max_tokens"}  # flag name -> TrainConfig field


def resolve_config(given: dict[str, Any], config_file: str | Path | None = None) -> PretrainConfig:
    """A PretrainConfig from TrainConfig defaults < the YAML ``config_file`` < ``given`` (the flags typed).

    Keys are the long flags written with _ (lr, max_steps, tokens, warmup ...); ``warmup`` >= 1 is a step
    count, < 1 a ratio of the total. An unknown key fails naming it.
    """
    layered: dict[str, Any] = load_yaml(config_file) if config_file else {}
    layered.update(given)
    layered = {ALIASES.get(k, k): v for k, v in layered.items()}
    if layered.get("recipe") is not None:
        from lmforge.recipes.budget import recipe_defaults

        recipe_defaults(layered)  # under the YAML file and the flags
    actions = {name: bool(layered.pop(name, False)) for name in ACTIONS}
    if layered.get("max_tokens") is not None:
        layered["max_tokens"] = int(layered["max_tokens"])
        if layered.get("max_steps") is not None:  # one from the YAML file, one from a flag: the flag wins
            if "max_steps" in given:
                layered.pop("max_tokens")
            elif "tokens" in given:
                layered.pop("max_steps")
            else:
                raise ConfigError("give max_steps or tokens, not both")
    _layer_time_budget(layered, given)
    warmup = layered.pop("warmup", None)
    if warmup is not None:
        if warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {warmup}")
        if warmup >= 1:
            layered["warmup_steps"], layered["warmup_ratio"] = int(warmup), 0.0
        else:
            layered["warmup_ratio"], layered["warmup_steps"] = float(warmup), 0
    if "objective" in layered:
        from lmforge.objectives import canonical_name

        layered["objective"] = canonical_name(str(layered["objective"]))
    if layered.get("objective") == "rtd":
        _rtd_defaults(layered)
    run = {k: layered.pop(k) for k in list(layered) if k in RUN_KEYS}
    known = (*RUN_KEYS, *TrainConfig.field_names(), "warmup", "tokens", *ACTIONS)
    for key in layered:
        if key not in TrainConfig.field_names():
            raise ConfigError(f"unknown option {key!r}." + suggest(key, known) + " Options are the long flags of "
                              "`lmforge pretrain --help` written with _ (lr, max_steps, batch_size ...).")
    if not any(k in layered for k in ("max_steps", "max_tokens", "epochs", "time_budget")):
        layered["max_steps"] = 1000
    train = TrainConfig.from_dict(layered)
    return PretrainConfig(**run, **actions, train=train)


def _layer_time_budget(layered: dict[str, Any], given: dict[str, Any]) -> None:
    """--time-budget (20m, 90s, 1.5h) sets the length, as --max-steps / --tokens do: a flag typed beats the YAML
    file's length, and two typed together are refused (TrainConfig says which)."""
    from lmforge.train.budget import parse_duration

    if layered.get("time_budget") is None:
        layered.pop("time_budget", None)
        return
    layered["time_budget"] = parse_duration(layered["time_budget"])
    lengths = [k for k in ("max_steps", "max_tokens") if layered.get(k) is not None]
    if not lengths:
        return
    typed = {k for k in ("time_budget", "max_steps", "tokens", "max_tokens") if given.get(k) is not None}
    if typed == {"time_budget"}:  # the file's --max-steps / --tokens give way to the typed budget
        for k in lengths:
            layered.pop(k)
    elif "time_budget" not in typed and typed:  # a typed --max-steps / --tokens beats the file's budget
        layered.pop("time_budget")


def _rtd_defaults(layered: dict[str, Any]) -> None:
    """Fill in ELECTRA's per-size settings for an electra-* preset where neither the YAML file nor a flag gave
    one (objectives/rtd.py PRESET_DEFAULTS, from google-research/electra configure_pretraining.py)."""
    from lmforge.objectives.rtd import preset_defaults

    defaults = preset_defaults(layered.get("model"))
    if not defaults:
        return
    batch_given = any(k in layered for k in ("global_batch_size", "global_batch_tokens"))
    micro = layered.get("batch_size", TrainConfig.batch_size)
    if batch_given or defaults["global_batch_size"] % micro:  # the paper's batch would not divide: leave it
        defaults.pop("global_batch_size")
    if "warmup_ratio" in layered or "warmup_steps" in layered:
        defaults.pop("warmup_steps")
    for key, value in defaults.items():
        layered.setdefault(key, value)


def load_model(config: PretrainConfig, *, head: str, tokenizer: Any, log: Log) -> Any:
    """The model to train: a preset, a ModelConfig file or an existing model directory."""
    from lmforge import PRESETS, Model, ModelConfig

    # the special ids are the data's tokenizer's (None where it has none), whatever the preset says
    specials = {f"{k}_token_id": getattr(tokenizer, f"{k}_token_id", None) for k in ("pad", "bos", "eos")}
    vocab = len(tokenizer)
    name = str(config.model)
    path = Path(name)
    if path.is_dir():
        model = Model.from_pretrained(path, head=head)
        if model.config.vocab_size != vocab:
            raise ConfigError(f"{path} has a vocabulary of {model.config.vocab_size} but the shards' tokenizer has "
                              f"{vocab}; continue pre-training with the tokenizer the model was made with")
        return model
    if path.suffix in (".yaml", ".yml", ".json") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"model config file not found: {path}")
        data = json.loads(path.read_text(encoding="utf-8")) if path.suffix == ".json" else load_yaml(path)
        base = data.pop("preset", None)
        model_config = ModelConfig.from_preset(base, **data) if base is not None else ModelConfig.from_dict(data)
        what = str(path)
    elif name in PRESETS:
        model_config = ModelConfig.from_preset(name)
        what = f"preset {name}"
    else:
        raise ConfigError(f"--model {name!r} is neither a preset, a config file nor a model directory."
                          + suggest(name, PRESETS) + " See `lmforge presets`.")
    from lmforge.recipes.budget import model_overrides

    overrides: dict[str, Any] = {"head": head, **specials, **model_overrides(config.recipe, model_config.family)}
    if model_config.vocab_size != vocab:
        log(f"{what} has a vocabulary of {model_config.vocab_size:,}; using the data's tokenizer's {vocab:,} instead")
        overrides["vocab_size"] = vocab
    fresh = ModelConfig.from_dict({**model_config.to_dict(), **overrides})
    if config.train.distributed == "fsdp" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        # shapes only: each process allocates and initialises its own shards once FSDP has sharded the model,
        # so a model larger than one process's memory never exists whole
        with torch.device("meta"):
            return Model(fresh)
    return Model(fresh)


def _train_set(config: PretrainConfig) -> tuple[Any, Any]:
    """The training shards and their tokenizer, checked (and against ``config.tokenizer`` when given)."""
    from lmforge.data.shards import ShardDataset

    data = Path(str(config.data))
    _check_shard_dir(data)
    train_set = ShardDataset(data, "train")
    tokenizer = train_set.load_tokenizer()
    train_set.verify_tokenizer(tokenizer)  # the copy in the shard dir must be the one that made the shards
    if config.tokenizer:
        from lmforge import Tokenizer

        train_set.verify_tokenizer(Tokenizer.from_pretrained(config.tokenizer))
    if train_set.num_tokens == 0:
        raise DataError(f"{data} holds no training tokens; re-run `lmforge prepare` on a non-empty corpus")
    return train_set, tokenizer


def _check_shard_dir(data: Path) -> None:
    """--data must be what `lmforge prepare` wrote; never suggest writing shards over the user's text."""
    make = "run `lmforge prepare --tokenizer TOK --out SHARDS {}` and pass --data SHARDS"
    if data.is_file():
        raise DataError(f"--data {data} is a text file, not a shard directory; " + make.format(data))
    if not data.is_dir():
        raise DataError(f"shard directory not found: {data}; " + make.format("FILES..."))
    if not (data / "meta.json").is_file():
        texts = sorted(p.name for p in data.iterdir() if p.is_file())
        held = f"; it holds {', '.join(texts[:3])}{' ...' if len(texts) > 3 else ''}" if texts else ""
        raise DataError(f"{data} is not a shard directory (no meta.json{held}); "
                        + make.format(f"{data}/*.txt" if texts else "FILES..."))


def _describe(tokenizer: Any) -> str:
    from lmforge.data.shards import tokenizer_hash

    return f"{tokenizer.kind} tokenizer of {len(tokenizer):,} tokens (hash {tokenizer_hash(tokenizer)[:12]})"


def check_model_tokenizer(config: PretrainConfig, train_set: Any, *, log: Log) -> None:
    """Continued pre-training: the model directory's own tokenizer must be the one that made the shards
    (the same vocabulary size is not enough: every id would stand for another token)."""
    from lmforge.recipes.export import TOKENIZER_FILES
    from lmforge.tokenization.tokenizer import Tokenizer

    path = Path(str(config.model))
    if not path.is_dir():
        return
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        log(f"note: {path} holds no tokenizer, so the shards' tokenizer cannot be checked against the model's; "
            "the output gets the shards' tokenizer")
        return
    model_tokenizer = Tokenizer.from_pretrained(path)
    if train_set.same_tokenizer(model_tokenizer):
        return
    shards_tokenizer = train_set.load_tokenizer()
    raise DataError(f"--model {path} was trained with another tokenizer than the shards in {config.data}: the "
                    f"model's is a {_describe(model_tokenizer)}, the shards' a {_describe(shards_tokenizer)}; "
                    f"each id would mean another token. Make shards with the model's tokenizer (`lmforge prepare "
                    f"--tokenizer {path} --out NEW_SHARDS FILES...`) and pass them as --data")


def _run_record(config: PretrainConfig, train_set: Any, objective: Any) -> dict[str, Any]:
    """The run's own settings as a resume compares them: paths made absolute, the masking as resolved
    (--masking dynamic is mlm's default, not a change) and what the shards hold (re-prepared shards at
    the same path are other data)."""
    run: dict[str, Any] = {name: getattr(config, name) for name in RUN_KEYS}
    masking = getattr(objective, "masking", None)
    if masking is not None:
        run.update(mask_prob=masking.mask_prob, masking=masking.mode, whole_word=masking.whole_word,
                   dupe_factor=masking.dupe_factor if masking.mode == "static" else None, ngram=masking.max_ngram)
    for name in ("model", "data", "tokenizer"):
        if run[name] is not None and Path(str(run[name])).exists():
            run[name] = str(Path(str(run[name])).resolve())
    run["data_tokenizer_hash"] = train_set.tokenizer_hash
    run["data_train_tokens"] = train_set.num_tokens
    return run


def _objective(config: PretrainConfig, tokenizer: Any) -> Any:
    from lmforge.objectives import OBJECTIVES, build_objective
    from lmforge.objectives.rtd import RTDConfig

    rtd = None
    rtd_fields = {"generator_size": config.generator_size, "gen_weight": config.gen_weight,
                  "disc_weight": config.disc_weight}
    if config.objective == "rtd":
        rtd = RTDConfig(**{k: v for k, v in rtd_fields.items() if v is not None})
    elif any(v is not None for v in rtd_fields.values()):
        raise ConfigError("--generator-size, gen_weight and disc_weight apply to --objective rtd (electra), not to "
                          f"{config.objective}")
    masking = None
    mask_fields = {"mask_prob": config.mask_prob, "mode": config.masking, "whole_word": config.whole_word,
                   "dupe_factor": config.dupe_factor, "max_ngram": config.ngram}
    mask_fields = {k: v for k, v in mask_fields.items() if v is not None}
    if mask_fields:
        if config.objective == "clm":
            raise ConfigError("masking options (--mask-prob, --masking, --whole-word, --dupe-factor, --ngram) apply to the "
                              "mlm objectives, not to clm")
        # start from the family's default (static for mlm+nsp / mlm+sop, dynamic for mlm) and change the given fields
        masking = dataclasses.replace(OBJECTIVES[config.objective].default_masking, **mask_fields)
    return build_objective(config.objective, tokenizer=tokenizer, seq_len=config.train.seq_len, masking=masking,
                           rtd=rtd)


def _check_resume_objective(config: PretrainConfig, out: Path) -> None:
    """A run continues with the objective it started with (an rtd checkpoint holds a generator, an mlm one not)."""
    saved = out / "pretrain_config.yaml"
    if not (config.resume and saved.is_file()):
        return
    import yaml

    before = (yaml.safe_load(saved.read_text(encoding="utf-8")) or {}).get("objective")
    if before is not None and before != config.objective:
        why = (" (its checkpoints hold the generator and its optimizer state, which "
               f"{config.objective} would drop)" if before == "rtd" else "")
        raise ConfigError(f"cannot resume {out}: it was pre-trained with --objective {before}{why}, this run asks for "
                          f"{config.objective}; resume with --objective {before}, or start a new run with another --out")


def _attach_generator(config: PretrainConfig, objective: Any, model: Any, log: Log) -> None:
    """rtd: the generator beside the discriminator (from MODEL_DIR/generator when continuing a run)."""
    if config.train.distributed == "fsdp":
        raise ConfigError("rtd shares the embeddings between the generator and the FSDP-sharded discriminator, "
                          "which FSDP does not support; use --distributed ddp")
    from lmforge import Model

    saved = Path(str(config.model)) / "generator"
    generator = None
    if (saved / "config.json").is_file():
        generator = Model.from_pretrained(saved)
        if config.generator_size is not None and generator.config.hidden_size != round(
                model.config.hidden_size * config.generator_size):
            raise ConfigError(f"{saved} holds a generator of hidden size {generator.config.hidden_size}, not "
                              f"{config.generator_size:g} x {model.config.hidden_size}; drop --generator-size to "
                              "continue with it")
        log(f"rtd: continuing with the generator in {saved}")
    generator = objective.attach(model, generator)
    own = sum(p.numel() for n, p in generator.named_parameters() if not n.startswith("body.embeddings.")
              or n.startswith("body.embeddings.project"))
    c = generator.config
    log(f"rtd: generator L{c.num_layers}/H{c.hidden_size}/A{c.num_heads} ({own:,} parameters of its own, embeddings "
        f"shared), loss {objective.rtd.gen_weight:g} x MLM + {objective.rtd.disc_weight:g} x replaced-token detection")


@tears_down_process_group  # under torchrun: leave the process group on every way out
def pretrain(config: PretrainConfig, *, log: Log | None = None) -> Any:
    """Pre-train as ``config`` says and write the model, tokenizer, metrics.jsonl and loss.png to ``out``.

    Returns the trainer's TrainResult (None for a dry run). ``log`` defaults to printing on rank 0.
    """
    if config.dry_run:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip())
        return None

    from lmforge.data.shards import ShardDataset
    from lmforge.objectives import OBJECTIVES, BatchSource
    from lmforge.recipes.outputs import RUN_STATE, check_out_dir
    from lmforge.train import Trainer, objective_evaluator
    from lmforge.train.distributed import barrier, init_distributed
    from lmforge.train.loop import seed_everything

    info = init_distributed(config.device)
    train = config.train
    if log is None:
        def log(message: str) -> None:
            if info.is_main:
                print(message, flush=True)

    from lmforge.objectives import ALIASES, canonical_name

    config.objective = canonical_name(config.objective)
    if config.objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {config.objective!r}; choose one of {', '.join(OBJECTIVES)} (or electra "
                          "= rtd)." + suggest(config.objective, [*OBJECTIVES, *ALIASES]))
    _check_resume_objective(config, Path(str(config.out)))
    owned = (*RUN_STATE, "pretrain_config.yaml")
    check_out_dir(config.out, overwrite=config.overwrite, resume=config.resume, owned=owned, remove=False)
    train_set, tokenizer = _train_set(config)
    check_model_tokenizer(config, train_set, log=log)
    objective = _objective(config, tokenizer)

    seed_everything(train.seed)  # the model's initial weights depend on the seed only
    model = load_model(config, head=objective.heads(None), tokenizer=tokenizer, log=log)
    save_extra = None
    if config.objective == "rtd":
        _attach_generator(config, objective, model, log)  # after the model: the seed fixes both inits

        def save_extra(directory: Path) -> None:  # the final / best dir: OUT/generator beside the discriminator
            objective.save_generator(directory / "generator", tokenizer)
    longest = getattr(model.config, "max_length", None) or getattr(model.config, "max_positions", None)
    if longest is not None and train.seq_len > longest:
        raise ConfigError(f"--seq-len {train.seq_len} is longer than the model's {longest} positions (max_positions "
                          f"{model.config.max_positions}); lower --seq-len or raise max_positions in the model config")

    data, out = Path(str(config.data)), Path(str(config.out))
    source = BatchSource(objective, train_set, batch_size=train.batch_size, seed=train.seed, rank=info.rank,
                         world_size=info.world_size)
    evaluate = None
    if config.val_batches > 0 and "val" in train_set.meta.get("splits", {}):
        try:
            val_source = BatchSource(objective, ShardDataset(data, "val"), batch_size=train.batch_size,
                                     seed=train.seed, shuffle=False)
            evaluate = objective_evaluator(objective, val_source, device=info.device, max_batches=config.val_batches)
        except DataError as err:
            log(f"no validation: {err}")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"pretrain {config.objective} on {data} ({train_set.num_tokens:,} tokens, {source.steps_per_epoch:,} "
        f"micro-batches per epoch): {model.config.family or 'model'} with {n_params:,} parameters, "
        f"{info.world_size} process(es) on {info.device.type}")

    def write_config() -> None:  # once training surely starts (not for a finished run resumed)
        import yaml

        out.mkdir(parents=True, exist_ok=True)
        resolved = {k: v for k, v in config.to_dict().items() if k != "resume"}
        (out / "pretrain_config.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))

    # everything is checked: only now does --overwrite remove the previous run's state
    check_out_dir(out, overwrite=config.overwrite, resume=config.resume, owned=owned, remove=info.is_main)
    barrier(info)
    trainer = Trainer(model, objective, source, train, out_dir=out, evaluate=evaluate, tokenizer=tokenizer,
                      dist=info, run_config=_run_record(config, train_set, objective), save_extra=save_extra)
    result = trainer.train(resume=config.resume, allow_changes=config.allow_changes, on_start=write_config)
    if result.stopped == "already_complete":
        return result
    summary = f"done: {result.step} steps"
    if result.final_loss is not None:
        summary += f", final training loss {result.final_loss:.4f}"
    if result.last_eval:
        summary += ", validation " + ", ".join(f"{k} {v:.4g}" for k, v in result.last_eval.items())
    log(summary)
    log(f"model, tokenizer, metrics.jsonl and loss.png in {out}"
        + (f"; the generator in {out / 'generator'}" if config.objective == "rtd" else ""))
    return result


__all__ = ["PretrainConfig", "check_model_tokenizer", "load_model", "pretrain", "resolve_config"]
