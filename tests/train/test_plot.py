"""The Pillow charts of a run: loss.png and confusion_matrix.png (lmforge/train/plot.py)."""
from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest
from PIL import Image

from lmforge.train.logging import plot_loss
from lmforge.train.plot import BLUE, ORANGE, SIZE, blues, confusion_chart, line_chart, nice_ticks

sys.path.insert(0, str(Path(__file__).parent))
import toy  # noqa: E402


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _pixels_near(img: Image.Image, colour: tuple[int, int, int], tol: int = 30) -> list[tuple[int, int]]:
    w, h = img.size
    data = img.load()
    return [(x, y) for y in range(h) for x in range(w)
            if sum(abs(a - b) for a, b in zip(data[x, y], colour)) <= tol]


@pytest.mark.parametrize("seed", range(40))
def test_nice_ticks_cover_the_range_with_round_steps(seed):
    rng = random.Random(seed)
    lo = rng.uniform(-50, 50) * 10 ** rng.randint(-4, 4)
    hi = lo + (abs(lo) + 1e-3) * 10 ** rng.uniform(-4, 2)  # spans down to 1e-4 of the values' size
    ticks = nice_ticks(lo, hi)
    assert ticks[0] <= lo and ticks[-1] >= hi and 2 <= len(ticks) <= 12
    steps = [b - a for a, b in zip(ticks, ticks[1:])]
    step = steps[0]
    assert all(math.isclose(s, step, rel_tol=1e-6) for s in steps)
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 2.5, 5, 10))
    assert all(math.isclose(t / step, round(t / step), abs_tol=1e-6) for t in ticks)  # multiples of the step


def test_nice_ticks_of_a_single_value_and_bad_input():
    assert len(nice_ticks(0.6931, 0.6931)) >= 2 and nice_ticks(0.6931, 0.6931)[0] < 0.6931
    with pytest.raises(ValueError):
        nice_ticks(0.0, math.inf)


def test_loss_chart_draws_the_curve_where_the_values_are(tmp_path):
    """A falling training curve: its blue pixels sit high on the left, low on the right; validation points orange."""
    train = [(s, 7.0 * math.exp(-s / 200) + 1.0) for s in range(0, 1001, 5)]
    val = [(s, 7.0 * math.exp(-s / 200) + 1.5) for s in (250, 500, 750, 1000)]
    path = line_chart(tmp_path / "c.png", [("train", train, BLUE, False), ("validation", val, ORANGE, True)],
                      title="loss", xlabel="step", ylabel="loss")
    img = Image.open(path).convert("RGB")
    assert img.size == SIZE
    blue = _pixels_near(img, _rgb(BLUE))
    left = [y for x, y in blue if 100 <= x <= 200]
    right = [y for x, y in blue if 450 <= x <= 650 and y > 120]  # below the legend
    assert left and right
    assert max(left) < min(right)  # the curve falls: higher on screen (smaller y) at the start
    orange = _pixels_near(img, _rgb(ORANGE))
    assert len({x // 50 for x, _ in orange}) >= 4  # four validation points spread across the width


def test_loss_chart_skips_non_finite_points_and_refuses_nothing(tmp_path):
    path = line_chart(tmp_path / "a.png", [("train", [(1, 2.0), (2, math.nan), (3, math.inf), (4, 1.0)], BLUE, False)],
                      title="t", xlabel="step", ylabel="loss")
    assert Image.open(path).size == SIZE
    with pytest.raises(ValueError, match="no finite points"):
        line_chart(tmp_path / "b.png", [("train", [(1, math.nan)], BLUE, False)], title="t", xlabel="x", ylabel="y")


def test_plot_loss_reads_metrics_jsonl(tmp_path):
    records = [{"split": "train", "step": s, "loss": 3.0 - s / 10} for s in range(1, 11)]
    records.append({"split": "val", "step": 10, "loss": 2.5})
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    path = plot_loss(tmp_path, title="fine-tuning")
    assert path == tmp_path / "loss.png" and Image.open(path).size == SIZE
    # non-finite losses are stored as strings ("nan"); with nothing else there is nothing to plot
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"split": "train", "step": 1, "loss": "nan"}))
    assert plot_loss(tmp_path) is None


def test_blues_scale_ends():
    assert blues(0.0) == (247, 251, 255) and blues(1.0) == (8, 48, 107)
    assert blues(-1) == blues(0.0) and blues(2) == blues(1.0)
    shades = [sum(blues(t / 10)) for t in range(11)]
    assert shades == sorted(shades, reverse=True)  # darker as the count grows


def test_confusion_chart_shades_cells_by_count(tmp_path):
    path = confusion_chart(tmp_path / "cm.png", [[40, 0], [3, 97]], ["no", "yes"], title="glue-cola")
    img = Image.open(path).convert("RGB")
    darkest = _pixels_near(img, blues(1.0), tol=12)
    lightest = _pixels_near(img, blues(0.0), tol=6)
    mid = _pixels_near(img, blues(40 / 97), tol=12)
    assert len(darkest) > 1000 and len(lightest) > 1000 and len(mid) > 1000  # whole cells, not stray pixels
    (dx, dy), (mx, my) = darkest[len(darkest) // 2], mid[len(mid) // 2]
    assert dx > mx and dy > my  # 97 is bottom right, 40 top left
    with pytest.raises(ValueError):
        confusion_chart(tmp_path / "x.png", [[1, 2]], ["a", "b"], title="t")


def test_a_chart_that_cannot_be_drawn_does_not_fail_the_run(tmp_path, monkeypatch, capsys):
    """A Pillow without FreeType (or a full disk at the end) costs the chart, with a warning, not the run."""
    import lmforge.train.plot as plot
    from lmforge.recipes.finetune import write_outputs
    from lmforge.tasks import get_task
    from lmforge.train import TrainConfig, Trainer, list_source

    def broken(*args, **kwargs):
        raise ImportError("The _imagingft C module is not installed")

    monkeypatch.setattr(plot, "line_chart", broken)
    monkeypatch.setattr(plot, "confusion_chart", broken)
    cfg = TrainConfig(max_steps=2, batch_size=8, progress=False, log_every=1)
    src = list_source(toy.toy_examples(), toy.collate, batch_size=8)
    assert Trainer(toy.ToyLM(), toy.ToyObjective(), src, cfg, out_dir=tmp_path / "run").train().step == 2
    assert "loss.png was not drawn (The _imagingft C module" in capsys.readouterr().out
    assert (tmp_path / "run" / "model.safetensors").is_file() and not (tmp_path / "run" / "loss.png").exists()
    task = get_task("glue-cola")
    examples = [{"id": str(i), "text": "A fox sleeps.", "label": i % 2} for i in range(6)]
    said = []
    write_outputs(tmp_path / "out", task, examples, [1] * len(examples), {"mcc": 0.0}, log=said.append)
    assert (tmp_path / "out" / "predictions.tsv").is_file() and not (tmp_path / "out" / "confusion_matrix.png").exists()
    assert said == ["warning: confusion_matrix.png was not drawn (The _imagingft C module is not installed)"]
