"""``lmforge pretrain --recipe budget``: Cramming's changes for a BERT that must learn on a small budget.

Geiping & Goldstein 2022, "Cramming: Training a Language Model on a Single GPU in One Day" (arXiv:2212.14034),
github.com/JonasGeiping/cramming @196c991:

* cramming/config/train/bert-o4.yaml: AdamW lr 1e-3, weight decay 0.01, scheduler ``budget-triangle2`` (0.25 x lr
  rising to the peak at 75% of the budget, then linear to 0), gradient clipping 0.5, MLM rate 0.25,
  ``pretrain_in_train_mode: False`` (no dropout in pre-training), a large batch (8,192 sequences, ramped);
* cramming/config/train/optim/adam.yaml: betas (0.9, 0.98), eps 1e-12;
* cramming/config/arch/crammed-bert.yaml: ``norm_scheme: pre`` (pre-LN with a final norm), ``qkv_bias: False``,
  ``use_bias: False`` (no biases in the dense layers), ``sparse_prediction`` (the MLM head only on masked rows:
  lmforge's MLM objective always does this, objectives/mlm.py gathers the masked positions).

Two recipes:

* ``budget``: all of it that lmforge's models can express: pre-LN + final norm, no q/k/v or attention-output
  biases, no dropout in pre-training (the classifier keeps 0.1 for fine-tuning). HF transformers has no pre-LN
  BERT class, so ``lmforge export`` refuses these models (they stay ordinary lmforge models).
* ``budget-hf``: the same training settings on the unchanged (post-LN, biased) architecture, with dropout off:
  it exports to HF ``BertForMaskedLM``.

Not taken (yet): Cramming's gated GELU FFN (no lmforge activation for it), bias-free FFN and LayerNorm, the
batch-size ramp, scaled sinusoidal positions. The recipe's values are defaults: a YAML file or a flag overrides
each one. Which of them helps at laptop scale is measured in docs/pretraining.md (budget recipe section).
"""
from __future__ import annotations

from typing import Any

from lmforge.errors import ConfigError, suggest

# training settings (TrainConfig fields and run options), layered under the YAML file and the flags
_TRAIN = {"lr": 1e-3, "schedule": "triangle", "warmup": 0, "adam_beta1": 0.9, "adam_beta2": 0.98, "adam_eps": 1e-12,
          "weight_decay": 0.01, "max_grad_norm": 0.5, "mask_prob": 0.25}
_NO_DROPOUT = {"hidden_dropout": 0.0, "attention_dropout": 0.0, "embedding_dropout": 0.0, "classifier_dropout": 0.1}
RECIPES: dict[str, dict[str, Any]] = {
    "budget": {"train": _TRAIN, "model": {"norm_placement": "pre", "qkv_bias": False, "attention_out_bias": False,
                                          **_NO_DROPOUT}},
    "budget-hf": {"train": _TRAIN, "model": dict(_NO_DROPOUT)},
}
# the model families the recipes are for (encoders trained with MLM)
FAMILIES = ("bert", "roberta", "electra")


def check_recipe(name: str | None) -> None:
    if name is not None and name not in RECIPES:
        raise ConfigError(f"unknown --recipe {name!r}; choose one of {', '.join(RECIPES)}." + suggest(name, RECIPES))


def recipe_defaults(layered: dict[str, Any]) -> None:
    """Fill the recipe's training settings into ``layered`` where neither the YAML file nor a flag gave them."""
    name = layered.get("recipe")
    check_recipe(name)
    if name is None:
        return
    objective = str(layered.get("objective", "mlm"))
    if not objective.startswith("mlm"):
        raise ConfigError(f"--recipe {name} is for BERT-like encoders pre-trained with --objective mlm (or mlm+nsp / "
                          f"mlm+sop), not {objective}; drop --recipe or use --objective mlm")
    given_warmup = any(k in layered for k in ("warmup", "warmup_steps", "warmup_ratio"))
    for key, value in RECIPES[name]["train"].items():
        if key == "warmup" and given_warmup:
            continue
        layered.setdefault(key, value)


def model_overrides(name: str | None, family: str | None) -> dict[str, Any]:
    """The ModelConfig fields the recipe changes in a model built fresh (a preset or a config file)."""
    check_recipe(name)
    if name is None:
        return {}
    if family not in FAMILIES:
        raise ConfigError(f"--recipe {name} is for BERT-like encoders ({', '.join(FAMILIES)}); this model's family is "
                          f"{family}. Drop --recipe, or pre-train a bert-* preset")
    return dict(RECIPES[name]["model"])


__all__ = ["RECIPES", "check_recipe", "model_overrides", "recipe_defaults"]
