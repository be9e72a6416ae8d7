"""What a whole experiment folder shows: k-choice.png, the sweep-level pictures and report.html.

Everything here is drawn from what the experiment reads back from its folder (results/
experiment.py: every k<K>'s record and summary row; k<K>/model.npz, k<K>/history.csv), not from
one run's memory, so that a run of one K, or runs of several K side by side, leave a folder whose
pictures and page cover every K in it. It runs once at the end of each run, under the folder's
lock, and every file is replaced atomically (Experiment.replacing).

report.html is one self-contained page: relative links to the folder's own files, no network,
no external script (only the interactive map's small inline one, render/map.py), so it opens
offline and from a copied folder.
"""

from __future__ import annotations

import html
import json
import math
import re
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from ..results.run import center_images
from .charts import draw_convergence
from .pictures import run_title, save_png, side_by_side

REPORT = "report.html"
CHART = "k-choice.png"
OLD_CHART = "elbow.png"  # the chart of version 0.1, replaced by k-choice.png
SIDE_BY_SIDE = "representatives_by_k.png"
CONVERGENCE = "convergence.png"
REPORT_MAX_GRIDS = 60  # per K; beyond, the page links to the clusters/ folder
# Keys of k<K>/summary.json that are results of one K, not settings shared by the experiment.
RESULT_KEYS = {
    "k",
    "n_iter",
    "converged",
    "inertia",
    "cluster_sizes",
    "empty_cluster_reseeds",
    "seconds",
    "metrics",
    "confusion",
    "cluster_classes",
    "run_id",
    "best_seed",
    "fit_seconds",
    "scores",
    "silhouette_sample",
    "stability",
    "runs",
    "typical_members",
}
SCORE_NAMES = {"accuracy": "ACC", "nmi": "NMI", "purity": "purity", "ari": "ARI"}


def draw_choosing_k(experiment, runs: dict[int, dict]) -> list[dict[str, str]]:
    """k-choice.png from the rows of `runs` (experiment.runs(), read under experiment.locked());
    returns the rows."""
    from .choosing_k import draw_k_choice

    rows = experiment.rows(runs)
    with experiment.replacing(CHART) as chart:
        draw_k_choice(chart, rows, experiment.describe(rows), experiment.advice(rows))
    experiment.remove(OLD_CHART)  # 0.1's chart would show rows that are no longer compared there
    return rows


def draw_report(experiment, runs: dict[int, dict]) -> Path:
    """The sweep-level pictures and report.html from `runs` (as draw_choosing_k); returns the page."""
    rows = experiment.rows(runs)
    draw_sweep_pictures(experiment, runs)
    with experiment.replacing(REPORT) as page:
        page.write_text(report_html(experiment, runs, rows, experiment.advice(rows)), encoding="utf-8")
    return experiment.folder / REPORT


def finish_experiment(folder: Path) -> Path:
    """Redraw everything an experiment folder shows, under its lock, so runs finishing at the
    same time take turns and the last one's page covers every K; returns report.html's path."""
    from ..results.experiment import Experiment

    experiment = Experiment(folder)
    with experiment.locked():
        runs = experiment.runs()
        draw_choosing_k(experiment, runs)
        return draw_report(experiment, runs)


# --- sweep-level pictures ------------------------------------------------------------------


