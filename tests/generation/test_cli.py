"""End to end: `lmforge generate` on a tiny random checkpoint with the real GPT-2 vocabulary: streamed output
equals the API's, JSON batches, seeded sampling, bad input, --compile and --device."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from lmforge.cli import main

Model = pytest.importorskip("lmforge.models.model").Model
Tokenizer = pytest.importorskip("lmforge.tokenization.tokenizer").Tokenizer


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_streams_and_matches_the_api(gpt_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "generate", "--model", str(gpt_dir), "--prompt", "I want to go home.",
                       "--max-new-tokens", "8")
    assert code == 0
    model, tok = Model.from_pretrained(gpt_dir).eval(), Tokenizer.from_pretrained(gpt_dir)
    ids = torch.tensor([tok("I want to go home.", add_special_tokens=False)["input_ids"]])
    assert ids.tolist() == [[40, 765, 284, 467, 1363, 13]]  # the real GPT-2 BPE
    new = model.generate(ids, max_new_tokens=8, eos_token_id=tok.eos_token_id, return_prompt=False)
    assert out == "I want to go home." + tok.decode(new[0].tolist()) + "\n"


def test_generate_json_batch(gpt_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "generate", "--model", str(gpt_dir), "--prompt", "Hello", "--prompt",
                       "A much longer prompt than the first one", "--max-new-tokens", "5", "--json")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in records] == ["Hello", "A much longer prompt than the first one"]
    tok = Tokenizer.from_pretrained(gpt_dir)
    for r in records:
        assert len(r["tokens"]) == 5 and r["completion"] == tok.decode(r["tokens"])
    # the batched (left-padded) short prompt gives what it gives alone
    code, alone, _ = run(capsys, "generate", "--model", str(gpt_dir), "--prompt", "Hello", "--max-new-tokens", "5",
                         "--json")
    assert json.loads(alone)["tokens"] == records[0]["tokens"]


def test_generate_sampling_seed(gpt_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("generate", "--model", str(gpt_dir), "--prompt", "Once", "--max-new-tokens", "12", "--top-k", "50",
            "--json")
    a = json.loads(run(capsys, *args, "--seed", "3")[1])
    b = json.loads(run(capsys, *args, "--seed", "3")[1])
    c = json.loads(run(capsys, *args, "--seed", "4")[1])
    assert a == b and a["tokens"] != c["tokens"]


def test_generate_bad_input(gpt_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long_prompt = " ".join(["word"] * 80)  # > 64 positions
    code, out, err = run(capsys, "generate", "--model", str(gpt_dir), "--prompt", long_prompt, "--max-new-tokens", "3")
    assert code == 2 and "context is 64 positions" in err and "--truncate-prompt" in err
    assert out == ""  # checked before the streamed prompt is echoed
    code, out, err = run(capsys, "generate", "--model", str(gpt_dir), "--prompt", long_prompt, "--max-new-tokens",
                         "3", "--truncate-prompt", "--json")
    assert code == 0 and len(json.loads(out)["tokens"]) == 3 and "left-truncated" in err
    code, out, err = run(capsys, "generate", "--model", str(gpt_dir), "--prompt", "Hi", "--max-new-tokens", "100",
                         "--json")
    assert code == 0 and len(json.loads(out)["tokens"]) == 63 and "stops after 63 new tokens" in err
    # the flags' names, not generate()'s arguments; a negative number in any spelling parses as one
    for flags, needle in ((("--temperature", "0"), "--temperature must be > 0 when sampling, got 0.0; for "
                                                   "deterministic output decode greedily (--greedy"),
                          (("--top-p", "1.5"), "--top-p must be in (0, 1], got 1.5"),
                          (("--top-k", "-2"), "--top-k must be >= 0, got -2"),
                          (("--repetition-penalty", "-1e-2"), "--repetition-penalty must be > 0, got -0.01"),
                          (("--num-beams", "2", "--do-sample"), "give either --num-beams N (deterministic) or the "
                                                                "sampling flags")):
        code, out, err = run(capsys, "generate", "--model", str(gpt_dir), "--prompt", "Hi", *flags)
        assert code == 2 and needle in err and out == "", err
        assert not re.search(r"[a-z_]=", err), err  # no do_sample= / top_p= Python advice


def test_generate_compile_and_device(gpt_dir: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """--compile decodes through the static cache (the same tokens); --compile graph / --device need a GPU."""
    from lmforge.generation import static

    calls = []

    def step(*args: object) -> torch.Tensor:  # the uncompiled fixed-shape step (test_static.py compiles it)
        calls.append(1)
        return static.decode_step(*args)

    monkeypatch.setattr(static, "compiled_step", lambda: step)
    args = ("generate", "--model", str(gpt_dir), "--prompt", "Hello there", "--prompt", "Hi", "--max-new-tokens", "6",
            "--json", "--device", "cpu")
    code, plain, _ = run(capsys, *args)
    assert code == 0 and not calls
    code, compiled, _ = run(capsys, *args, "--compile")
    assert code == 0 and compiled == plain and len(calls) == 5  # one step per token after the prefill's
    code, out, err = run(capsys, *args, "--compile", "graph")  # args say --device cpu
    assert code == 2 and out == ""
    assert "--compile graph captures a CUDA graph and needs a CUDA device (the model is on cpu); use plain " \
        "--compile" in err
    code, out, err = run(capsys, *args[:-2], "--device", "tpu:9")
    assert code == 2 and "--device" in err and out == ""
    if not torch.cuda.is_available():
        code, out, err = run(capsys, *args[:-2], "--device", "cuda")
        assert code == 2 and "no CUDA device" in err and out == ""


def test_generate_on_a_model_without_an_lm_head_gives_the_command_line_fix(
        gpt_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A fine-tuned classifier (seq-cls head) and a BERT: the CLI names what to give instead, the Python
    error names the call."""
    from lmforge.errors import InputError
    from lmforge.generation import lm_field

    for name, preset, head in (("cls", "gpt-tiny", "seq-cls"), ("bert", "bert-tiny", "mlm")):
        d = tmp_path / name
        Model.from_preset(preset, head=head, vocab_size=50257, max_positions=64, num_labels=2).save_pretrained(d)
        for f in ("vocab.json", "merges.txt"):
            shutil.copy(gpt_dir / f, d / f)
        code, out, err = run(capsys, "generate", "--model", str(d), "--prompt", "Hi")
        assert code == 2 and out == "" and "from_pretrained" not in err and "lmforge.fill_mask" not in err, err
        with pytest.raises(InputError) as py:
            lm_field(Model.from_pretrained(d))
        assert err == f"lmforge generate: error: {py.value.cli}\n"
        if head == "seq-cls":
            assert "give the directory of a model pre-trained with `lmforge pretrain --objective clm`" in err
            assert "Model.from_pretrained(DIR, head='clm')" in str(py.value)
        else:
            assert "use `lmforge fill-mask` for masked language models" in err
