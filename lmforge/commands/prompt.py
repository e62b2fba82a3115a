"""`lmforge prompt`: zero-shot prompting with a template (tldr, qa, reading, translation, or your own).

Each input (a text file, or a .jsonl of field objects) is rendered into the template, continued with
the template's decoding settings (flags override them) and cut at its stop strings.
"""
from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lmforge.commands.generate import add_decoding_arguments

    parser.usage = ("%(prog)s --model DIR --template NAME (--input FILE | --field NAME=VALUE ...) [options]\n"
                    "       %(prog)s --list")
    parser.add_argument("--template", metavar="NAME",
                        help="tldr | qa | reading | translation, a template string with {fields} "
                             "(e.g. \"Review: {text}\\nSentiment:\"), or a .json template file; required unless --list")
    source = parser.add_mutually_exclusive_group(required=False)
    source.add_argument("--input", metavar="FILE", help="text file (fills a one-field template) or .jsonl of field "
                        "objects; this or --field is required")
    source.add_argument("--field", action="append", metavar="NAME=VALUE",
                        help="one input given inline (repeatable); this or --input is required")
    parser.add_argument("--lines", action="store_true", help="with a text --input: each non-empty line is an input")
    parser.add_argument("--list", action="store_true", help="list the built-in templates and exit")
    add_decoding_arguments(parser, max_new_tokens=None, model_required=False)


def run(args: argparse.Namespace) -> int:
    from lmforge.recipes.loading import prefer_huge_pages
    prefer_huge_pages()  # before torch loads
    from lmforge.commands.generate import decoding_options
    from lmforge.recipes.completion import complete
    from lmforge.recipes.loading import load_model_and_tokenizer
    from lmforge.train.distributed import resolve_device
    from lmforge.errors import InputError
    from lmforge.prompting.templates import TEMPLATES, get_template, read_inputs

    if args.list:
        for name, t in TEMPLATES.items():
            print(f"{name:12s} {t.description}: {json.dumps(t.text)}")
        return 0
    if not args.template or not args.model:
        raise InputError("give --model DIR and --template NAME (see --list for the built-in templates).")
    template = get_template(args.template)
    if args.input:
        inputs = read_inputs(args.input, template, lines=args.lines)
    elif args.field:
        values = {}
        for item in args.field:
            name, sep, value = item.partition("=")
            if not sep:
                raise InputError(f"--field {item!r} is not NAME=VALUE.")
            values[name] = value.replace("\\n", "\n")
        inputs = [values]
    else:
        raise InputError("give the inputs with --input FILE or --field NAME=VALUE.")
    prompts = [template.render(values) for values in inputs]  # fails early on a missing field
    defaults = {"max_new_tokens": template.max_new_tokens, "do_sample": template.do_sample,
                "top_k": template.top_k, "temperature": template.temperature}
    options = decoding_options(args, defaults=defaults)
    stop = list(args.stop) if args.stop else list(template.stop)
    model, tokenizer = load_model_and_tokenizer(args.model, resolve_device(args.device))
    if not args.json:
        print(f"# template {args.template!r}, {len(prompts)} input(s)", file=sys.stderr)
    complete(model, tokenizer, prompts, options, stop=stop, stream=True, json_out=args.json)
    return 0
