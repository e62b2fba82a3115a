"""fewshot_evaluate through the API: shots dropped to fit a short context; SWAG (multiple choice) and SQuAD
v2 (generated answers scored by the official EM / F1)."""
from __future__ import annotations

from pathlib import Path

import pytest

Model = pytest.importorskip("lmforge.models.model").Model
Tokenizer = pytest.importorskip("lmforge.tokenization.tokenizer").Tokenizer


def test_fewshot_drops_shots_to_fit(gpt_dir: Path, refdata: Path) -> None:
    from lmforge.prompting.fewshot import fewshot_evaluate

    model, tok = Model.from_pretrained(gpt_dir).eval(), Tokenizer.from_pretrained(gpt_dir)
    result = fewshot_evaluate(model, tok, "glue-sst2", refdata / "glue" / "SST-2", shots=[8], limit=3)
    row = result.rows[0]
    assert row["prompts_with_dropped_shots"] == 3 and row["mean_shots"] < 8  # 64 positions hold ~2 reviews
    assert any("dropped shots" in n for n in result.notes)
    for text in result.prompts[8]:
        assert len(tok(text, add_special_tokens=False)["input_ids"]) + 1 <= 64


@pytest.mark.parametrize(("task", "sub", "keys"), [
    ("swag", "swag", ("accuracy_raw", "accuracy_norm")),
    ("squad-v2", "squad", ("exact", "f1")),
])
def test_fewshot_swag_and_squad(gpt_dir: Path, refdata: Path, task: str, sub: str, keys: tuple[str, ...]) -> None:
    from lmforge.tasks import metrics
    from lmforge.prompting.fewshot import fewshot_evaluate

    model, tok = Model.from_pretrained(gpt_dir).eval(), Tokenizer.from_pretrained(gpt_dir)
    result = fewshot_evaluate(model, tok, task, refdata / sub, shots=[0, 1], limit=3, max_new_tokens=4)
    assert [r["k"] for r in result.rows] == [0, 1] and all(k in result.rows[0] for k in keys)
    if task == "swag":  # four candidates, one gold ending each
        assert all(len(p["loglik"]) == 4 for p in result.predictions)
    else:  # EM / F1 are the official evaluator's over the per-example answers
        k0 = [p for p in result.predictions if p["k"] == 0]
        ref = metrics.squad_evaluate({p["id"]: p["prediction"] for p in k0}, {p["id"]: p["answers"] for p in k0})
        assert result.rows[0]["f1"] == pytest.approx(ref["f1"])
