"""What the terminal shows while a run works, so that it never goes quiet for long.

Phases, in order: loading (and parsing) the data; for each K, the k-means++ initialisation
(centres chosen, of K), each restart's iterations (counted from 1 within the restart), and the
writing of its files (files written, of all); at the end, the sweep's pictures and report.html.

Live bars (tqdm) and phase lines appear only when stderr is a terminal; a log file gets the
permanent lines alone. --quiet shows nothing.
"""

from __future__ import annotations

import sys
from typing import TextIO

CLEAR_LINE = "\x1b[2K\r"  # erase the whole line, back to its start
_on_screen: Terminal | None = None  # the terminal with a phase line or bar showing, if any


def clear() -> None:
    """Clear any phase line or bar from the screen: before an error or interrupt message."""
    if _on_screen is not None:
        _on_screen.done()


class Terminal:
    """The run's messages on stderr: permanent lines (say) and transient phases (live only)."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None, n_init: int = 1):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = not quiet
        self.live = self.enabled and _is_terminal(self.stream)
        self.n_init = n_init
        self._phase_shown = False
        self._fit: FitProgress | None = None  # the K whose bar may be showing

    def say(self, text: str) -> None:
        """A permanent line (after clearing any phase line)."""
        if self.enabled:
            self._clear()
            print(text, file=self.stream, flush=True)

    def phase(self, text: str) -> None:
        """A transient line saying what is being done now ("loading usps ..."), replaced by the
        next line or phase. Shown only on a terminal."""
        global _on_screen
        if self.live:
            self.done()
            self.stream.write(f"{text} ...")
            self.stream.flush()
            self._phase_shown = True
            _on_screen = self

    def done(self) -> None:
        """Clear the phase line and close the bar, if any."""
        if self._fit is not None:
            self._fit.close()
        self._clear()

    def _clear(self) -> None:
        global _on_screen
        if self._phase_shown:
            self.stream.write(CLEAR_LINE)
            self.stream.flush()
            self._phase_shown = False
        _on_screen = None

    def fit(self, k: int, repeat: int = 0, repeats: int = 1) -> FitProgress:
        """The progress display of one K (one of its repeats): a context manager around its fit;
        its `writing` shows the files written after it, until the next line."""
        return FitProgress(self, k, repeat, repeats)


class FitProgress:
    """One K's bars: initialisation, then iterations of each restart, then files written.

    Used as the engine's callbacks: call it with each IterationInfo, `initialisation` with each
    InitProgress, `writing(done, total)` as files are written. Each bar replaces the previous one
    on the same line, and the last one is cleared on exit.
    """

    def __init__(self, terminal: Terminal, k: int, repeat: int = 0, repeats: int = 1):
        self.terminal, self.k = terminal, k
        self.label = f"{k} repeat {repeat + 1}/{repeats}" if repeats > 1 else str(k)
        self.bar = None
        self.kind = None  # ("init" | "iterations" | "writing", restart)

    def __enter__(self) -> FitProgress | None:
        if not self.terminal.live:
            return None
        self.terminal.phase(f"K={self.label}: starting")
        self.terminal._fit = self
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        self.terminal.phase(f"K={self.k}: scoring")

    def _restart(self, run: int) -> str:
        return f" restart {run + 1}/{self.terminal.n_init}" if self.terminal.n_init > 1 else ""

    def _bar(self, kind: tuple, **options):
        """The bar for this phase, replacing the previous one when the phase changed."""
        global _on_screen
        if self.kind != kind:
            self.terminal.done()
            from tqdm import tqdm

            # miniters=1: redraw on time alone; tqdm's default skips updates after a fast start,
            # which froze the bar while slower files followed.
            self.bar = tqdm(file=self.terminal.stream, leave=False, dynamic_ncols=True, miniters=1, **options)
            self.kind = kind
            self.terminal._fit = self
            _on_screen = self.terminal
        return self.bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.kind = None

    def initialisation(self, info) -> None:
        """An InitProgress: centres chosen so far (of K) for one restart."""
        bar = self._bar(
            ("init", info.run),
            desc=f"K={self.label}{self._restart(info.run)}: k-means++",
            total=info.n_clusters,
            unit=" centres",
        )
        bar.update(info.n_chosen - bar.n)

    def __call__(self, info) -> None:
        """An IterationInfo: one more iteration of restart info.run, counted from 1 within it."""
        bar = self._bar(
            ("iterations", info.run), desc=f"K={self.label}{self._restart(info.run)}: iteration", unit=" it"
        )
        bar.set_postfix_str(f"inertia {info.inertia:.4g}, {info.n_changed:,} moved", refresh=False)
        bar.update(info.iteration - bar.n)

    def writing(self, done: int, total: int) -> None:
        """Files of this K written so far, of total; once all are, the folder is being saved."""
        if done >= total:
            self.terminal.phase(f"K={self.k}: saving the folder and the summary")
            return
        bar = self._bar(("writing", 0), desc=f"K={self.k}: writing files", total=total, unit=" files")
        bar.update(done - bar.n)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
