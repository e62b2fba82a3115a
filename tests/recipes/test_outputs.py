"""One rule for every command that writes a directory (lmforge/recipes/outputs.py): a non-empty --out is
refused with one line naming --overwrite (and --resume where a run can continue); --overwrite writes there
and leaves other files alone; `prepare` on the same inputs stays a no-op."""
from __future__ import annotations

from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.errors import ConfigError
from lmforge.recipes.outputs import RUN_STATE, check_out_dir


def _argv(command: str, toy_shards: dict[str, Path], out: Path) -> list[str]:
    """Each command with OUT as its --out; the inputs only need to exist: the refusal comes first."""
    corpus, tok, some_dir = str(toy_shards["corpus"]), str(toy_shards["tok-wordpiece"]), str(toy_shards["root"])
    return {
        "pretrain": ["pretrain", "--model", "gpt-tiny", "--objective", "clm", "--data", str(toy_shards["wordpiece"]),
                     "--out", str(out)],
        "finetune": ["finetune", "--model", some_dir, "--task", "glue-sst2", "--data", some_dir, "--out", str(out)],
        "evaluate": ["evaluate", "--model", some_dir, "--task", "glue-sst2", "--data", some_dir, "--out", str(out)],
        "predict": ["predict", "--model", some_dir, "--task", "glue-sst2", "--data", some_dir, "--out", str(out)],
        "fewshot": ["fewshot", "--model", some_dir, "--task", "glue-sst2", "--data", some_dir, "--out", str(out)],
        "quickstart": ["quickstart", "--out", str(out), "--fast"],
        "export": ["export", "--model", some_dir, "--out", str(out)],
        "tokenizer": ["tokenizer", "train", corpus, "--kind", "wordpiece", "--vocab-size", "120", "--out", str(out)],
        "prepare": ["prepare", "--tokenizer", tok, "--out", str(out), "--no-progress", corpus],
        "toydata": ["toydata", "--out", str(out), "--docs", "3", "--examples", "4"],
        "compress": ["compress", "--model", some_dir, "--method", "int8", "--out", str(out)],
    }[command]


@pytest.mark.parametrize("command", ["pretrain", "finetune", "evaluate", "predict", "fewshot", "quickstart", "export",
                                     "tokenizer", "prepare", "toydata", "compress"])
def test_every_command_refuses_a_non_empty_out(command, toy_shards, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main(_argv(command, toy_shards, out)) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"lmforge {command}: error: --out {out} is not empty (mine.txt); pass "
                                        "--overwrite to write over it, or choose another directory"]
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


@pytest.mark.parametrize("command", ["tokenizer", "prepare", "toydata"])
def test_overwrite_writes_beside_other_files(command, toy_shards, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    assert main([*_argv(command, toy_shards, out), "--overwrite"]) == 0
    assert (out / "mine.txt").read_text() == "keep me" and len(list(out.iterdir())) > 1
    if command == "prepare":  # the shards are complete and readable beside the other file
        from lmforge.data.shards import ShardDataset

        assert ShardDataset(out, "train").num_tokens > 0


def test_prepare_same_inputs_is_a_no_op_other_inputs_need_overwrite(toy_shards, tmp_path, capsys):
    out = tmp_path / "shards"
    argv = _argv("prepare", toy_shards, out)
    assert main(argv) == 0
    meta = (out / "meta.json").stat().st_mtime_ns
    assert main(argv) == 0 and "up to date" in capsys.readouterr().out  # a non-empty --out, yet no refusal
    assert (out / "meta.json").stat().st_mtime_ns == meta
    other = [*argv[:argv.index("--tokenizer") + 1], str(toy_shards["tok-bpe"]), *argv[argv.index("--tokenizer") + 2:]]
    assert main(other) == 2 and "pass --overwrite" in capsys.readouterr().err
    assert main([*other, "--force"]) == 0  # the old name of --overwrite
    assert "replaced the previous shards" in capsys.readouterr().out


def test_check_out_dir(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        check_out_dir(tmp_path / "file")
    assert check_out_dir(tmp_path / "new") == tmp_path / "new"  # missing or empty: fine, nothing created
    assert not (tmp_path / "new").exists()
    run = tmp_path / "run"
    (run / "seed-1" / "checkpoints").mkdir(parents=True)  # `finetune --seeds` keeps a run per seed
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(ConfigError, match="holds a training run .* pass --resume to continue it, --overwrite"):
        check_out_dir(run, resume=False)
    with pytest.raises(ConfigError, match="not both"):
        check_out_dir(run, resume=True, overwrite=True)
    assert check_out_dir(run, resume=True) == run
    check_out_dir(run, overwrite=True, owned=RUN_STATE, remove=False)  # the other processes of torchrun: no change
    assert (run / "metrics.jsonl").exists()
    check_out_dir(run, overwrite=True, owned=RUN_STATE)
    assert [p.name for p in run.iterdir()] == ["seed-1"]
