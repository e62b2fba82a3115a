"""The README's front door holds: its Python example runs as printed, and CI runs its test command."""
from __future__ import annotations

import re
from pathlib import Path

import torch

# not `from conftest import REPO`: the module named conftest is whichever conftest.py pytest imported
# last (tests/tasks/, tests/objectives/ ... have their own), so that import fails in a full run
REPO = Path(__file__).resolve().parents[1]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_example_runs_as_printed(refdata, tmp_path, monkeypatch):
    text = (REPO / "README.md").read_text()
    blocks = python_blocks(text)
    assert blocks, "README.md has no ```python block"
    code = blocks[0].replace("../shared/refdata", str(refdata))
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    # what the comments in the example claim
    assert scope["enc"]["input_ids"].tolist() == [[101, 1045, 2215, 2000, 2175, 2188, 1012, 102, 2033, 2205, 1012, 102]]
    assert scope["enc"]["token_type_ids"].tolist() == [[0] * 8 + [1] * 4]
    assert tuple(scope["out"][1].shape) == (1, 2)
    assert scope["model"].head.classifier.out_features == 2
    assert len(scope["gtok"]) == 50262
    assert scope["gpt"].num_parameters() == 124_439_808 + 5 * 768
    assert torch.isfinite(scope["loss"])
    assert scope["new_tokens"].shape == (1, 20)
    assert scope["seq"].shape == (1, 11 + 20) and torch.equal(scope["seq"][:, :11], scope["batch"]["input_ids"])
    assert "gpt.resize_token_embeddings(len(gtok))    # Embedding(50262, 768)" in text  # what the call returns:
    assert repr(scope["gpt"].resize_token_embeddings(len(scope["gtok"]))) == "Embedding(50262, 768)"
    assert (tmp_path / "ckpt" / "model.safetensors").is_file() and (tmp_path / "hf-ckpt" / "config.json").is_file()


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci
    assert "make quickstart" in readme


def test_cli_reference_lists_every_command_with_real_flags():
    """The README's CLI table names every subcommand, and every flag it shows exists in that parser."""
    import argparse

    from lmforge import cli

    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| `lmforge ([a-z-]+)[^`]*` \|[^|]*\| ([^|]*) \|", readme, flags=re.M)
    listed = {name: re.findall(r"--[a-z-]+", flags) for name, flags in rows}
    assert set(listed) == set(cli.COMMANDS), "README CLI reference and cli.COMMANDS differ"
    for name, flags in listed.items():
        parser = cli.build_parser(name)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
        known = {s for a in sub._actions for s in a.option_strings}
        for a in sub._actions:  # `tokenizer train` keeps its flags one level down
            if isinstance(a, argparse._SubParsersAction):
                known |= {s for p in a.choices.values() for b in p._actions for s in b.option_strings}
        assert set(flags) <= known, f"lmforge {name}: README shows unknown flags {sorted(set(flags) - known)}"
