"""`lmforge lab`: the registry lists the ten experiments of issue 22 and translation, each runnable one's --fast
mode writes results.json / PNG / report.md of the right structure (the numbers are checked in the experiments'
own tests, not here)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.errors import ConfigError
from lmforge.lab import EXPERIMENTS, run_experiment
from lmforge.lab.registry import list_experiments

REPO = Path(__file__).resolve().parents[2]
TEN = {"albert-params", "masking-stats", "pretrain-vs-scratch", "nsp-vs-sop", "electra-vs-mlm", "distillation",
       "attention-scaling", "gpt3-scaling", "fewshot", "zero-shot-tldr"}
ALL = TEN | {"translation"}  # issue 22's ten, and translation (its item 9's second toy language)


def test_registry_names_the_ten_experiments_of_issue_22():
    assert set(EXPERIMENTS) == ALL
    for e in EXPERIMENTS.values():
        assert e.claim and e.source
        assert e.runnable or e.provided_by, e.name  # a missing one says where it lives
    text = list_experiments()
    assert all(name in text for name in ALL)


def _check_outputs(out: Path, name: str) -> dict:
    payload = json.loads((out / "results.json").read_text())
    assert payload["name"] == name and payload["fast"] is True
    assert {"claim", "source", "machine", "table", "checks", "notes", "wall_s", "cpu_s", "quiet_2core_s"} <= set(payload)
    assert payload["table"] and all(isinstance(r, dict) for r in payload["table"])
    for c in payload["checks"]:
        assert {"what", "paper", "ours", "held"} <= set(c) and c["held"] in (True, False, None)
    assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.md").read_text()
    assert payload["claim"] in report and payload["source"] in report and "| what | paper | ours | verdict |" in report
    return payload


@pytest.mark.parametrize("name", ["albert-params", "masking-stats", "gpt3-scaling", "nsp-vs-sop",
                                  "pretrain-vs-scratch", "attention-scaling", "distillation", "fewshot",
                                  "zero-shot-tldr", "translation"])
def test_fast_mode_writes_the_outputs(name, tmp_path, monkeypatch):
    if name not in EXPERIMENTS or not EXPERIMENTS[name].runnable:
        pytest.skip(f"{name} not runnable")
    payload = _check_outputs(_run(name, tmp_path), name)
    assert payload["checks"], name
    if name in TOY_ARMS:  # the toy train's table: one row per arm, the pre-training and fine-tuning columns
        title, arms, check = TOY_ARMS[name]
        rows = next(rows for t, rows in payload["tables"].items() if title in t)
        assert [next(iter(r.values())) for r in rows] == arms
        for r in rows:
            assert {"val MLM loss", "loss std", "SST-2 dev acc", "dev std", "SST-2 test acc", "seeds"} <= set(r)
            assert 0 <= r["SST-2 dev acc"] <= 1 and r["seeds"] == 1
        toy_check = next(c for c in payload["checks"] if c["what"].startswith(check))
        assert toy_check["held"] is None and "SST-2 dev accuracy" in toy_check["ours"]  # --fast: not judged
        assert len(payload["data"]["toy_runs"]) == 2  # every run's own numbers: 2 arms x 1 seed


def test_mlm_validation_scores_every_model_on_the_same_masks(tmp_path):
    import torch

    from lmforge.lab.toy import mlm_validation

    out = _run("masking-stats", tmp_path)
    shards, runs = out / "toy-run" / "shards", out / "toy-run"
    torch.manual_seed(1)  # the masks come from the objective's own seeded draw, not torch's global generator
    first = mlm_validation(runs / "static-seed0" / "out", shards, batches=2)
    torch.manual_seed(2)
    assert mlm_validation(runs / "static-seed0" / "out", shards, batches=2) == first
    assert mlm_validation(runs / "dynamic-seed0" / "out", shards, batches=2) != first  # another model, another loss


# experiment -> (its toy table's title, the arms' names in order, the start of its fine-tune / masking check)
TOY_ARMS = {"albert-params": ("Toy train", ["all-shared", "not-shared"],
                              "all-shared vs not-shared at equal width: fine"),
            "masking-stats": ("Toy run", ["static, dupe factor 10", "dynamic"], "static vs dynamic masking")}


def _run(name: str, tmp_path: Path) -> Path:
    out = tmp_path / name
    run_experiment(name, out, fast=True, seeds=1, log=lambda _: None)
    return out


def test_cli_lists_and_rejects_unknown_names(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    listed = subprocess.run([sys.executable, "-m", "lmforge", "lab"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0 and "albert-params" in listed.stdout and "zero-shot-tldr" in listed.stdout
    bad = subprocess.run([sys.executable, "-m", "lmforge", "lab", "albert-param"], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 2 and "albert-params" in bad.stderr  # one line with the closest name
    assert "not runnable" not in listed.stdout  # all ten are wired in


def test_bad_seeds_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--seeds"):
        run_experiment("albert-params", tmp_path, seeds=0)


def test_albert_lecture_arithmetic_and_table_1():
    from lmforge.lab.albert_params import count, lecture_example

    assert lecture_example() == (50_000, 9_000)
    # the factorization's saving, counted on the real model: every E-wide table (word, position, type), the
    # embedding LayerNorm (2E) and the E -> H projection's weight (E x H) grow by H - E per row
    full, factored = count("albert-base", embedding_size=768), count("albert-base")
    assert full - factored == (30000 + 512 + 2 + 2 + 768) * (768 - 128)


def test_electra_vs_mlm_reads_the_equal_compute_summary(tmp_path, monkeypatch):
    # the recipe itself (and its --fast run) is tested in tests/recipes/test_equal_compute.py; here only the lab's
    # reading of its summary, on a summary of the recipe's shape
    import lmforge.recipes.equal_compute as ec

    def row(obj, budget, mcc, std, disc=None):
        val = {} if disc is None else {"disc_accuracy": disc, "replaced_fraction": 0.12}  # all-original: 0.88
        return {"objective": obj, "budget": budget, "flops": 1e9 * budget, "steps": 10 * budget, "test_mcc": mcc,
                "test_mcc_std": std, "test_accuracy": 0.5 + mcc / 2, "val": val}

    summary = {"rows": [row("mlm", 1, 0.2, 0.01), row("rtd", 1, 0.3, 0.02, disc=0.95), row("mlm", 2, 0.3, 0.1),
                        row("rtd", 2, 0.31, 0.1, disc=0.95), row("mlm", 3, 0.2, 0.01),
                        row("rtd", 3, 0.3, 0.01, disc=0.881), row("none (from scratch)", 0, 0.0, 0.0)]}
    monkeypatch.setattr(ec, "equal_compute", lambda out, fast, log, settings=None: summary)
    monkeypatch.setattr(ec, "plot", lambda s, path: path.write_bytes(b"\x89PNG\r\n\x1a\n"))
    run_experiment("electra-vs-mlm", tmp_path, fast=True, log=lambda _: None)
    payload = _check_outputs(tmp_path, "electra-vs-mlm")
    # budget 2's gap is inside 2 standard errors; budget 3's discriminator never beat answering "original" (0.88)
    assert [c["held"] for c in payload["checks"]] == [True, None, None]
    assert "all-original baseline" in payload["checks"][2]["note"]


def test_electra_lab_settings_shorten_the_recipe_default():
    from lmforge.lab.electra_vs_mlm import lab_settings
    from lmforge.recipes.equal_compute import SETTINGS

    s, d = lab_settings(), SETTINGS["default"]
    assert s.name == "lab" and s.budgets == (200, 400, 800) and s.finetune_epochs == 6
    assert (s.model, s.seeds, s.docs, s.lr) == (d.model, d.seeds, d.docs, d.lr)  # only the lengths change


def test_run_jobs_in_two_processes_keeps_order_and_counts_cpu():
    from lmforge.lab import parallel

    parallel.MAKESPANS.clear()
    assert parallel.run_jobs([(pow, (2, 10), {}), (pow, (3, 3), {}), (pow, (5, 2), {})], workers=2) == [1024, 27, 25]
    assert len(parallel.MAKESPANS) == 1 and parallel.MAKESPANS[0] > 0  # the busiest worker's CPU seconds
    assert parallel.run_jobs([(pow, (2, 3), {})], workers=2) == [8] and len(parallel.MAKESPANS) == 1  # inline


def test_power_law_fit_recovers_a_known_exponent():
    import numpy as np

    from lmforge.lab.gpt3_scaling import fit_power_law

    n = np.array([1e4, 3e4, 1e5, 3e5, 1e6])
    a, alpha = fit_power_law(n, 7.0 * n ** -0.076)
    assert abs(alpha - 0.076) < 1e-9 and abs(a - 7.0) < 1e-6


def test_runs_of_selected_tokens():
    import numpy as np

    from lmforge.lab.masking_stats import _hist3, _runs

    rows = np.array([[1, 1, 0, 1, 0, 0, 1, 1, 1, 1], [0, 1, 0, 0, 1, 1, 1, 0, 0, 0]], dtype=bool)
    assert sorted(_runs(rows).tolist()) == [1, 1, 2, 3, 4]
    assert _hist3(_runs(rows)) == [0.4, 0.2, 0.2, 0.2]


def test_gpt3_table_2_1_from_the_presets():
    from lmforge.lab.gpt3_scaling import table_2_1

    rows, checks = table_2_1()
    assert [r["model"] for r in rows][:1] == ["gpt3-small"] and rows[0]["params"] == 125_226_240
    # the two rows the paper prints but nobody can build are flagged, not hidden
    flagged = {c.what.split()[0] for c in checks if c.note}
    assert flagged == {"gpt3-xl", "gpt3-13b"}


def test_attention_scaling_growth_exponent():
    from lmforge.lab.attention_scaling import slope

    assert slope([(512, 3.0 * 512 ** 2), (1024, 3.0 * 1024 ** 2), (4096, 3.0 * 4096 ** 2)]) == pytest.approx(2.0)
    assert slope([(512, 1.0)]) is None


def test_fewshot_prompt_keeps_the_last_shots_that_fit(monkeypatch):
    # a fake model / tokenizer: one id per word, a context of 40 positions; the scorer sees the prompt it gets
    import lmforge.prompting.fewshot as pf
    from lmforge.lab import fewshot

    seen = []

    class Tok:
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [len(w) for w in text.split()]}

    class Model:
        class config:
            max_positions = 40

    def score(model, prompt, candidates):
        seen.append(len(prompt))
        return [(0.0, 1), (-1.0, 1)]  # always "negative"

    monkeypatch.setattr(pf, "score_continuations", score)
    pool = [{"text": "the soup is good.", "label": 1}] * 10  # 7 words a shot
    fewshot.DROPPED.clear()
    acc = fewshot.accuracy(Model(), Tok(), [{"text": "it is bad.", "label": 0}], pool, 8, seed=0)
    assert acc == 1.0 and seen == [33]  # 5 words of the query + 4 shots of 7 words (+ 1 answer word <= 40)
    assert fewshot.DROPPED == {8: 4}


def test_translation_fast_mode_structure(tmp_path):
    out = _run("translation", tmp_path)
    payload = _check_outputs(out, "translation")
    assert [r["model"] for r in payload["table"]] == ["L1 H16", "L1 H32"]  # the fast sizes, smallest first
    assert all({"choice k=0", "choice k=1", "choice k=4", "greedy tokens / exact k=4"} <= set(r)
               for r in payload["table"])
    (title, wins), = payload["tables"].items()
    assert "distractor" in title and len(wins) == 2 * 3  # sizes x k
    assert all(0 <= v <= 1 for r in wins for key, v in r.items() if key not in ("model", "k"))
    data = payload["data"]
    assert data["chance"] == 0.2 and data["n_examples"] == 12 and isinstance(data["contaminated"], int)
    assert [c["held"] for c in payload["checks"]] == [None, None, None]  # --fast: not judged
    assert all(len(set(e["candidates"])) == 5 for e in data["examples"])


def test_fit_shots_drops_the_oldest_shots_until_the_prompt_and_its_longest_candidate_fit():
    """The shared prompt builder of fewshot and translation: the newest shots and the query are kept."""
    from lmforge.prompting.demos import fit_shots

    class Words:  # one id per space-separated word
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": list(range(len(text.split())))}

    shots = ["a b c", "d e", "f"]  # 3 + 2 + 1 words, then the query's 2
    assert fit_shots(Words(), shots, "q r", limit=100, longest=5) == (list(range(8)), 0)
    assert fit_shots(Words(), shots, "q r", limit=7, longest=2) == (list(range(5)), 1)  # "d e f q r"
    assert fit_shots(Words(), shots, "q r", limit=3, longest=1) == (list(range(2)), 3)  # the query alone
    assert fit_shots(Words(), [], "q r", limit=1, longest=1) == (list(range(2)), 0)  # nothing left to drop
