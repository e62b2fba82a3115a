"""The training loop and what it needs: config, optimizers, checkpoints, logging, multi-process.

``Trainer`` (loop.py) is the one loop that `pretrain` and `finetune` both run.
"""
from __future__ import annotations

from lmforge.train.config import TrainConfig
from lmforge.train.loop import (Trainer, TrainingDiverged, TrainingInterrupted, TrainResult, list_source,
                               objective_evaluator)

__all__ = ["TrainConfig", "TrainResult", "Trainer", "TrainingDiverged", "TrainingInterrupted", "list_source",
           "objective_evaluator"]
