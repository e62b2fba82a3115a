"""End to end: `lmforge generate / prompt / fewshot / fill-mask` on tiny random checkpoints with the real
GPT-2 and BERT vocabularies; fill_mask's probabilities against the model's own softmax."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from lmforge.cli import main
from lmforge.errors import InputError

Model = pytest.importorskip("lmforge.models.model").Model
Tokenizer = pytest.importorskip("lmforge.tokenization.tokenizer").Tokenizer


@pytest.fixture(scope="module")
def gpt_dir(tmp_path_factory: pytest.TempPathFactory, refdata: Path) -> Path:
    """gpt-tiny (L2/H128) with a clm head over the real GPT-2 vocabulary, 64 positions."""
    d = tmp_path_factory.mktemp("gpt")
    torch.manual_seed(0)
    Model.from_preset("gpt-tiny", head="clm", vocab_size=50257, max_positions=64).save_pretrained(d)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(refdata / "tokenizers" / "gpt2" / name, d / name)
    return d


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory, refdata: Path) -> Path:
    d = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    Model.from_preset("bert-tiny", head="mlm").save_pretrained(d)
    shutil.copy(refdata / "tokenizers" / "bert-base-uncased" / "vocab.txt", d / "vocab.txt")
    return d


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
    for flags, needle in ((("--temperature", "0"), "temperature"), (("--top-p", "1.5"), "top_p"),
                          (("--top-k", "-2"), "top_k")):
        code, out, err = run(capsys, "generate", "--model", str(gpt_dir), "--prompt", "Hi", *flags)
        assert code == 2 and needle in err and out == ""


def test_generate_compile_and_device(gpt_dir: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """--compile decodes through the static cache (the same tokens); --compile graph / --device need a GPU."""
    import lmforge.static_decode as static_decode

    calls = []

    def step(*args: object) -> torch.Tensor:  # the uncompiled fixed-shape step (tests/generation/
        calls.append(1)                       # test_static_decode.py compiles it for real)
        return static_decode.decode_step(*args)

    monkeypatch.setattr(static_decode, "compiled_step", lambda: step)
    args = ("generate", "--model", str(gpt_dir), "--prompt", "Hello there", "--prompt", "Hi", "--max-new-tokens", "6",
            "--json", "--device", "cpu")
    code, plain, _ = run(capsys, *args)
    assert code == 0 and not calls
    code, compiled, _ = run(capsys, *args, "--compile")
    assert code == 0 and compiled == plain and len(calls) == 5  # one step per token after the prefill's
    code, out, err = run(capsys, *args, "--compile", "graph")  # args say --device cpu
    assert code == 2 and "CUDA" in err and out == ""
    code, out, err = run(capsys, *args[:-2], "--device", "tpu:9")
    assert code == 2 and "--device" in err and out == ""
    if not torch.cuda.is_available():
        code, out, err = run(capsys, *args[:-2], "--device", "cuda")
        assert code == 2 and "no CUDA device" in err and out == ""


def test_prompt_templates(gpt_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = tmp_path / "q.jsonl"
    inputs.write_text('{"question": "Who wrote Hamlet?"}\n{"question": "Where is Paris?"}\n')
    code, out, _ = run(capsys, "prompt", "--model", str(gpt_dir), "--template", "qa", "--input", str(inputs), "--json")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in records] == ["Q: Who wrote Hamlet?\nA:", "Q: Where is Paris?\nA:"]
    assert all("\n" not in r["completion"] for r in records)  # cut at the template's stop string
    article = tmp_path / "a.txt"
    article.write_text("The cat sat on the mat all day.")
    code, out, _ = run(capsys, "prompt", "--model", str(gpt_dir), "--template", "tldr", "--input", str(article),
                       "--max-new-tokens", "6", "--seed", "0", "--json")
    assert code == 0 and json.loads(out)["prompt"] == "The cat sat on the mat all day.\nTL;DR:"
    code, _, err = run(capsys, "prompt", "--model", str(gpt_dir), "--template", "Review: {text}\\nSentiment:",
                       "--field", "review=good")
    assert code == 2 and "needs field(s) text" in err


def test_fewshot_sst2(gpt_dir: Path, refdata: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "fs"
    code, out, _ = run(capsys, "fewshot", "--model", str(gpt_dir), "--task", "glue-sst2", "--data",
                       str(refdata / "glue" / "SST-2"), "--shots", "0", "1", "4", "--limit", "6", "--out", str(out_dir),
                       "--device", "cpu")
    assert code == 0
    results = json.loads((out_dir / "results.json").read_text())
    assert [r["k"] for r in results["rows"]] == [0, 1, 4]
    assert all(0 <= r["accuracy_raw"] <= 1 and 0 <= r["accuracy_norm"] <= 1 for r in results["rows"])
    assert any("drawn from the 'dev' split" in n for n in results["notes"])
    assert "accuracy_raw" in out and (out_dir / "fewshot.png").stat().st_size > 0
    preds = [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 18
    # the reported accuracy is the mean of the per-example predictions
    k1 = [p for p in preds if p["k"] == 1]
    assert results["rows"][1]["accuracy_raw"] == sum(p["pred_raw"] == p["gold"] for p in k1) / 6
    prompts = (out_dir / "prompts.txt").read_text()
    assert "===== k=4 prompt 1 =====" in prompts and prompts.count("\nSentiment:") >= 5
    code, out, err = run(capsys, "fewshot", "--model", str(gpt_dir), "--task", "glue-sst2", "--data",
                         str(refdata / "glue" / "SST-2"), "--device", "gpu0")
    assert code == 2 and "device 'gpu0' is not a device" in err and out == ""


def test_fewshot_drops_shots_to_fit(gpt_dir: Path, refdata: Path) -> None:
    from lmforge.fewshot import fewshot_evaluate

    model, tok = Model.from_pretrained(gpt_dir).eval(), Tokenizer.from_pretrained(gpt_dir)
    result = fewshot_evaluate(model, tok, "glue-sst2", refdata / "glue" / "SST-2", shots=[8], limit=3)
    row = result.rows[0]
    assert row["prompts_with_dropped_shots"] == 3 and row["mean_shots"] < 8  # 64 positions hold ~2 reviews
    assert any("dropped shots" in n for n in result.notes)
    for text in result.prompts[8]:
        assert len(tok(text, add_special_tokens=False)["input_ids"]) + 1 <= 64


def test_fill_mask(bert_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lmforge import fill_mask

    model, tok = Model.from_pretrained(bert_dir).eval(), Tokenizer.from_pretrained(bert_dir)
    text = "the man went to the [MASK] and bought a [MASK]."
    result = fill_mask(model, tok, text, k=3)
    assert len(result) == 2 and all(len(r) == 3 for r in result)
    enc = tok(text, return_tensors="pt")
    with torch.no_grad():
        probs = model(**enc).logits[0].softmax(-1)
    positions = (enc["input_ids"][0] == tok.mask_token_id).nonzero().flatten().tolist()
    for m, pos in enumerate(positions):  # each mask from its own distribution, the other mask in place
        top = probs[pos].topk(3)
        assert [c["token_id"] for c in result[m]] == top.indices.tolist()
        torch.testing.assert_close(torch.tensor([c["score"] for c in result[m]]), top.values)
    assert result[0][0]["sequence"].count("[MASK]") == 1
    code, out, _ = run(capsys, "fill-mask", "--model", str(bert_dir), "the man went to the [MASK].", "--top-k", "2")
    assert code == 0 and out.count("mask #") == 2
    with pytest.raises(InputError, match="no mask token"):
        fill_mask(model, tok, "no mask here", k=3)
    code, _, err = run(capsys, "fill-mask", "--model", str(bert_dir), "nothing to fill")
    assert code == 2 and "[MASK]" in err


@pytest.mark.parametrize(("task", "sub", "keys"), [
    ("swag", "swag", ("accuracy_raw", "accuracy_norm")),
    ("squad-v2", "squad", ("exact", "f1")),
])
def test_fewshot_swag_and_squad(gpt_dir: Path, refdata: Path, task: str, sub: str, keys: tuple[str, ...]) -> None:
    from lmforge import metrics
    from lmforge.fewshot import fewshot_evaluate

    model, tok = Model.from_pretrained(gpt_dir).eval(), Tokenizer.from_pretrained(gpt_dir)
    result = fewshot_evaluate(model, tok, task, refdata / sub, shots=[0, 1], limit=3, max_new_tokens=4)
    assert [r["k"] for r in result.rows] == [0, 1] and all(k in result.rows[0] for k in keys)
    if task == "swag":  # four candidates, one gold ending each
        assert all(len(p["loglik"]) == 4 for p in result.predictions)
    else:  # EM / F1 are the official evaluator's over the per-example answers
        k0 = [p for p in result.predictions if p["k"] == 0]
        ref = metrics.squad_evaluate({p["id"]: p["prediction"] for p in k0}, {p["id"]: p["answers"] for p in k0})
        assert result.rows[0]["f1"] == pytest.approx(ref["f1"])
