"""The package layout the README's architecture section describes, kept true by a test.

Imports are read from the source (ast), so the rules hold for imports inside functions too.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lmforge"
# the root holds the public API, the CLI entry and the config; _moved keeps old import paths for one release
ROOT_FILES = {"__init__.py", "__main__.py", "_moved.py", "cli.py", "config.py", "presets.py", "errors.py"}
FOLDERS = {"tokenization", "data", "objectives", "train", "tasks", "generation", "prompting", "recipes", "models",
           "nn", "commands", "serving", "compression", "lab"}
# folder -> folders it must never import (arrows point down the data flow, never up)
FORBIDDEN = {
    "nn": {"models", "objectives", "train", "tasks", "generation", "prompting", "recipes", "commands", "data",
           "serving"},
    "models": {"objectives", "train", "tasks", "prompting", "recipes", "commands", "data", "serving"},
    "tokenization": {"models", "objectives", "train", "tasks", "generation", "prompting", "recipes", "commands",
                     "serving"},
    "data": {"models", "objectives", "train", "tasks", "generation", "prompting", "recipes", "commands",
             "serving"},
    "objectives": {"train", "tasks", "generation", "prompting", "recipes", "commands", "serving"},
    "train": {"tasks", "generation", "prompting", "recipes", "commands", "serving"},
    "tasks": {"generation", "prompting", "recipes", "commands", "serving"},
    "generation": {"objectives", "train", "tasks", "prompting", "recipes", "commands", "serving"},
    "prompting": {"recipes", "commands", "serving", "compression"},
    "recipes": {"commands"},
    # the HTTP server sits on the model / generation / prompting stack; recipes/serve.py loads the checkpoint
    # and runs it, so only recipes/ and commands/ import serving (every folder above lists it)
    "serving": {"recipes", "commands", "train", "objectives", "data"},
    # compression uses models, nn, tasks, generation and train; the model loads quantized weights through
    # nn/quantized.py (a config field + the KERNELS registry), so nothing below imports compression
    "compression": {"recipes", "commands", "serving"},
}
for _folder in ("nn", "models", "tokenization", "data", "objectives", "train", "tasks", "generation", "serving"):
    FORBIDDEN[_folder] = FORBIDDEN[_folder] | {"compression"}
# lab/ (`lmforge lab`'s experiments) runs pre-training / fine-tuning through recipes/: only commands/ sits above it
FORBIDDEN["lab"] = {"commands"}
for _folder in FORBIDDEN:
    if _folder != "lab":
        FORBIDDEN[_folder] = FORBIDDEN[_folder] | {"lab"}
# cycles through lazy imports inside functions that the README justifies
ALLOWED_CYCLES = [{"lmforge.tokenization.io", "lmforge.tokenization.tokenizer", "lmforge.tokenization.train"}]


def _modules() -> dict[str, Path]:
    out = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = file
    return out


def _imports(name: str, file: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported lmforge module, at module level) for every import in the file."""
    tree = ast.parse(file.read_text(encoding="utf-8"))
    package = name if file.name == "__init__.py" else name.rsplit(".", 1)[0]
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            # `from pkg import mod` imports pkg.mod when that is a module, else a name of pkg
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target.startswith("lmforge") and target != name:
                found.append((target, id(node) in top))
    return found


def _graph(*, top_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    return {name: {t for t, top in _imports(name, file, modules) if top or not top_level_only}
            for name, file in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_root_holds_the_api_only() -> None:
    files = {p.name for p in PACKAGE.iterdir() if p.is_file() and p.suffix == ".py"}
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert files == ROOT_FILES, f"loose modules in lmforge/: {sorted(files - ROOT_FILES)}"
    assert folders == FOLDERS, f"folders differ from the README diagram: {sorted(folders ^ FOLDERS)}"


def test_no_import_cycles() -> None:
    assert _cycles(_graph(top_level_only=True)) == []
    assert [c for c in _cycles(_graph(top_level_only=False)) if c not in ALLOWED_CYCLES] == []


def test_imports_point_down_the_data_flow() -> None:
    bad = []
    for name, targets in _graph(top_level_only=False).items():
        folder = name.split(".")[1] if name.count(".") >= 1 else ""
        for target in targets:
            other = target.split(".")[1] if target.count(".") >= 1 else ""
            if other in FORBIDDEN.get(folder, ()):
                bad.append(f"{name} -> {target}")
    assert bad == []


def test_hf_adapters_never_build_a_model() -> None:
    graph = _graph(top_level_only=False)
    for name, targets in graph.items():
        if name.startswith("lmforge.models.hf"):
            assert "lmforge.models.model" not in targets, name


def test_commands_are_thin() -> None:
    long = {p.name: n for p in (PACKAGE / "commands").glob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 80}
    assert long == {}, f"commands over 80 lines (move the work into lmforge/recipes/): {long}"


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [{"a", "b"}]
