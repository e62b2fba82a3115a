"""End to end: `lmforge prompt / fewshot / fill-mask` on tiny random checkpoints with the real GPT-2 and BERT
vocabularies."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lmforge.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


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
    has_train = any(f.name.startswith("train") for f in (refdata / "glue" / "SST-2").iterdir())
    assert any("drawn from the 'dev' split" in n for n in results["notes"]) != has_train  # the note says so
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


def test_fill_mask(bert_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "fill-mask", "--model", str(bert_dir), "the man went to the [MASK].", "--top-k", "2")
    assert code == 0 and out.count("mask #") == 2
    code, _, err = run(capsys, "fill-mask", "--model", str(bert_dir), "nothing to fill")
    assert code == 2 and "[MASK]" in err
    code, _, err = run(capsys, "fill-mask", "--model", str(bert_dir), "the [MASK].", "--top-k", "0")
    assert code == 2 and "--top-k must be >= 1, got 0" in err


def test_fill_mask_on_a_gpt_says_it_needs_a_masked_lm(gpt_dir: Path, bert_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from lmforge import Model
    from lmforge.errors import InputError
    from lmforge.prompting.fill_mask import check_mlm

    code, out, err = run(capsys, "fill-mask", "--model", str(gpt_dir), "the man went to the <mask>.")
    assert code == 2 and out == ""
    assert err.startswith("lmforge fill-mask: error: fill-mask needs a masked language model, a checkpoint with an "
                          "MLM head such as a BERT pre-trained with `lmforge pretrain --objective mlm`"), err
    assert "causal decoder, continue text with `lmforge generate`" in err and "from_pretrained" not in err
    # a fine-tuned encoder: the pre-trained model's directory, never a fresh (untrained) MLM head
    tuned = tmp_path / "tuned"
    Model.from_preset("bert-tiny", head="seq-cls", num_labels=2).save_pretrained(tuned)
    shutil.copy(bert_dir / "vocab.txt", tuned / "vocab.txt")
    code, out, err = run(capsys, "fill-mask", "--model", str(tuned), "the [MASK].")
    assert code == 2 and "give the pre-trained model's directory, not a fine-tuned one" in err
    with pytest.raises(InputError, match=r"Model.from_pretrained\(DIR, head='mlm'\)"):
        check_mlm(Model.from_pretrained(tuned))  # the Python fix stays for the library
