"""Shared fixtures: the real reference data beside the checkout, real tokenizers and tiny checkpoints over
them, and one intra-op thread where tests run many tiny ops."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFDATA = (REPO / ".." / "shared" / "refdata").resolve()


@pytest.fixture(scope="session")
def refdata() -> Path:
    """Path to ../shared/refdata; skips the test with the reason when it is absent."""
    if not REFDATA.is_dir():
        pytest.skip(f"reference data not found at {REFDATA} (expected ../shared/refdata beside the repo)")
    return REFDATA


# tiny ops in these areas: on a shared 2-core machine, 2 threads per op only fight each other
ONE_THREAD_AREAS = {"generation", "prompting", "recipes", "tasks"}


@pytest.fixture(autouse=True)
def one_thread(request: pytest.FixtureRequest):
    if Path(str(request.node.fspath)).parent.name not in ONE_THREAD_AREAS:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _load_benchmark(name: str):
    """benchmarks/NAME.py as a module (the scripts are not a package); registered in sys.modules under
    ``lmforge_bench_NAME`` (dataclasses look their module up), with benchmarks/ on sys.path while it loads (the
    scripts import their siblings)."""
    import importlib.util
    import sys

    folder = REPO / "benchmarks"
    spec = importlib.util.spec_from_file_location(f"lmforge_bench_{name}", folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(folder))
    return module


@pytest.fixture(scope="session")
def benchmark_module():
    """``benchmark_module("finetuning")``: a script of benchmarks/ loaded as a module."""
    return _load_benchmark


def _tokfixtures():
    import sys

    sys.path.insert(0, str(REPO / "tests" / "data"))
    import tokfixtures

    return tokfixtures


@pytest.fixture(scope="session")
def bert_tok(refdata):
    """The real bert-base-uncased tokenizer."""
    return _tokfixtures().bert_tokenizer(refdata)


@pytest.fixture(scope="session")
def gpt2_tok(refdata):
    """The real GPT-2 tokenizer."""
    return _tokfixtures().gpt2_tokenizer(refdata)


@pytest.fixture(scope="session")
def gpt_dir(tmp_path_factory: pytest.TempPathFactory, refdata: Path) -> Path:
    """gpt-tiny (L2/H128) with a clm head over the real GPT-2 vocabulary, 64 positions."""
    import shutil

    import torch

    from lmforge import Model

    d = tmp_path_factory.mktemp("gpt")
    torch.manual_seed(0)
    Model.from_preset("gpt-tiny", head="clm", vocab_size=50257, max_positions=64).save_pretrained(d)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(refdata / "tokenizers" / "gpt2" / name, d / name)
    return d


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory: pytest.TempPathFactory, refdata: Path) -> Path:
    """bert-tiny with an mlm head over the real bert-base-uncased vocabulary."""
    import shutil

    import torch

    from lmforge import Model

    d = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    Model.from_preset("bert-tiny", head="mlm").save_pretrained(d)
    shutil.copy(refdata / "tokenizers" / "bert-base-uncased" / "vocab.txt", d / "vocab.txt")
    return d
