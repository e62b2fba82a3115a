"""Export an lmforge model directory (model + tokenizer) as one HF transformers directory.

``export_hf_dir(model_dir, out)`` writes config.json + model.safetensors (``models.hf.export_hf``) and the
tokenizer files (tokenizer.json, tokenizer_config.json with ``tokenizer_class``, special_tokens_map.json),
so ``AutoTokenizer.from_pretrained(out)`` and ``AutoModelFor....from_pretrained(out)`` load both and give
the ids and logits lmforge gives (tests/parity/test_export_cli.py). ``lmforge export`` is its CLI. An rtd
(ELECTRA) run keeps its generator in ``MODEL_DIR/generator``: it is exported beside, to ``OUT/generator``
(``ElectraForMaskedLM``; the discriminator is ``ElectraForPreTraining``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmforge.errors import CheckpointError, InputError

# files a tokenizer directory may hold (lmforge's Tokenizer.from_pretrained reads any of them)
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt")
# HF files that would shadow what the export writes if left in --out from an earlier export
STALE_FILES = ("pytorch_model.bin", "model.safetensors.index.json", "spiece.model", "added_tokens.json",
               "vocab.txt", "vocab.json", "merges.txt")


@dataclass
class Exported:
    """What ``export_hf_dir`` wrote."""

    out: Path  # the HF directory
    architecture: str  # the HF model class config.json names (e.g. "BertForMaskedLM")
    tokenizer_class: str  # the HF tokenizer class tokenizer_config.json names (e.g. "BertTokenizer")
    files: list[Path]  # every file written
    generator: Exported | None = None  # an rtd run's generator, exported to OUT/generator


def has_tokenizer(directory: Path) -> bool:
    """Whether ``directory`` (or its ``tokenizer/`` subfolder, as a shard directory keeps it) holds one."""
    return any((d / name).is_file() for d in (directory, directory / "tokenizer") for name in TOKENIZER_FILES)


def check_out_dir(model_dir: Path, out: Path, *, overwrite: bool) -> None:
    """An error when ``out`` is the model directory, a file, or a non-empty directory without ``overwrite``."""
    if out.resolve() == model_dir.resolve():
        raise InputError(f"--out {out} is the model directory; export into a new directory (the HF files would "
                         "replace lmforge's config.json and model.safetensors).")
    from lmforge.recipes import outputs

    outputs.check_out_dir(out, overwrite=overwrite)


def export_hf_dir(model_dir: str | Path, out: str | Path, *, tokenizer: str | Path | None = None,
                  overwrite: bool = False) -> Exported:
    """Write ``model_dir``'s model and tokenizer (or the one in ``tokenizer``) as an HF directory ``out``."""
    from lmforge.models.model import Model
    from lmforge.tokenization import check_model_vocab
    from lmforge.tokenization.tokenizer import VERY_LARGE_INTEGER, Tokenizer

    model_dir, out = Path(model_dir), Path(out)
    if not model_dir.is_dir():
        raise CheckpointError(f"model directory {model_dir} does not exist.")
    check_out_dir(model_dir, out, overwrite=overwrite)
    tok_dir = Path(tokenizer) if tokenizer is not None else model_dir
    if not has_tokenizer(tok_dir):
        where = f"{tok_dir} has" if tokenizer is not None else f"the model directory {model_dir} has"
        raise CheckpointError(f"{where} no tokenizer ({', '.join(TOKENIZER_FILES)}); pass --tokenizer DIR with "
                              "the tokenizer the model was trained with (e.g. the one `lmforge prepare` used).")
    model = Model.from_pretrained(model_dir)
    tok = Tokenizer.from_pretrained(tok_dir)
    check_model_vocab(model.config.vocab_size, tok, cli="pass that one with --tokenizer DIR")
    if tok.model_max_length >= VERY_LARGE_INTEGER:  # a trained tokenizer has no limit; HF's carry the model's
        tok.model_max_length = model.config.max_length
    # HF generate() stops at config.eos_token_id: take the tokenizer's when the model config has none
    ids = {f"{k}_token_id": getattr(tok, f"{k}_token_id") for k in ("bos", "eos")}
    fill = {k: v for k, v in ids.items() if v is not None and getattr(model.config, k) is None}
    if fill:
        model.config = model.config.replace(**fill)

    out.mkdir(parents=True, exist_ok=True)
    for name in STALE_FILES:
        (out / name).unlink(missing_ok=True)
    model.export_hf(out)
    files = [out / "config.json", out / "model.safetensors", *tok.save_pretrained(out)]
    architecture = json.loads((out / "config.json").read_text())["architectures"][0]
    tokenizer_class = json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"]
    generator = None
    if (model_dir / "generator" / "config.json").is_file():  # ELECTRA: the generator of an rtd run
        generator = export_hf_dir(model_dir / "generator", out / "generator", tokenizer=tok_dir, overwrite=True)
    return Exported(out=out, architecture=architecture, tokenizer_class=tokenizer_class, files=files,
                    generator=generator)


__all__ = ["Exported", "check_out_dir", "export_hf_dir", "has_tokenizer"]
