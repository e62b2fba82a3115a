"""Loading a saved model with its tokenizer for inference (generate / prompt / fewshot / fill-mask)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any


def load_model_and_tokenizer(path: str | Path, device: Any = None) -> tuple[Any, Any]:
    """Model (in eval mode, on ``device`` when given) + tokenizer of a checkpoint directory, with clear
    errors for what is missing."""
    from lmforge.errors import CheckpointError
    from lmforge.models.model import Model
    from lmforge.tokenization import check_model_vocab
    from lmforge.tokenization.tokenizer import Tokenizer

    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist.")
    model = Model.from_pretrained(directory)
    try:
        tokenizer = Tokenizer.from_pretrained(directory)
    except Exception as err:  # the tokenizer module raises TokenizerError; name the directory either way
        raise CheckpointError(f"{directory} has no usable tokenizer ({err}); save the tokenizer next to the "
                              "model (tokenizer.save_pretrained(DIR)).",
                              cli=f"{directory} has no usable tokenizer ({err}); put the tokenizer files the model "
                                  "was trained with (tokenizer.json, or vocab.txt / vocab.json + merges.txt) in "
                                  f"{directory}") from err
    # ids past the embeddings: say so now, not crash later (Python: resize; CLI: the model's own tokenizer)
    check_model_vocab(model.config.vocab_size, tokenizer,
                      cli=f"put the tokenizer the model was trained with in {directory} (`lmforge pretrain` and "
                          "`lmforge finetune` save it beside the model)")
    if device is not None:
        from lmforge.nn.quantized import check_device

        check_device(model.config, device)  # int8 kernels are CPU-only: say so before the first request / token
        model = model.to(device)
    return model.eval(), tokenizer


def prefer_huge_pages() -> bool:
    """Before torch is imported: ask its CPU allocator for transparent huge pages on large tensors
    (PyTorch's THP_MEM_ALLOC_ENABLE; Linux). Decoding streams every weight once per token, and 2 MB pages
    made those reads 10-30% faster on the AMD EPYC development machine (docs/generation.md, "Which GEMM").
    The inference commands call it first; a value the user set wins. True when it took effect."""
    if sys.platform != "linux" or "torch" in sys.modules or "THP_MEM_ALLOC_ENABLE" in os.environ:
        return False
    os.environ["THP_MEM_ALLOC_ENABLE"] = "1"
    return True


__all__ = ["load_model_and_tokenizer", "prefer_huge_pages"]
