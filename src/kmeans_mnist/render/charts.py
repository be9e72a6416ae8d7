"""Line charts drawn with Pillow: panels of lines over whole-number x (iterations, K), on linear
or log y axes, with error bars, a ringed point and legends.

Why not matplotlib: its import and layout took 0.5-0.7 s per chart, a third of a whole USPS
sweep's budget; these charts are a few lines each. Everything is drawn at twice the size and
halved at the end, which smooths the lines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .pictures import PNG_COMPRESS_LEVEL, font

SCALE = 2  # drawn at twice the size, then halved
TAB10 = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
VIRIDIS = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], float)
GRID_GREY, AXIS_INK, RING = (225, 225, 225), (60, 60, 60), (214, 39, 40)
LEGEND_ROWS = 17


def line_colours(count: int) -> list[tuple[int, int, int]]:
    """matplotlib's tab10 for up to 10 lines, viridis beyond (as matplotlib would choose)."""
    if count <= len(TAB10):
        return [tuple(int(c[i : i + 2], 16) for i in (1, 3, 5)) for c in TAB10[:count]]
    positions = np.linspace(0, len(VIRIDIS) - 1, count)
    low = np.minimum(positions.astype(int), len(VIRIDIS) - 2)
    mixed = VIRIDIS[low] + (VIRIDIS[low + 1] - VIRIDIS[low]) * (positions - low)[:, None]
    return [tuple(round(float(v)) for v in colour) for colour in mixed]


TAB_NAMES = ("blue", "orange", "green", "red", "purple", "brown", "pink", "gray", "olive", "cyan")


def tab_colour(name: str) -> tuple[int, int, int]:
    """matplotlib's "tab:green" and the like, as RGB."""
    return line_colours(10)[TAB_NAMES.index(name.removeprefix("tab:"))]


@dataclass
class Series:
    """One line: its points (x whole numbers), optional error bars (one std), label and colour."""

    x: Sequence[float]
    y: Sequence[float]
    label: str | None = None
    colour: tuple[int, int, int] = (31, 119, 180)
    errors: Sequence[float] | None = None


@dataclass
class Panel:
    """One set of axes. log: a log y axis in whole decades (values <= 0 left out). x_ticks: the
    whole numbers to tick (default: about 8, evenly). mark: a point to ring (a knee, a best K).
    note: said in the middle when no series has a point. legend: a legend inside, top right."""

    title: str
    series: list[Series] = field(default_factory=list)
    x_label: str = ""
    log: bool = False
    x_ticks: Sequence[int] | None = None
    y_range: tuple[float, float] | None = None
    mark: tuple[float, float] | None = None
    note: str = "nothing to draw"
    legend: bool = False


