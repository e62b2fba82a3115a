"""`lmforge export`: an lmforge model directory -> an HF transformers directory (model + tokenizer)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR", help="lmforge model directory (config.json, "
                        "model.safetensors and the tokenizer files)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="HF directory to write; AutoTokenizer / AutoModelFor... load it")
    parser.add_argument("--tokenizer", metavar="DIR", default=None,
                        help="tokenizer directory when the model directory has none (default: --model)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def run(args: argparse.Namespace) -> int:
    from lmforge.recipes.export import export_hf_dir

    done = export_hf_dir(args.model, args.out, tokenizer=args.tokenizer, overwrite=args.overwrite)
    print(f"wrote {done.out}: {done.architecture} + {done.tokenizer_class}")
    print(f"  transformers.AutoTokenizer.from_pretrained({str(done.out)!r})")
    if done.generator is not None:  # an rtd (ELECTRA) run: its generator beside the discriminator
        print(f"wrote {done.generator.out}: {done.generator.architecture} (the rtd run's generator)")
    return 0
