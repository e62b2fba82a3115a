"""Prompt templates: rendering, user templates, input files, stop cutting."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.errors import DataError, InputError
from lmforge.prompting.templates import TEMPLATES, cut_at_stop, get_template, read_inputs


def test_builtin_templates_render_the_gpt2_formats() -> None:
    assert get_template("tldr").render({"article": "A long story.\n"}) == "A long story.\nTL;DR:"
    assert get_template("qa").render({"question": "Who wrote Hamlet?"}) == "Q: Who wrote Hamlet?\nA:"
    assert get_template("translation").render({"english": "the cat"}) == "english: the cat\nfrench:"
    assert TEMPLATES["tldr"].top_k == 2 and TEMPLATES["tldr"].do_sample  # GPT-2 paper: top-k 2 sampling


def test_user_template_string_and_missing_field() -> None:
    t = get_template("Review: {text}\\nSentiment:")
    assert t.fields == ["text"]
    assert t.render({"text": "great film", "unused": 1}) == "Review: great film\nSentiment:"
    with pytest.raises(InputError, match="needs field"):
        t.render({"review": "x"})
    with pytest.raises(InputError, match="unknown template"):
        get_template("tdlr")
    with pytest.raises(InputError, match="plain name"):
        get_template("{0} and {a.b}")


def test_template_file(tmp_path: Path) -> None:
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"text": "{a} = {b} =", "stop": "\n", "max_new_tokens": 7}))
    t = get_template(str(f))
    assert t.fields == ["a", "b"] and t.stop == ("\n",) and t.max_new_tokens == 7
    f.write_text(json.dumps({"text": "{a}", "stops": []}))
    with pytest.raises(DataError, match="unknown key"):
        get_template(str(f))


def test_read_inputs(tmp_path: Path) -> None:
    txt = tmp_path / "a.txt"
    txt.write_text("first article\n\nsecond line\n")
    assert read_inputs(txt, TEMPLATES["tldr"]) == [{"article": "first article\n\nsecond line\n"}]
    assert read_inputs(txt, TEMPLATES["tldr"], lines=True) == [{"article": "first article"}, {"article": "second line"}]
    with pytest.raises(DataError, match="one field"):
        read_inputs(txt, TEMPLATES["reading"])
    jl = tmp_path / "q.jsonl"
    jl.write_text('{"context": "c", "question": "q?"}\n\n{"context": "d", "question": "r?"}\n')
    assert [TEMPLATES["reading"].render(v) for v in read_inputs(jl, TEMPLATES["reading"])] == ["c\nQ: q?\nA:", "d\nQ: r?\nA:"]
    jl.write_text("[1, 2]\n")
    with pytest.raises(DataError, match="JSON object"):
        read_inputs(jl, TEMPLATES["reading"])


def test_cut_at_stop() -> None:
    assert cut_at_stop(" Paris.\nQ: next", ("\n",)) == " Paris."
    assert cut_at_stop("abc", ()) == "abc"
    assert cut_at_stop("x END y \n", ("\n", "END")) == "x "