def draw_sweep_pictures(experiment, runs: dict[int, dict]) -> list[Path]:
    """representatives_by_k.png (a row of representatives per K) and convergence.png (per K,
    from history.csv); a picture with nothing to show is removed rather than left stale."""
    from ..results.history import read_history

    folder = experiment.folder
    name = _experiment_name(folder, runs)
    rows, histories = [], {}
    for k, run in runs.items():
        sub = folder / run["folder"]
        representatives = _representatives(sub / "model.npz")
        if representatives is not None:
            rows.append((k, *_in_class_order(representatives, run)))
        history = read_history(sub / "history.csv")
        if history is not None:
            histories[k] = history
    written = []
    for path, drawable, draw in (
        (
            folder / SIDE_BY_SIDE,
            rows,
            lambda target: save_png(side_by_side(rows, _side_by_side_title(name, runs)), target),
        ),
        (
            folder / CONVERGENCE,
            histories,
            lambda target: draw_convergence(
                target, histories, f"{name}: how each fit converged (the restart kept)"
            ),
        ),
    ):
        if drawable:
            with experiment.replacing(path.name) as temporary:
                draw(temporary)
            written.append(path)
        else:
            experiment.remove(path.name)
    return written


def _representatives(path: Path) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as stored:
            # a model fitted in a feature space keeps its clusters' mean images beside its centres
            means = "pixel_means" if "pixel_means" in stored.files else "cluster_centers"
            centers, shape = stored[means], tuple(int(n) for n in stored["image_shape"])
    except (OSError, ValueError, KeyError):
        return None
    return center_images(centers, shape)


def _in_class_order(representatives: np.ndarray, run: dict) -> tuple:
    """(images, the (value, name) class of each, captions) ordered by class, then largest share;
    (images, None, None) when the classes are not known."""
    matching = (run.get("cluster_classes") or {}).get("clusters")
    if not matching or len(matching) != len(representatives):
        return representatives, None, None
    try:  # placed by what they are: the cluster's most frequent class (the matched one in older files)
        matching = [
            {**m, "class": m["majority_class"], "name": m["majority_name"], "share": m["majority_share"]}
            if "majority_class" in m
            else m
            for m in matching
        ]
        order = sorted(range(len(matching)), key=lambda i: (matching[i]["class"], -matching[i]["share"]))
        classes = [(int(matching[i]["class"]), str(matching[i]["name"])) for i in order]
        captions = [[f"#{matching[i]['cluster']} · {100 * matching[i]['share']:.0f} %"] for i in order]
    except (KeyError, TypeError, ValueError):  # a summary.json edited by hand
        return representatives, None, None
    return representatives[order], classes, captions


def _side_by_side_title(name: str, runs: dict[int, dict]) -> str:
    ordered = any(run.get("cluster_classes") for run in runs.values())
    return f"{name}: the representatives for each K" + (
        " under their most frequent class (captions: cluster, and that class's share of it)"
        if ordered
        else ""
    )


def _experiment_name(folder: Path, runs: dict[int, dict]) -> str:
    return folder.name or next((run.get("dataset") for run in runs.values()), "results")


# --- report.html ---------------------------------------------------------------------------


def report_html(experiment, runs: dict[int, dict], rows: list[dict[str, str]], advice: list[str]) -> str:
    """The page: settings, the summary table, the sweep's charts, then each K's pictures."""
    from .. import __version__

    folder = experiment.folder
    name = _experiment_name(folder, runs)
    ks = ", ".join(str(k) for k in runs) or "none yet"
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(name)}: k-means, K = {_e(ks)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{_e(name)}: k-means, K = {_e(ks)}</h1>",
        f'<p class="meta">written {_e(time.strftime("%Y-%m-%d %H:%M"))} by kmeans-mnist '
        f"{_e(__version__)}; every picture and file below lies in this folder.</p>",
    ]
    if runs:
        parts.append(f"<nav>{' '.join(f'<a href=#k{k}>K={k}</a>' for k in runs)}</nav>")
    parts += _settings_section(experiment.recorded_settings(), runs)
    parts += _summary_section(folder, rows, advice, experiment.recorded_settings() or {})
    parts += _charts_section(folder)
    from .map import map_section

    parts += map_section(folder, runs)
    for k, run in runs.items():
        parts += _k_section(folder, k, run)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1280px; padding: 0 16px;
       color: #1d1d1f; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { margin-top: 36px; border-bottom: 1px solid #ddd; }
