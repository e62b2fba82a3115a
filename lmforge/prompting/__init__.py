"""Prompting a trained model without updating it: zero-shot templates (``templates``), GPT-3 style few-shot
evaluation (``fewshot``) and fill-mask for masked LMs (``fill_mask``)."""
from __future__ import annotations

from lmforge.prompting.fewshot import (FORMATS, FewshotFormat, FewshotResult, fewshot_evaluate, score_continuations,
                                      write_outputs)
from lmforge.prompting.fill_mask import fill_mask, mask_token_of
from lmforge.prompting.templates import TEMPLATES, Template, cut_at_stop, get_template, load_template, read_inputs

__all__ = ["FORMATS", "TEMPLATES", "FewshotFormat", "FewshotResult", "Template", "cut_at_stop", "fewshot_evaluate",
           "fill_mask", "get_template", "load_template", "mask_token_of", "read_inputs", "score_continuations",
           "write_outputs"]
