"""Zero-shot prompt templates as data (GPT-2 paper, Radford et al. 2019, section 3).

A template is a format string with ``{fields}`` plus the decoding settings that suit it: the GPT-2
paper summarises with "TL;DR:" and top-k 2 sampling for 100 tokens, answers questions with "Q: ... A:"
and greedy decoding, and translates from "english sentence = french sentence" style context. Users add
their own with a string ("Review: {text}\\nSentiment:") or a JSON file of the same shape as TEMPLATES.
"""
from __future__ import annotations

import json
import string
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lmforge.data.readers import read_jsonl
from lmforge.errors import DataError, InputError, suggest


@dataclass(frozen=True)
class Template:
    """A prompt format and how to decode its continuation."""

    text: str  # str.format string; every {name} is a field the input must provide
    description: str = ""
    stop: tuple[str, ...] = ()  # the completion is cut at the first of these strings
    max_new_tokens: int = 64
    do_sample: bool = False
    top_k: int = 0
    temperature: float = 1.0

    @property
    def fields(self) -> list[str]:
        """The field names the template needs, in order of first appearance."""
        names: list[str] = []
        for _, name, _, _ in string.Formatter().parse(self.text):
            if name is None:
                continue
            if not name.isidentifier():
                raise InputError(f"template {self.text!r}: field {{{name}}} is not a plain name; use "
                                 "{name} placeholders (double braces {{ }} for literal braces).")
            if name not in names:
                names.append(name)
        return names

    def render(self, values: dict[str, Any]) -> str:
        """The prompt for one input; InputError naming the fields the input lacks."""
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise InputError(f"the template needs field(s) {', '.join(missing)} but the input has "
                             f"{', '.join(sorted(values)) or 'none'}; template: {self.text!r}.")
        return self.text.format(**{k: str(values[k]).strip() for k in self.fields})


TEMPLATES: dict[str, Template] = {
    # GPT-2 section 3.6: article + "TL;DR:", top-k 2 random sampling, 100 tokens
    "tldr": Template("{article}\nTL;DR:", "summarisation (GPT-2 3.6)", stop=("\n\n",),
                     max_new_tokens=100, do_sample=True, top_k=2),
    # GPT-2 section 3.8 (Natural Questions): "Q: question A:" context, greedy answer
    "qa": Template("Q: {question}\nA:", "closed-book question answering (GPT-2 3.8)", stop=("\n",),
                   max_new_tokens=32),
    # GPT-2 section 3.5 (CoQA): the document, then the question, then "A:"
    "reading": Template("{context}\nQ: {question}\nA:", "reading comprehension (GPT-2 3.5)", stop=("\n",),
                        max_new_tokens=32),
    # GPT-2 section 3.7: the model is conditioned on "english sentence = french sentence" pairs
    "translation": Template("english: {english}\nfrench:", "english -> french translation (GPT-2 3.7)",
                            stop=("\n",), max_new_tokens=64),
}


def get_template(name_or_text: str) -> Template:
    """A registered template by name, a JSON file of templates' shape, or a literal template string."""
    if name_or_text in TEMPLATES:
        return TEMPLATES[name_or_text]
    path = Path(name_or_text)
    if name_or_text.endswith(".json") or (path.suffix == ".json" and path.is_file()):
        return load_template(path)
    if "{" in name_or_text:
        template = Template(name_or_text.replace("\\n", "\n"), "user template")
        template.fields  # validate the placeholders now, with the user's text in the message
        return template
    raise InputError(f"unknown template {name_or_text!r}; built-in templates: {', '.join(TEMPLATES)}."
                     f"{suggest(name_or_text, TEMPLATES)} Or pass your own as a string with {{fields}}, "
                     "e.g. \"Review: {text}\\nSentiment:\", or a .json file {\"text\": ..., \"stop\": [...]}.")


def load_template(path: Path) -> Template:
    """A template from JSON: {"text": "...", optional stop / max_new_tokens / do_sample / top_k / ...}."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"template file {path} does not exist.") from None
    except json.JSONDecodeError as err:
        raise DataError(f"template file {path} is not valid JSON ({err}).") from None
    known = {f.name for f in fields(Template)}
    if not isinstance(data, dict) or "text" not in data:
        raise DataError(f"template file {path} must hold an object with a \"text\" key.")
    unknown = sorted(set(data) - known)
    if unknown:
        raise DataError(f"template file {path}: unknown key(s) {unknown}; known keys: {sorted(known)}.")
    if "stop" in data:
        data["stop"] = tuple([data["stop"]] if isinstance(data["stop"], str) else data["stop"])
    template = Template(**data)
    template.fields
    return template


def read_inputs(path: str | Path, template: Template, *, lines: bool = False) -> list[dict[str, Any]]:
    """The inputs of ``lmforge prompt --input``: a .jsonl file (one object of fields per line), or a text
    file that fills a one-field template (the whole file, or each non-empty line with ``lines``)."""
    file = Path(path)
    if not file.is_file():
        raise DataError(f"input file {file} does not exist.")
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".jsonl":
        out = [obj for _, obj in read_jsonl(file)]
    else:
        names = template.fields
        if len(names) != 1:
            raise DataError(f"a plain-text input fills one field, but the template needs {names}; use a "
                            ".jsonl file with one object of those fields per line.")
        chunks = [ln for ln in text.splitlines() if ln.strip()] if lines else [text]
        out = [{names[0]: c} for c in chunks if c.strip()]
    if not out:
        raise DataError(f"input file {file} holds no inputs.")
    return out


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


__all__ = ["TEMPLATES", "Template", "cut_at_stop", "get_template", "load_template", "read_inputs"]
