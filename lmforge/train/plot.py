"""The charts every run writes, drawn with Pillow: ``loss.png`` (a line chart) and ``confusion_matrix.png``.

Why not matplotlib: importing it and drawing one figure on the Agg canvas costs ~0.5 s of CPU, 10 % of a
5-second CoLA fine-tuning run (docs/finetuning.md, "Charts and the final model"); each chart here costs
~30 ms. They are drawn at twice the size and scaled down, which anti-aliases lines and text. (The report
figures of the quickstart, few-shot and equal-compute recipes still use matplotlib: one-off and richer.)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

Series = tuple[str, Sequence[tuple[float, float]], str, bool]  # label, points, colour, markers

SIZE = (700, 400)  # the old matplotlib figure's 7 x 4 inches at 100 dpi
_SCALE = 2  # supersampling factor
BLUE, ORANGE = "#1f77b4", "#ff7f0e"  # matplotlib's first two cycle colours, as before


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2, 2.5 or 5 times a power of ten."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"tick range must be finite, got {lo}, {hi}")
    if hi <= lo:
        pad = abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(target - 1, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw * (1 - 1e-9))
    first = math.floor(lo / step + 1e-9) * step
    ticks, k = [], 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(first + k * step)
        k += 1
    if ticks[-1] < hi - step * 1e-9:
        ticks.append(ticks[-1] + step)
    return [0.0 if abs(t) < step * 1e-9 else t for t in ticks]


def _label(value: float, step: float) -> str:
    """``value`` with as many decimals as the tick step needs (0.25 -> 2, 2.5 -> 1, 200 -> 0)."""
    decimals = next((d for d in range(10) if abs(round(step, d) - step) <= step * 1e-6), 10)
    return f"{value:.{decimals}f}"


def _vertical_text(img, text: str, font, ink: tuple[int, int, int], *, centre_y: float) -> None:
    """``text`` turned a quarter (read bottom to top) at the left edge of ``img``, centred on ``centre_y``."""
    from PIL import Image, ImageDraw

    s = _SCALE
    strip = Image.new("RGB", (int(ImageDraw.Draw(img).textlength(text, font=font)) + 4 * s, 16 * s), "white")
    ImageDraw.Draw(strip).text((2 * s, 8 * s), text, fill=ink, font=font, anchor="lm")
    strip = strip.rotate(90, expand=True)
    img.paste(strip, (4 * s, int(centre_y - strip.height / 2)))


def _dot(draw, x: float, y: float, colour: str) -> None:
    """A marker of the line chart (the series' points and the legend's sample)."""
    r = 3.5 * _SCALE
    draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)


def line_chart(path: Path, series: Sequence[Series], *, title: str, xlabel: str, ylabel: str) -> Path:
    """Write a PNG of ``series`` (each: label, [(x, y)], colour, markers) with axes, grid and legend."""
    from PIL import Image, ImageDraw, ImageFont

    series = [(lab, [(float(x), float(y)) for x, y in pts if math.isfinite(x) and math.isfinite(y)], col, mk)
              for lab, pts, col, mk in series]
    points = [p for _, pts, _, _ in series for p in pts]
    if not points:
        raise ValueError("nothing to plot: no finite points")
    s = _SCALE
    width, height = SIZE[0] * s, SIZE[1] * s
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=11 * s)
    title_font = ImageFont.load_default(size=13 * s)

    xs, ys = [p[0] for p in points], [p[1] for p in points]
    xt, yt = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]
    ylabels = [_label(v, yt[1] - yt[0] if len(yt) > 1 else 1.0) for v in yt]
    xlabels = [_label(v, xt[1] - xt[0] if len(xt) > 1 else 1.0) for v in xt]
    left = max(draw.textlength(t, font=font) for t in ylabels) + 30 * s
    box = (left, 32 * s, width - 16 * s, height - 46 * s)  # the axes: left, top, right, bottom

    def px(x: float, y: float) -> tuple[float, float]:
        return (box[0] + (x - x0) / (x1 - x0) * (box[2] - box[0]),
                box[3] - (y - y0) / (y1 - y0) * (box[3] - box[1]))

    grid, ink = (230, 230, 230), (40, 40, 40)
    for v, text in zip(yt, ylabels):
        _, y = px(x0, v)
        draw.line([(box[0], y), (box[2], y)], fill=grid, width=s)
        draw.line([(box[0] - 4 * s, y), (box[0], y)], fill=ink, width=s)
        draw.text((box[0] - 7 * s, y), text, fill=ink, font=font, anchor="rm")
    for v, text in zip(xt, xlabels):
        x, _ = px(v, y0)
        draw.line([(x, box[1]), (x, box[3])], fill=grid, width=s)
        draw.line([(x, box[3]), (x, box[3] + 4 * s)], fill=ink, width=s)
        draw.text((x, box[3] + 7 * s), text, fill=ink, font=font, anchor="ma")
    draw.rectangle(box, outline=ink, width=s)
    draw.text(((box[0] + box[2]) / 2, box[1] - 9 * s), title, fill=ink, font=title_font, anchor="ms")
    draw.text(((box[0] + box[2]) / 2, height - 8 * s), xlabel, fill=ink, font=font, anchor="ms")
    _vertical_text(img, ylabel, font, ink, centre_y=(box[1] + box[3]) / 2)

    for _, pts, colour, markers in series:
        if not pts:
            continue
        line = [px(x, y) for x, y in pts]
        if len(line) > 1:
            draw.line(line, fill=colour, width=int(1.5 * s), joint="curve")
        if markers or len(line) == 1:
            for x, y in line:
                _dot(draw, x, y, colour)
    # the legend, upper right
    entries = [(lab, col, mk) for lab, pts, col, mk in series if pts]
    if entries:
        row = 17 * s
        text_w = max(draw.textlength(lab, font=font) for lab, _, _ in entries)
        lx1, ly0 = box[2] - 8 * s, box[1] + 8 * s
        lx0 = lx1 - text_w - 42 * s
        draw.rectangle((lx0, ly0, lx1, ly0 + row * len(entries) + 6 * s), fill="white", outline=(200, 200, 200),
                       width=s)
        for i, (lab, col, mk) in enumerate(entries):
            cy = ly0 + 3 * s + row * i + row / 2
            draw.line([(lx0 + 6 * s, cy), (lx0 + 28 * s, cy)], fill=col, width=int(1.5 * s))
            if mk:
                _dot(draw, lx0 + 17 * s, cy, col)
            draw.text((lx0 + 34 * s, cy), lab, fill=ink, font=font, anchor="lm")
    img.resize(SIZE, Image.Resampling.LANCZOS).save(path, optimize=False)
    return Path(path)


# matplotlib's "Blues" colormap at nine stops (its ColorBrewer definition); linear in between
_BLUES = [(247, 251, 255), (222, 235, 247), (198, 219, 239), (158, 202, 225), (107, 174, 214), (66, 146, 198),
          (33, 113, 181), (8, 81, 156), (8, 48, 107)]


def blues(t: float) -> tuple[int, int, int]:
    """The colour of ``t`` in [0, 1] on the Blues scale (0 near white, 1 dark blue)."""
    t = min(max(t, 0.0), 1.0) * (len(_BLUES) - 1)
    i = min(int(t), len(_BLUES) - 2)
    f = t - i
    return tuple(round(a + (b - a) * f) for a, b in zip(_BLUES[i], _BLUES[i + 1]))  # type: ignore[return-value]


def confusion_chart(path: Path, matrix: Sequence[Sequence[int]], labels: Sequence[str], *, title: str) -> Path:
    """Write a PNG of a confusion matrix (rows: true label, columns: predicted), counts in the cells."""
    from PIL import Image, ImageDraw, ImageFont

    n = len(labels)
    if len(matrix) != n or any(len(row) != n for row in matrix):
        raise ValueError(f"a {n} x {n} matrix is needed for {n} labels")
    s = _SCALE
    font = ImageFont.load_default(size=11 * s)
    title_font = ImageFont.load_default(size=13 * s)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(probe.textlength(str(lab), font=font) for lab in labels)
    cell = max(60 * s, int(label_w) + 10 * s)  # wide enough that the column labels do not overlap
    left, top = int(label_w) + 46 * s, 40 * s
    width, height = left + n * cell + 20 * s, top + n * cell + 52 * s
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    ink = (40, 40, 40)
    most = max((max(row) for row in matrix), default=0) or 1
    for r, row in enumerate(matrix):
        for c, count in enumerate(row):
            x, y = left + c * cell, top + r * cell
            draw.rectangle((x, y, x + cell, y + cell), fill=blues(count / most))
            draw.text((x + cell / 2, y + cell / 2), str(count), font=font, anchor="mm",
                      fill="white" if count > most / 2 else "black")
    draw.rectangle((left, top, left + n * cell, top + n * cell), outline=ink, width=s)
    for i, lab in enumerate(labels):
        draw.text((left - 6 * s, top + i * cell + cell / 2), str(lab), fill=ink, font=font, anchor="rm")
        draw.text((left + i * cell + cell / 2, top + n * cell + 6 * s), str(lab), fill=ink, font=font, anchor="ma")
    draw.text((left + n * cell / 2, top - 12 * s), title, fill=ink, font=title_font, anchor="ms")
    draw.text((left + n * cell / 2, height - 8 * s), "predicted", fill=ink, font=font, anchor="ms")
    _vertical_text(img, "true", font, ink, centre_y=top + n * cell / 2)
    img.resize((width // s, height // s), Image.Resampling.LANCZOS).save(path)
    return Path(path)


__all__ = ["BLUE", "ORANGE", "SIZE", "blues", "confusion_chart", "line_chart", "nice_ticks"]