h3 { margin: 20px 0 6px; font-size: 16px; }
.meta, .note { color: #666; font-size: 13px; }
nav a { margin-right: 10px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f6f8; } td.text, th.text { text-align: left; }
figure { margin: 10px 0 18px; } figcaption { color: #555; font-size: 13px; }
img { max-width: 100%; height: auto; border: 1px solid #eee; image-rendering: pixelated; }
img.chart { image-rendering: auto; }
.grids { display: flex; flex-wrap: wrap; gap: 10px; }
.grids a img { width: 360px; }
td.text { overflow-wrap: anywhere; max-width: 28em; }
.wide { overflow-x: auto; }
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _href(path: str) -> str:
    return quote(path, safe="/")


def _settings_section(stored: dict | None, runs: dict[int, dict]) -> list[str]:
    """The experiment's settings: its settings.json when there is one, else the scalar keys of
    the K's summary.json that are not results (a key whose value differs is shown per K)."""
    values: dict[str, dict[int, object]] = {}
    if stored:
        values = {
            key: {0: value}
            for key, value in stored.items()
            if key != "format" and not isinstance(value, dict)
        }
    else:
        for k, run in runs.items():
            for key, value in run.items():
                if key in RESULT_KEYS or key == "folder" or isinstance(value, dict):
                    continue
                values.setdefault(key, {})[k] = value
    clusters = {
        k: run["dask_cluster"] for k, run in runs.items() if isinstance(run.get("dask_cluster"), dict)
    }
    if clusters:  # fitted on a Dask cluster (--scheduler): which one, as each K's summary.json says
        values["Dask cluster"] = {k: _cluster_text(cluster) for k, cluster in clusters.items()}
    if not values:
        return ["<h2>Settings</h2>", '<p class="note">no K has been saved in this folder yet.</p>']
    rows = []
    for key, by_k in values.items():
        distinct = {json.dumps(value, sort_keys=True) for value in by_k.values()}
        if len(distinct) == 1:
            shown = _setting_text(next(iter(by_k.values())))
        else:
            shown = "; ".join(f"K={k}: {_setting_text(value)}" for k, value in by_k.items())
        rows.append(f'<tr><th class="text">{_e(key)}</th><td class="text">{_e(shown)}</td></tr>')
    return ["<h2>Settings</h2>", "<table>", *rows, "</table>"]


def _cluster_text(cluster: dict) -> str:
    """A summary.json's dask_cluster in words: scheduler, workers, threads, dashboard."""
    text = f"{cluster.get('scheduler')}: {cluster.get('workers')} workers, {cluster.get('threads')} threads"
    return text + (f", dashboard {cluster['dashboard']}" if cluster.get("dashboard") else "")


def _setting_text(value) -> str:
    if isinstance(value, list):
        return " x ".join(map(str, value)) if all(isinstance(v, int) for v in value) else json.dumps(value)
    return "" if value is None else str(value)


def _summary_section(
    folder: Path, rows: list[dict[str, str]], advice: list[str], settings: dict
) -> list[str]:
    """The summary rows as a table: K links to its section, "x" and "x_std" share a cell
    ("0.542 ± 0.028"), and the columns with one value for every K are said once under the table
    instead of repeated down it. Then the K recommendation."""
    from ..results.experiment import SUMMARY_COLUMNS

    parts = ["<h2>Summary</h2>"]
    if not rows:
        return [*parts, '<p class="note">no K has been saved in this folder yet.</p>']
    header, body = list(SUMMARY_COLUMNS), rows
    columns = {name: [row.get(name, "") for row in body] for name in header}
    spread = [
        name[: -len("_std")] for name in header if name.endswith("_std") and name[: -len("_std")] in columns
    ]
    shown = [name for name in header if not (name.endswith("_std") and name[: -len("_std")] in columns)]
    constant = [name for name in shown if len(body) > 1 and name != "k" and len(set(columns[name])) == 1]
    shown = [name for name in shown if name not in constant]
    lines = [
        '<div class="wide"><table>',
        "<tr>" + "".join(f"<th>{_e(name)}</th>" for name in shown) + "</tr>",
    ]
    for number in range(len(body)):
        cells = []
        for name in shown:
            value = columns[name][number]
            text = _e(value)
            if name in spread and _nonzero(columns[f"{name}_std"][number]):
                text = _e(plus_minus(value, columns[f"{name}_std"][number]))
            if name == "k" and value.isdigit() and (folder / f"k{int(value)}").is_dir():
                text = f'<a href="#k{int(value)}">{text}</a>'
            numeric = bool(re.fullmatch(r"[-+0-9.eE ]*", value))
            cells.append(f"<td{'' if numeric else ' class=text'}>{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines.append("</table></div>")
    constant = [name for name in constant if name not in settings]  # already in the Settings table
    if constant:
        same = " · ".join(f"{name} {columns[name][0] or '-'}" for name in constant)
        lines.append(f'<p class="note">also the same for every K: {_e(same)}</p>')
    files = [
        name
        for name in ("summary.csv", "results.md", "results.tex", "settings.json")
        if (folder / name).is_file()
    ]
    lines.append(
        '<p class="note">' + " · ".join(f'<a href="{_href(name)}">{_e(name)}</a>' for name in files) + "</p>"
    )
    if advice:
        lines += ["<h3>Choosing K</h3>", *(f"<p>{_e(line)}</p>" for line in advice)]
    return parts + lines


def plus_minus(mean: str, std: str) -> str:
    """ "mean ± std" with the std to two significant digits and the mean to the same place (never
    more digits than summary.csv holds): "486.886 ± 0.00031", "8.589664e+09 ± 820"."""
    try:
        m, s = float(mean), float(std)
    except ValueError:
        return f"{mean} ± {std}"
    if not (math.isfinite(m) and math.isfinite(s)) or s <= 0:
        return f"{mean} ± {std}"
    place = math.floor(math.log10(s))  # the std's leading digit
    std_text = f"{s:.{max(0, 1 - place)}f}" if -5 <= place < 5 else f"{s:.1e}"
    if "." in std_text and "e" not in std_text:
        std_text = std_text.rstrip("0").rstrip(".")  # 0.010 -> 0.01
    given = re.fullmatch(r"[-+]?\d*\.?(\d*)(?:[eE]([-+]?\d+))?", mean.strip())
    if given is None:
        return f"{mean} ± {std_text}"
    decimals, exponent = len(given.group(1)), given.group(2)
    if exponent is not None or abs(m) >= 1e5:  # scientific: mantissa digits down to the std's place
        lead = math.floor(math.log10(abs(m))) if m else 0
        digits = max(0, min(lead - place + 1, decimals if exponent is not None else 6))
        return f"{m:.{digits}e} ± {std_text}"
    return f"{m:.{max(0, min(1 - place, decimals))}f} ± {std_text}"


def _nonzero(text: str) -> bool:
    try:
        return float(text) != 0
    except ValueError:
        return bool(text)


# The sweep's pictures in the order the page shows them, with what they show; any other picture
# found in the folder follows, under its file name.
KNOWN_CHARTS = {
    "k-choice.png": "Scores for choosing K",
    "elbow.png": "Inertia against K",
    SIDE_BY_SIDE: "The representatives for each K",
    CONVERGENCE: "How each fit converged: inertia above its final value, and images that changed cluster",
}


def _charts_section(folder: Path) -> list[str]:
    present = sorted(
        path.name
        for path in folder.iterdir()
        if path.suffix.lower() in (".png", ".gif", ".svg") and not path.name.startswith(".")
    )
    if not present:
        return []
    ordered = [name for name in KNOWN_CHARTS if name in present]
    ordered += [name for name in present if name not in KNOWN_CHARTS]
    parts = ["<h2>The sweep</h2>"]
    for name in ordered:
        chart = name != SIDE_BY_SIDE
        parts.append(_figure(name, KNOWN_CHARTS.get(name, name), chart=chart))
    return parts


def _figure(src: str, caption: str, *, chart: bool = False, link: bool = True) -> str:
    image = f'<img src="{_href(src)}" alt="{_e(caption)}"{" class=chart" if chart else ""}>'
    if link:
        image = f'<a href="{_href(src)}">{image}</a>'
    return f"<figure>{image}<figcaption>{_e(caption)}</figcaption></figure>"


def _nearest_tip(nearest: list, stem: str) -> str:
    """A title attribute (tooltip) naming a cluster's nearest files (summary.json's nearest_files),
    escaped; empty for named datasets."""
    number = stem.removeprefix("cluster_")
    if (
        not number.isdigit()
        or not 0 < int(number) <= len(nearest)
        or not isinstance(nearest[int(number) - 1], list)
    ):
        return ""
    names = [str(name) for name in nearest[int(number) - 1]]
    return f' title="{_e("nearest: " + ", ".join(names))}"' if names else ""


def _k_section(folder: Path, k: int, run: dict) -> list[str]:
    sub = run["folder"]
    base = folder / sub
    metrics = run.get("metrics")
    title = run_title(run.get("dataset", ""), k, int(run.get("n_samples", 0) or 0), metrics)
    parts = [f'<h2 id="k{k}">K = {k}</h2>', f"<p>{_e(title)}</p>"]
    facts = []
    if "n_iter" in run:
        facts.append(
            f"{run['n_iter']} iterations" + ("" if run.get("converged", True) else " (stopped at --max-iter)")
        )
    if "inertia" in run:
        facts.append(f"inertia {float(run['inertia']):.4e}")
    seconds = run.get("seconds") or {}
    if seconds:
        facts.append(", ".join(f"{name} {float(value):.2f} s" for name, value in seconds.items()))
    if facts:
        parts.append(f'<p class="note">{_e(" · ".join(facts))}</p>')
    for name, caption in (
        ("centroids.png", "The representatives, captioned with cluster number, matched class and share"),
        ("confusion.png", "Clusters against the true classes"),
        ("evolution.gif", "The representatives, iteration by iteration"),
        ("typical.png", "Each cluster's most typical member: the one nearest its centre"),
        ("map.png", "The map: every image in 2-D, coloured by cluster (and by true class)"),
    ):
        if (base / name).is_file():
            parts.append(_figure(f"{sub}/{name}", caption, chart=name in ("confusion.png", "map.png")))
    grids = sorted((base / "clusters").glob("cluster_*.png")) if (base / "clusters").is_dir() else []
    if grids:
        parts.append("<h3>Each cluster: nearest, farthest and other-class members</h3>")
        shown = grids[:REPORT_MAX_GRIDS]
        parts.append('<div class="grids">')
        nearest = run.get("nearest_files") if isinstance(run.get("nearest_files"), list) else []
        for grid in shown:
            src = _href(f"{sub}/clusters/{grid.name}")
            tip = _nearest_tip(nearest, grid.stem)
            parts.append(f'<a href="{src}"><img src="{src}" alt="{_e(grid.stem)}"{tip}></a>')
        parts.append("</div>")
        if len(grids) > len(shown):
            parts.append(
                f'<p class="note">the first {len(shown)} of {len(grids):,} grids; all are in '
                f'<a href="{_href(sub + "/clusters/")}">{_e(sub)}/clusters/</a></p>'
            )
    files = [
        name
        for name in ("assignments.csv", "summary.json", "history.csv", "model.npz")
        if (base / name).is_file()
    ]
    if files:
        links = " · ".join(f'<a href="{_href(f"{sub}/{name}")}">{_e(name)}</a>' for name in files)
        parts.append(f'<p class="note">files: {links}</p>')
    return parts
