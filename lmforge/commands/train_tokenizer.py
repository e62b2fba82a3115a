"""`lmforge tokenizer train`: train a WordPiece / byte-level BPE / Unigram tokenizer from text files."""
from __future__ import annotations

import argparse

KINDS = ("wordpiece", "bpe", "unigram")
FAMILIES = ("bert", "gpt2", "roberta", "albert")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("train", help="train a tokenizer from text / .gz / .jsonl files",
                       description="Train a tokenizer (streamed, on every core) and save it as lmforge + HF files.")
    p.add_argument("files", nargs="+", metavar="FILES", help="text (.txt), .gz or .jsonl files (one text per line)")
    p.add_argument("--kind", required=True, choices=KINDS,
                   help="wordpiece (as BERT), bpe (byte-level, as GPT-2 / RoBERTa), unigram (as ALBERT)")
    p.add_argument("--vocab-size", type=int, required=True, metavar="N", help="vocabulary size, specials included")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the tokenizer to")
    p.add_argument("--family", choices=FAMILIES, default=None,
                   help="special tokens and template: bert (wordpiece), gpt2 or roberta (bpe), albert (unigram); "
                        "default by kind: bert / gpt2 / albert")
    case = p.add_mutually_exclusive_group()
    case.add_argument("--lowercase", dest="lowercase", action="store_true", default=None,
                      help="lowercase and strip accents (default for wordpiece / unigram)")
    case.add_argument("--cased", dest="lowercase", action="store_false", help="keep case and accents")
    p.add_argument("--min-frequency", type=int, default=2, metavar="N",
                   help="a merge / word piece must occur at least N times (wordpiece, bpe; default 2)")
    p.add_argument("--text-field", default="text", help="field holding the text in .jsonl files (default text)")
    p.add_argument("--encoding-errors", choices=("strict", "replace"), default="strict",
                   help="bytes that are not UTF-8: strict fails naming file:line and the byte, replace reads them "
                        "as U+FFFD (as prepare)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (there is none either when the output is not a terminal)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out (its tokenizer files are "
                   "replaced)")


def run(args: argparse.Namespace) -> int:
    from lmforge.commands.common import interactive
    from lmforge.recipes.export import TOKENIZER_FILES
    from lmforge.recipes.outputs import check_out_dir
    from lmforge.tokenization.tokenizer import Tokenizer

    # before training (fail fast); an old tokenizer's files would shadow the new one's (vocab.txt decides the family)
    check_out_dir(args.out, overwrite=args.overwrite,
                  owned=(*TOKENIZER_FILES, "tokenizer_config.json", "special_tokens_map.json"))
    tok = Tokenizer.train(args.files, kind=args.kind, vocab_size=args.vocab_size, family=args.family,
                          lowercase=args.lowercase, min_frequency=args.min_frequency, text_field=args.text_field,
                          show_progress=not args.no_progress and interactive(), encoding_errors=args.encoding_errors)
    written = tok.save_pretrained(args.out)
    report = tok.training_report
    print(f"trained a {tok.kind} tokenizer ({tok.family} conventions) with {len(tok):,} tokens "
          f"on {report['lines']:,} lines; lowercase={tok.lowercase}")
    if len(tok) < args.vocab_size:
        print(f"  {len(tok):,} tokens, not the --vocab-size {args.vocab_size:,} asked: see the warning above")
    replaced = sum(report["replaced_bytes"].values())
    if replaced:
        print(f"  replaced {replaced:,} invalid UTF-8 byte(s) with U+FFFD (see the warnings above)")
    print(f"wrote {args.out}: {', '.join(p.name for p in written)}")
    return 0