def draw_chart(
    path: Path,
    title: str,
    panels: Sequence[Panel | Sequence[str]],
    *,
    columns: int,
    subtitle: Sequence[str] = (),
    legend: Sequence[Series] = (),
    panel_size: tuple[int, int] = (320, 230),
) -> None:
    """Panels in a grid of `columns`, under a title (and subtitle lines), saved as PNG. A panel
    given as lines of text is printed as words in its place. legend: series named in a column
    right of the panels (for lines shared by every panel)."""
    s = SCALE
    width_in, height_in = panel_size
    left_margin, gap_x, top_margin, gap_y = 78, 80, 56 + 15 * len(subtitle), 80
    rows = math.ceil(len(panels) / columns)
    legend_width = 130 if legend else 0
    width = left_margin + columns * width_in + (columns - 1) * gap_x + 30 + legend_width
    height = top_margin + rows * height_in + (rows - 1) * gap_y + 50
    canvas = Image.new("RGB", (width * s, height * s), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    _text(draw, (width * s // 2, 10 * s), title, 15 * s, anchor="ma")
    for number, line in enumerate(subtitle):
        _text(draw, (width * s // 2, (34 + 15 * number) * s), line, 10 * s, fill=AXIS_INK, anchor="ma")
    for index, panel in enumerate(panels):
        row, column = divmod(index, columns)
        x0 = left_margin + column * (width_in + gap_x)
        y0 = top_margin + row * (height_in + gap_y) + 18
        box = (x0 * s, y0 * s, (x0 + width_in) * s, (y0 + height_in - 18) * s)
        if isinstance(panel, Panel):
            _panel(draw, box, panel)
        else:
            for line_number, line in enumerate(panel):
                _text(draw, (box[0] - 40 * s, box[1] + line_number * 15 * s), line, 11 * s)
    if legend:
        x = (width - legend_width) * s
        _legend(draw, (x, (top_margin + 20) * s), legend, rows=(height - top_margin - 30) // 16)
    canvas.resize((width, height), Image.Resampling.LANCZOS).save(
        path, format="PNG", compress_level=PNG_COMPRESS_LEVEL
    )


def _panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], panel: Panel) -> None:
    s = SCALE
    x0, y0, x1, y1 = box
    _text(draw, ((x0 + x1) // 2, y0 - 22 * s), panel.title, 11 * s, anchor="ma")
    xs = [float(v) for series in panel.series for v in series.x]
    low_x, high_x = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if panel.x_ticks:
        low_x, high_x = min(low_x, min(panel.x_ticks)), max(high_x, max(panel.x_ticks))
    pad_x = max(0.5, (high_x - low_x) * 0.05)
    x_min, x_max = low_x - pad_x, high_x + pad_x

    def to_x(value):
        return x0 + (np.asarray(value, float) - x_min) / (x_max - x_min) * (x1 - x0)

    y_min, y_max, ticks, labels, exponent = _y_axis(panel)

    def to_y(value):
        value = np.asarray(value, float)
        if panel.log:
            value = np.log10(value)
        return y1 - (value - y_min) / (y_max - y_min) * (y1 - y0)

    x_ticks = panel.x_ticks or _whole_ticks(low_x, high_x)
    for tick in x_ticks:
        x = float(to_x(tick))
        draw.line((x, y0, x, y1), fill=GRID_GREY, width=s)
        _text(draw, (x, y1 + 4 * s), f"{int(tick)}", 10 * s, fill=AXIS_INK, anchor="ma")
    for tick, label in zip(ticks, labels, strict=True):
        y = float(y1 - (tick - y_min) / (y_max - y_min) * (y1 - y0))
        draw.line((x0, y, x1, y), fill=GRID_GREY, width=s)
        _text(draw, (x0 - 5 * s, y), label, 10 * s, fill=AXIS_INK, anchor="rm")
    if exponent:
        _text(draw, (x0, y0 - 6 * s), f"x 1e{exponent}", 9 * s, fill=AXIS_INK, anchor="ld")
    draw.rectangle(box, outline=AXIS_INK, width=s)
    if panel.x_label:
        _text(draw, ((x0 + x1) // 2, y1 + 20 * s), panel.x_label, 11 * s, fill=AXIS_INK, anchor="ma")
    drawn = 0
    for order, series in enumerate(panel.series):
        x = np.asarray(series.x, float)
        y = np.asarray(series.y, float)
        keep = np.isfinite(y) & ((y > 0) if panel.log else True)
        points = list(zip(to_x(x[keep]).tolist(), to_y(y[keep]).tolist(), strict=True))
        drawn += len(points)
        if series.errors is not None and not panel.log:
            errors = np.asarray(series.errors, float)[keep]
            for (px, _), value, error in zip(points, y[keep], errors, strict=True):
                if error > 0:
                    top, bottom = float(to_y(value + error)), float(to_y(value - error))
                    draw.line((px, top, px, bottom), fill=series.colour, width=s)
                    for end in (top, bottom):
                        draw.line((px - 4 * s, end, px + 4 * s, end), fill=series.colour, width=s)
        if len(points) > 1:
            draw.line(points, fill=series.colour, width=2 * s, joint="curve")
        if len(points) < 40:
            # earlier series get larger dots, so that equal values (purity = accuracy) show both
            r = (2.5 + 1.5 * (len(panel.series) - 1 - order)) * s
            for px, py in points:
                draw.ellipse((px - r, py - r, px + r, py + r), fill=series.colour)
    if panel.mark is not None and drawn:
        px, py = float(to_x(panel.mark[0])), float(to_y(panel.mark[1]))
        r = 8 * s
        draw.ellipse((px - r, py - r, px + r, py + r), outline=RING, width=2 * s)
    if not drawn:
        _text(draw, ((x0 + x1) // 2, (y0 + y1) // 2), panel.note, 11 * s, fill=AXIS_INK, anchor="mm")
    if panel.legend and drawn:
        named = [series for series in panel.series if series.label]
        _legend(draw, (x1 - 90 * s, y0 + 6 * s), named)


def _legend(
    draw: ImageDraw.ImageDraw, corner: tuple[int, int], series: Sequence[Series], rows: int = LEGEND_ROWS
) -> None:
    """A line and a label per series; past `rows`, the first ones and how many more, up to which."""
    s = SCALE
    left, top = corner
    shown = list(series) if len(series) <= rows else list(series)[: rows - 2]
    for row, item in enumerate(shown):
        y = top + row * 16 * s
        draw.line((left, y + 7 * s, left + 18 * s, y + 7 * s), fill=item.colour, width=2 * s)
        _text(draw, (left + 24 * s, y), item.label or "", 11 * s)
    if len(shown) < len(series):
        _text(draw, (left, top + len(shown) * 16 * s), f"{len(series) - len(shown)} more, up to", 10 * s)
        _text(draw, (left, top + (len(shown) + 1) * 16 * s), series[-1].label or "", 10 * s)


def _y_axis(panel: Panel) -> tuple[float, float, list[float], list[str], int]:
    """(low, high, ticks, labels, exponent) of the y axis: whole decades on a log axis, about
    five round steps otherwise, with large or small numbers written as multiples of 1e<exponent>."""
    values = []
    for series in panel.series:
        y = np.asarray(series.y, float)
        errors = np.zeros_like(y) if series.errors is None else np.asarray(series.errors, float)
        values += list((y + errors)[np.isfinite(y)]) + list((y - errors)[np.isfinite(y)])
    if panel.log:
        positive = [v for v in values if v > 0]
        low = math.floor(math.log10(min(positive))) if positive else 0
        high = max(math.ceil(math.log10(max(positive))), low + 1) if positive else 1
        decades = list(range(low, high + 1))
        every = max(1, math.ceil(len(decades) / 8))
        ticks = [float(d) for d in decades[::every]]
        return low - 0.2, high + 0.05, ticks, [_decade(int(d)) for d in ticks], 0
    low, high = panel.y_range or ((min(values), max(values)) if values else (0.0, 1.0))
    if high == low:
        low, high = low - (abs(low) * 0.1 or 1), high + (abs(high) * 0.1 or 1)
    step = _nice((high - low) / 5)
    ticks = list(np.arange(math.ceil(low / step) * step, high + step * 0.001, step))
    pad = (high - low) * (0.0 if panel.y_range else 0.08)
    biggest = max(abs(low), abs(high))
    exponent = math.floor(math.log10(biggest)) if biggest >= 1e5 or 0 < biggest < 1e-3 else 0
    scaled = step / 10**exponent
    decimals = max(
        0, -math.floor(math.log10(scaled) + 1e-9) + (1 if f"{scaled:.1e}".startswith("2.5") else 0)
    )
    labels = [f"{tick / 10**exponent:.{decimals}f}" for tick in ticks]
    return low - pad, high + pad, ticks, labels, exponent


def _nice(span: float) -> float:
    """The round number (1, 2, 2.5 or 5 x 10^n) nearest above span."""
    if span <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(span))
    for factor in (1, 2, 2.5, 5, 10):
        if span <= factor * magnitude * 1.0000001:
            return factor * magnitude
    return 10 * magnitude


def _whole_ticks(low: float, high: float) -> list[int]:
    """Whole numbers from low to high, about 8 of them, on a 1, 2, 5, 10 ... step."""
    span = max(high - low, 1.0)
    step = next(f * m for m in (1, 10, 100, 1000, 10000, 100000) for f in (1, 2, 5) if span / (f * m) <= 8)
    first = math.ceil(low / step) * step
    return list(range(int(first), int(high) + 1, int(step))) or [int(low)]


def _decade(exponent: int) -> str:
    """10**exponent as a tick label: 0.01, 0.1, 1, 10, ... 10000, else 1e-6, 1e5."""
    if 0 <= exponent <= 4:
        return f"{10**exponent:,}"
    return f"{10.0**exponent:g}" if exponent >= -2 else f"1e{exponent}"


def _text(draw: ImageDraw.ImageDraw, xy, text: str, size: int, fill=(0, 0, 0), anchor: str = "la") -> None:
    scalable = isinstance(font(size), ImageFont.FreeTypeFont)  # the bitmap fallback has no anchors
    draw.text(xy, text, font=font(size), fill=fill, anchor=anchor if scalable else None)


# --- the charts ----------------------------------------------------------------------------


def draw_convergence(path: Path, histories: dict[int, dict[str, list[float]]], title: str) -> None:
    """Inertia above its final value and images moved per iteration, one line per K, on log
    axes (both fall by orders of magnitude; the last iteration's zeros are left out).

    histories: K -> {"iteration": [...], "inertia": [...], "moved": [...]} of the kept restart.
    """
    colours = line_colours(len(histories))
    excess, moved = [], []
    for colour, (k, history) in zip(colours, sorted(histories.items()), strict=True):
        iterations = np.asarray(history["iteration"], float)
        inertia = np.asarray(history["inertia"], float)
        above = inertia / inertia[-1] - 1 if len(inertia) and inertia[-1] > 0 else np.zeros_like(inertia)
        excess.append(Series(iterations, above, f"K={k}", colour))
        moved.append(Series(iterations, np.asarray(history["moved"], float), f"K={k}", colour))
    longest = max((max(h["iteration"], default=1) for h in histories.values()), default=1)
    ticks = _whole_ticks(1, max(longest, 2))
    panels = [
        Panel(
            "inertia above its final value (inertia / final - 1)",
            excess,
            "iteration",
            log=True,
            x_ticks=ticks,
            note="nothing above zero to draw",
        ),
        Panel(
            "images that changed cluster",
            moved,
            "iteration",
            log=True,
            x_ticks=ticks,
            note="nothing above zero to draw",
        ),
    ]
    draw_chart(path, title, panels, columns=2, legend=excess)
