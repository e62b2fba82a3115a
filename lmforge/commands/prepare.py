"""`lmforge prepare`: tokenize a corpus into memory-mapped shards for pre-training."""
from __future__ import annotations

import argparse

from lmforge.data.readers import DOC_MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILES",
                        help="text (.txt), .gz, jsonl or parquet files; hf:NAME[:CONFIG][@SPLIT] for a HF dataset")
    parser.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer directory (lmforge or HF)")
    parser.add_argument("--out", required=True, metavar="DIR", help="shard directory to write")
    parser.add_argument("--val-fraction", type=float, default=0.01,
                        help="fraction of documents held out for validation (default 0.01)")
    parser.add_argument("--doc-mode", choices=DOC_MODES, default="line",
                        help="text files: one document per line, or documents separated by blank lines (default line)")
    parser.add_argument("--text-field", default="text", help="jsonl / parquet / dataset field holding the text")
    parser.add_argument("--chunk-mb", type=float, default=4.0,
                        help="text tokenized per batch; bounds memory (default 4 MB)")
    parser.add_argument("--overwrite", "--force", dest="overwrite", action="store_true",
                        help="write over a non-empty --out (rebuilds shards that are up to date too); without it "
                             "only the same inputs' shards are accepted there, and re-running is a no-op")
    parser.add_argument("--encoding-errors", choices=("strict", "replace"), default="strict",
                        help="bytes that are not UTF-8: strict fails naming file:line and the byte, replace reads "
                             "them as U+FFFD (as tokenizer train)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (there is none either when the output is not a terminal)")


def run(args: argparse.Namespace) -> int:
    from lmforge.commands.common import interactive
    from lmforge.data.shards import prepare_shards, shards_up_to_date
    from lmforge.recipes.outputs import check_out_dir
    from lmforge.tokenization.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(args.tokenizer)
    settings = dict(val_fraction=args.val_fraction, doc_mode=args.doc_mode, text_field=args.text_field,
                    encoding_errors=args.encoding_errors)
    if args.overwrite or shards_up_to_date(args.out, args.files, tokenizer=tok, **settings) is None:
        check_out_dir(args.out, overwrite=args.overwrite)  # the same inputs' shards: a no-op below
    result = prepare_shards(args.files, tokenizer=tok, out=args.out, chunk_bytes=max(1, int(args.chunk_mb * 1e6)),
                            progress=not args.no_progress and interactive(), force=args.overwrite,
                            overwrite=args.overwrite, **settings)
    meta = result.meta
    if result.up_to_date:
        print(f"{result.out}: up to date (same inputs, tokenizer and settings); nothing to do. "
              "Use --overwrite to rebuild.")
        return 0
    train, val = meta["splits"]["train"], meta["splits"]["val"]
    print(f"wrote {result.out}  (dtype {meta['dtype']}, vocab {meta['vocab_size']:,}, "
          f"tokenizer {meta['tokenizer_hash'][:12]})"
          + ("; replaced the previous shards (inputs, tokenizer or settings changed)" if result.replaced else ""))
    for path, n in result.replaced_bytes.items():
        print(f"  warning: {path}: replaced {n:,} invalid UTF-8 byte(s) with U+FFFD")
    for name, info in (("train", train), ("val", val)):
        print(f"  {name:5s} {info['documents']:>12,} documents {info['sentences']:>12,} sentences "
              f"{info['tokens']:>14,} tokens  {len(info['shards'])} shard file(s)")
    if args.val_fraction > 0 and val["documents"] == 0:
        print(f"  note: no validation documents ({train['documents']} documents x val-fraction "
              f"{args.val_fraction} < 1); raise --val-fraction to get a validation split")
    return 0
