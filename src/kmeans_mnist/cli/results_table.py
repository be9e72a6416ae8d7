"""The table the terminal shows as each K is saved (ResultsTable), and the K advice after it."""

from __future__ import annotations

from ..results.kchoice import mean_std, recommend

TERMINAL_COLUMNS = (  # header, summary column, decimals; label scores only when the data has labels
    ("silhouette", "silhouette", 4),
    ("CH", "calinski_harabasz", 1),
    ("DB", "davies_bouldin", 3),
    ("accuracy", "accuracy", 4),
    ("purity", "purity", 4),
    ("NMI", "nmi", 4),
)


class ResultsTable:
    """Prints each K's results line as soon as that K is saved (mean ± std over repeats), under a
    header printed once; after the last K, says that the sweep's pictures are being drawn. A
    closed stdout (`| head`) stops the printing, not the sweep (broken tells the caller)."""

    def __init__(self, terminal, last_k: int, labelled: bool, repeats: int, quiet: bool, on_broken=None):
        self.terminal, self.last_k, self.repeats, self.quiet = terminal, last_k, repeats, quiet
        self.on_broken = on_broken
        self.columns = [c for c in TERMINAL_COLUMNS if labelled or c[1] not in ("accuracy", "purity", "nmi")]
        self.width = 15 if repeats > 1 else 10
        self.header_done = self.broken = False

    def __call__(self, result) -> None:
        if self.quiet:
            return
        self.terminal.done()
        try:
            self._print(result)
        except BrokenPipeError:
            self.broken = True
            if self.on_broken is not None:
                self.on_broken()
        if result.k == self.last_k:
            self.terminal.phase("drawing the sweep's pictures and report.html")

    def _print(self, result) -> None:
        if self.broken:
            return
        width = self.width
        if not self.header_done:
            header = f"{'K':>4} {'iter':>5} {'inertia':>12}"
            header += "".join(f" {name:>{width}}" for name, _, _ in self.columns)
            header += f" {'stability':>9}" if self.repeats > 1 else ""
            print(header + "  folder", flush=True)
            self.header_done = True
        row = result.row
        note = "" if result.converged else "  (stopped at --max-iter)"
        if result.reseeds:
            note += f"  ({result.reseeds} emptied cluster(s) re-seeded)"
        line = f"{row['k']:>4} {row['n_iter']:>5} {float(row['inertia']):>12.4e}"
        line += "".join(
            f" {mean_std(row, name, decimals, '±'):>{width}}" for _, name, decimals in self.columns
        )
        if self.repeats > 1:
            line += f" {row.get('stability') or '-':>9}"
        print(f"{line}  {result.folder}{note}", flush=True)


def print_choice(sweep) -> None:
    """After the table: the recommendation over every K in the experiment folder, and the files."""
    rows = sweep.rows
    if not rows:
        return
    ks = sorted(int(row["k"]) for row in rows)
    print(f"choosing K among K={', '.join(map(str, ks))} in {sweep.folder}:")
    for line in recommend(rows):
        print(f"  {line}")
    folder = sweep.folder
    print(
        f"summary: {folder / 'summary.csv'}, chart: {folder / 'k-choice.png'}, "
        f"table: {folder / 'results.md'}, report: {folder / 'report.html'}"
    )
