"""k-choice.png: the chart for choosing K, from the experiment's summary rows (results/kchoice.py
gives the advice in words). Drawn with Pillow (charts.py), once per sweep."""

from __future__ import annotations

import textwrap
from pathlib import Path

from ..results.metrics import knee
from .charts import Panel, Series, draw_chart, tab_colour

PANELS = (  # (column, title, which end is better)
    ("inertia", "inertia (Kneedle)", None),
    ("silhouette", "silhouette (higher: better)", True),
    ("calinski_harabasz", "Calinski-Harabasz (higher: better)", True),
    ("davies_bouldin", "Davies-Bouldin (lower: better)", False),
)
LABEL_CURVES = (
    ("nmi", "NMI", "tab:green"),
    ("purity", "purity", "tab:purple"),
    ("accuracy", "accuracy", "tab:gray"),
)


def _series(rows: list[dict[str, str]], name: str) -> tuple[list[int], list[float], list[float]]:
    known = [row for row in rows if row.get(name)]
    ks = [int(row["k"]) for row in known]
    means = [float(row[name]) for row in known]
    stds = [float(row.get(f"{name}_std") or 0) for row in known]
    return ks, means, stds


def draw_k_choice(path: Path, rows: list[dict[str, str]], description: str, advice: list[str]) -> None:
    """The chart for choosing K: inertia with its knee, silhouette, Calinski-Harabasz,
    Davies-Bouldin, the label scores when labels are known, and the recommendation in words.
    Error bars are one std over the repeats; only whole K are ticked. Drawn with Pillow
    (charts.py): matplotlib's import and layout took 0.65 s, most of a USPS sweep's budget."""
    ks_all = sorted(int(row["k"]) for row in rows)
    repeats = max((int(row.get("repeats") or 1) for row in rows), default=1)
    ticks = ks_all if len(ks_all) <= 15 else None
    dataset = rows[0]["dataset"] if rows else ""
    panels: list = []
    for name, title, higher in PANELS:
        ks, means, stds = _series(rows, name)
        panel = Panel(title, x_label="K (clusters)", x_ticks=ticks, note="not computed for these rows")
        if ks:
            panel.series.append(Series(ks, means, errors=stds if repeats > 1 else None))
            pick = knee(ks, means) if higher is None else ks[means.index((max if higher else min)(means))]
            if pick is not None and len(ks) > 1:
                panel.mark = (pick, means[ks.index(pick)])
                panel.title = f"{title}: {'knee' if higher is None else 'best'} K={pick}"
            elif higher is None and len(ks) > 1:
                panel.title = f"{title}: no clear knee"
        panels.append(panel)
    labels = Panel(
        "agreement with the true labels (higher is better)",
        x_label="K (clusters)",
        x_ticks=ticks,
        y_range=(0.0, 1.0),
        note="no labels: nothing to compare with",
        legend=True,
    )
    for name, label, colour in LABEL_CURVES:
        ks, means, stds = _series(rows, name)
        if ks:
            labels.series.append(Series(ks, means, label, tab_colour(colour), stds if repeats > 1 else None))
    panels.append(labels)
    words = [
        f"{'one run' if repeats == 1 else f'{repeats} repeats'} per K"
        + (", error bars: one std" if repeats > 1 else "")
    ]
    if len(ks_all) == 1:
        words.append("One K so far: the curves need several K to compare.")
    for line in advice:
        words += textwrap.wrap(line, 52)
    if labels.series:
        words += textwrap.wrap(
            "Accuracy matches clusters to classes one to one, so it drops when K differs from the number "
            "of classes; purity only grows with K: read NMI beside them.",
            52,
        )
    panels.append(words)
    draw_chart(path, f"{dataset}: choosing K", panels, columns=3, subtitle=textwrap.wrap(description, 170))
