"""Choosing K from a sweep's rows: the recommendation and the results tables (results.md/.tex).

The rows are summary.csv's (experiment.row_from_record): text fields, mean and std over repeats.
The chart of the same rows is render/choosing_k.py; the terminal's table is cli/results_table.py.
"""

from __future__ import annotations

import math

TABLE_SCORES = (  # (column, header, decimals) in the deep-clustering papers' order
    ("accuracy", "ACC", 3),
    ("nmi", "NMI", 3),
    ("ari", "ARI", 3),
    ("purity", "purity", 3),
    ("silhouette", "silhouette", 3),
    ("calinski_harabasz", "CH", 1),
    ("davies_bouldin", "DB", 3),
)


def mean_std(row: dict[str, str], name: str, decimals: int, plus_minus: str = " ± ") -> str:
    """'0.542 ± 0.028' (or '0.542' for one repeat, '-' when unknown)."""
    if not row.get(name):
        return "-"
    text = f"{float(row[name]):.{decimals}f}"
    if row.get(f"{name}_std") and int(row.get("repeats") or 1) > 1:
        text += f"{plus_minus}{float(row[f'{name}_std']):.{decimals}f}"
    return text


def results_tables(rows: list[dict[str, str]], description: str, advice: list[str]) -> tuple[str, str]:
    """results.md and results.tex: one row per K, every score as mean ± std over the repeats."""
    labelled = any(row.get("accuracy") for row in rows)
    columns = [c for c in TABLE_SCORES if labelled or c[0] not in ("accuracy", "nmi", "ari", "purity")]
    repeats = max((int(row.get("repeats") or 1) for row in rows), default=1)
    headers = ["K", *(header for _, header, _ in columns)] + (["stability"] if repeats > 1 else [])
    markdown = [f"# K-means results: {rows[0]['dataset'] if rows else ''}", "", description, ""]
    markdown.append("| " + " | ".join(headers) + " |")
    markdown.append("|" + "|".join("---:" for _ in headers) + "|")
    latex = [
        f"% kmeans-mnist results: {description}",
        "% mean $\\pm$ std over the repeats; needs \\usepackage{booktabs}",
        "\\begin{tabular}{r" + "c" * (len(headers) - 1) + "}",
        "\\toprule",
        " & ".join(f"${h}$" if h == "K" else h for h in headers) + " \\\\",
        "\\midrule",
    ]
    for row in rows:
        cells = [mean_std(row, name, decimals) for name, _, decimals in columns]
        stable = [(row.get("stability") and f"{float(row['stability']):.3f}") or "-"] if repeats > 1 else []
        markdown.append("| " + " | ".join([row["k"], *cells, *stable]) + " |")
        tex_cells = [mean_std(row, name, decimals, " \\pm ") for name, _, decimals in columns]
        tex_cells = [cell if cell == "-" else f"${cell}$" for cell in tex_cells]
        latex.append(" & ".join([row["k"], *tex_cells, *stable]) + " \\\\")
    latex += ["\\bottomrule", "\\end{tabular}"]
    if labelled:
        markdown += ["", "As in papers:", ""]
        for row in rows:
            pairs = ", ".join(
                f"{header} {mean_std(row, name, 3)}" for name, header, _ in columns[:3] if row.get(name)
            )
            markdown.append(f"- K={row['k']}: {pairs}")
    markdown += ["", "## Choosing K", "", *advice, ""]
    if labelled:
        markdown += [
            "Accuracy matches clusters to classes one to one, so it is lowest when K differs from the "
            "number of classes even for good clusters; purity always grows with K. Read NMI and "
            "purity beside it.",
            "",
        ]
    return "\n".join(markdown), "\n".join(latex) + "\n"


def _best(rows: list[dict[str, str]], name: str, highest: bool) -> tuple[int, float] | None:
    """(K, value) with the highest (or lowest) value of a score; ties go to the smaller K."""
    known = [(int(row["k"]), float(row[name])) for row in rows if row.get(name)]
    if not known:
        return None
    sign = -1 if highest else 1
    return min(known, key=lambda pair: (sign * pair[1], pair[0]))


