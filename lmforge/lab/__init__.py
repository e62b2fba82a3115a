"""`lmforge lab`: claims of the pre-training literature as runnable experiments.

``EXPERIMENTS`` is the registry (name -> ``Experiment``: the claim, its source, the run time on 2 cores and the
function that runs it); ``run_experiment`` runs one into a folder and writes ``results.json``, a PNG and
``report.md`` (claim, source, the paper's number beside ours, held or not). Each experiment lives in its own
module here; the lab sits above recipes/ (it runs pre-training and fine-tuning through them).
"""
from __future__ import annotations

from lmforge.lab.registry import EXPERIMENTS, Experiment, Result, list_experiments, run_experiment

__all__ = ["EXPERIMENTS", "Experiment", "Result", "list_experiments", "run_experiment"]
