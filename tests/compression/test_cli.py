"""End to end: `lmforge compress` on tiny checkpoints, the compressed directory through evaluate / generate /
fewshot / fill-mask, and the bad inputs (one message, exit status 2, nothing written)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.models.model import Model

FAST = ["--repeats", "1", "--batch-size", "8", "--seq-len", "32", "--no-memory"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_int8_fine_tuned_encoder_then_evaluate(cola_dir: Path, refdata: Path, tmp_path: Path, capsys):
    out = tmp_path / "int8"
    data = refdata / "glue" / "CoLA"
    code, text, _ = run(capsys, "compress", "--model", cola_dir, "--method", "int8", "--out", out,
                        "--eval-data", data, "--eval-examples", "48", *FAST[:-1])  # with the memory figures
    assert code == 0 and "| forward, batch 32 (ms) |" in text
    report = json.loads((out / "report.json").read_text())
    assert report["kernel"] in report["kernels"] and report["kernels"][report["kernel"]]["available"]
    assert set(report["before"]["quality"]) >= {"mcc", "accuracy"} and report["quality_main"] == "mcc"
    assert report["after"]["disk_mb"] < 0.5 * report["before"]["disk_mb"]
    assert report["before"]["load_mb"] > 0 and report["after"]["latency_b32_ms"] > 0
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "task.json", "vocab.txt",
                                               "report.md", "report.json", "report.png"}
    code, text, _ = run(capsys, "evaluate", "--model", out, "--data", data)  # finetune's evaluate path
    assert code == 0 and "mcc" in text


def test_prune_heads_with_recovery(cola_dir: Path, refdata: Path, tmp_path: Path, capsys):
    out = tmp_path / "heads"
    code, _, _ = run(capsys, "compress", "--model", cola_dir, "--method", "prune-heads", "--amount", "0.5",
                     "--out", out, "--eval-data", refdata / "glue" / "CoLA", "--eval-examples", "32",
                     "--calib-examples", "32", "--recover-steps", "2", *FAST)
    assert code == 0
    model = Model.from_pretrained(out)
    assert sum(model.config.layer_heads) == 4  # 8 heads, half removed
    report = json.loads((out / "report.json").read_text())
    assert [len(k) for k in report["kept_heads"]] == model.config.layer_heads
    assert report["after"]["parameters"] < report["before"]["parameters"]
    assert (out / "recover" / "metrics.jsonl").is_file() and not (out / "recover" / "model.safetensors").exists()


def test_weight_only_decoder_on_text_then_generate_and_fewshot(gpt_dir: Path, refdata: Path, tmp_path: Path, capsys):
    out = tmp_path / "w8"
    code, _, _ = run(capsys, "compress", "--model", gpt_dir, "--method", "int8-weight", "--kernel", "int8pack-bf16",
                     "--out", out, "--eval-text", refdata / "text" / "tinyshakespeare.txt", "--eval-tokens", "512",
                     *FAST)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["kernel"] == "int8pack-bf16" and report["kernels"] == {}  # given, not measured
    assert report["before"]["quality"]["tokens"] == report["after"]["quality"]["tokens"] > 0
    assert report["after"]["decode_ms_per_token"] > 0
    code, text, _ = run(capsys, "generate", "--model", out, "--prompt", "Once upon", "--max-new-tokens", "4")
    assert code == 0 and text.startswith("Once upon")
    code, _, _ = run(capsys, "fewshot", "--model", out, "--task", "glue-sst2", "--data", refdata / "glue" / "SST-2",
                     "--shots", "0", "1", "--limit", "4", "--out", tmp_path / "fs")
    assert code == 0


def test_bf16_masked_lm_then_fill_mask(bert_mlm_dir: Path, refdata: Path, tmp_path: Path, capsys):
    out = tmp_path / "bf16"
    code, _, _ = run(capsys, "compress", "--model", bert_mlm_dir, "--method", "bf16", "--out", out,
                     "--eval-text", refdata / "text" / "tinyshakespeare.txt", "--eval-tokens", "512", *FAST)
    assert code == 0
    assert "perplexity" in json.loads((out / "report.json").read_text())["after"]["quality"]
    code, text, _ = run(capsys, "fill-mask", "--model", out, "the man went to the [MASK].", "--json")
    assert code == 0 and text.strip()


def test_magnitude_is_reported_honestly(gpt_dir: Path, tmp_path: Path, capsys):
    out = tmp_path / "mag"
    code, _, _ = run(capsys, "compress", "--model", gpt_dir, "--method", "magnitude", "--amount", "0.6", "--out",
                     out, *FAST)
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert report["sparse_kernel"]["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert any("no time or bytes are saved" in n for n in report["notes"])
    assert any("no quality figure" in n for n in report["notes"])


@pytest.mark.parametrize("extra, message", [
    (["--method", "int8", "--out", "SAME"], "is the model directory; nothing was written"),
    (["--method", "int8", "--out", "FULL"], "is not empty"),
    (["--method", "int8", "--out", "NEW", "--eval-task", "glue-sst2", "--eval-data", "SST"],
     "was fine-tuned for glue-cola"),
    (["--method", "int8", "--out", "NEW", "--eval-text", "TEXT"], "--eval-text scores a language model"),
    (["--method", "prune-heads", "--amount", "0.9", "--out", "NEW", "--eval-data", "COLA"],
     "each of the 2 layers keeps at least one head"),
    (["--method", "prune-heads", "--out", "NEW"], "scores heads / neurons on data"),
    (["--method", "int8", "--kernel", "fastest", "--out", "NEW"], "is not one of the int8 kernels"),
    (["--method", "bf16", "--recover-steps", "5", "--out", "NEW"], "bf16 models are not trained"),
])
def test_bad_input_is_one_message(cola_dir: Path, refdata: Path, tmp_path: Path, capsys, extra, message):
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("")
    paths = {"SAME": cola_dir, "FULL": full, "NEW": tmp_path / "new", "SST": refdata / "glue" / "SST-2",
             "COLA": refdata / "glue" / "CoLA", "TEXT": refdata / "text" / "tinyshakespeare.txt"}
    before = sorted(p.name for p in cola_dir.iterdir())
    code, _, err = run(capsys, "compress", "--model", cola_dir, *[paths.get(a, a) for a in extra], *FAST)
    assert code == 2 and message in err and "Traceback" not in err
    assert sorted(p.name for p in cola_dir.iterdir()) == before


def test_a_quantized_model_is_not_fine_tuned(cola_dir: Path, refdata: Path, tmp_path: Path, capsys):
    quantized = tmp_path / "q"
    Model.from_pretrained(cola_dir).quantize("bf16").save_pretrained(quantized)
    for name in ("vocab.txt", "task.json"):
        (quantized / name).write_bytes((cola_dir / name).read_bytes())
    code, _, err = run(capsys, "finetune", "--model", quantized, "--task", "glue-cola", "--data",
                       refdata / "glue" / "CoLA", "--out", tmp_path / "ft", "--epochs", "1")
    assert code == 2 and "fine-tune the float model, then compress it" in err


def test_overwrite_removes_a_previous_runs_files_only(tmp_path: Path):
    from lmforge.recipes.compress import check_out

    model, out = tmp_path / "model", tmp_path / "out"
    model.mkdir()
    (out / "recover").mkdir(parents=True)
    (out / "recover" / "metrics.jsonl").write_text("{}")
    (out / "report.md").write_text("old")
    (out / "mine.txt").write_text("keep me")
    check_out(model, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