def recommend(rows: list[dict[str, str]]) -> list[str]:
    """Which K each score prefers and why, in two lines; says so when they disagree."""
    from .metrics import knee

    ks = sorted(int(row["k"]) for row in rows)
    if not ks:
        return []
    if len(ks) == 1:
        return [
            f"Only K={ks[0]} so far: the scores choose between several K (run e.g. {max(ks[0] - 2, 2)} to {ks[0] + 2})."
        ]
    by_k = {int(row["k"]): row for row in rows}
    inertia = [float(by_k[k]["inertia"]) if by_k[k].get("inertia") else math.nan for k in ks]
    picks: list[tuple[str, int, str]] = []
    bend = knee(ks, inertia)
    if bend is not None:
        picks.append(("inertia knee", bend, "where more clusters stop paying off"))
    for name, words, highest, why in (
        ("silhouette", "silhouette", True, "highest"),
        ("calinski_harabasz", "Calinski-Harabasz", True, "highest"),
        ("davies_bouldin", "Davies-Bouldin", False, "lowest"),
    ):
        best = _best(rows, name, highest)
        if best:
            picks.append((words, best[0], f"{why}, {best[1]:.4g}"))
    label = _best(rows, "nmi", True)
    first = "; ".join(f"{words} K={k} ({why})" for words, k, why in picks) or "no label-free score yet"
    if label:
        first += f"; with the labels, NMI K={label[0]} ({label[1]:.3f})"
    repeats = max(int(row.get("repeats") or 1) for row in rows)
    return [f"Prefers: {first}.", _verdict(ks, by_k, picks, repeats)]


STABLE = 0.8  # mean pairwise ARI between the repeats below which a K's clusters are not reproducible


def _verdict(ks: list[int], by_k: dict[int, dict], picks: list[tuple[str, int, str]], repeats: int) -> str:
    """One K or none, with the reasons. A score whose best is an end of the range tried says
    little (most scores drift one way with K), so it does not vote; with --repeats, a K whose
    clusters do not come back (stability < 0.8) cannot be recommended, and the most stable K votes."""
    ends = (ks[0], ks[-1])  # with two K, both: then no score votes, and more K are needed
    at_end = [(words, k) for words, k, _ in picks if k in ends]
    voting = [(words, k) for words, k, _ in picks if (words, k) not in at_end]
    reasons = []
    if at_end:
        reasons.append(
            "at an end of the range tried, which says little: "
            + ", ".join(f"{words} K={k}" for words, k in at_end)
        )
    stability = (
        {k: float(by_k[k]["stability"]) for k in ks if by_k[k].get("stability")} if repeats > 1 else {}
    )
    unstable = sorted(k for k, value in stability.items() if value < STABLE)
    inner = [k for k in stability if k not in ends]
    if inner:  # the steadiest K inside the range votes (at an end it would say as little)
        steadiest = min(inner, key=lambda k: (-stability[k], k))
        if stability[steadiest] >= STABLE:
            voting.append((f"stability {stability[steadiest]:.2f}", steadiest))
    if stability and unstable:
        reasons.append(
            f"K={', '.join(map(str, unstable))} not stable over {repeats} repeats (ARI < {STABLE})"
        )
    votes: dict[int, list[str]] = {}
    for words, k in voting:
        if k not in unstable:
            votes.setdefault(k, []).append(words)
    ranked = sorted(votes.items(), key=lambda item: (-len(item[1]), item[0]))
    noise = "" if repeats > 1 else " (one seed per K: --repeats 5 also measures stability)"
    if (
        ranked
        and (len(ranked) == 1 or len(ranked[0][1]) > len(ranked[1][1]))
        and len(ranked[0][1]) >= min(2, sum(len(names) for _, names in ranked))
    ):
        k, names = ranked[0]
        if k in stability and not any(name.startswith("stability") for name in names):
            names = [*names, f"stability {stability[k]:.2f}"]
        others = "; ".join(reasons)
        return f"Recommendation: K={k} ({', '.join(names)}){'; ' + others if others else ''}.{noise}"
    if ranked:
        reasons.insert(0, "the scores split: " + "; ".join(f"K={k} ({', '.join(n)})" for k, n in ranked))
    elif at_end:
        reasons.append(f"try K beyond {ks[0]}..{ks[-1]}")
    else:
        reasons.append("not enough scores: run more K")
    return f"Recommendation: none ({'; '.join(reasons)}); compare the K's centroids.png.{noise}"
