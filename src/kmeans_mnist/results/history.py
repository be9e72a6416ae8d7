"""How a fit got there: what the engine reports every iteration, kept for history.csv and
evolution.gif.

`FitHistory` is the engine's per-iteration callback. It keeps one row per iteration of every
restart (a few numbers each) and, for the restart that can still win, the representatives at a
bounded number of iterations (at most MAX_FRAMES, thinned evenly as the fit goes on, the last
one always kept; at most EVOLUTION_MAX_TILES clusters), so memory stays small whatever the
number of iterations, restarts or K.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .csvfile import read_rows, write_rows
from .run import center_images

MAX_FRAMES = 32
EVOLUTION_MAX_TILES = 100  # clusters shown in evolution.gif
HISTORY_COLUMNS = ("run", "iteration", "inertia", "moved", "center_shift", "seconds")


class FitHistory:
    """Callback for KMeans / the engine: records every IterationInfo it is given.

    Works with what the engine reports: `centers` (the centres after the update) and `seconds`
    (the iteration's wall time) when present; without them, no frames are kept and each
    iteration's seconds are measured here, from one report to the next.
    """

    def __init__(self, image_shape: tuple[int, int] | None = None, to_pixels=None):
        self.image_shape = image_shape
        self.to_pixels = to_pixels  # centres of a feature space -> pixel rows (features.Features)
        self.rows: list[tuple] = []
        self.last = time.perf_counter()
        self._run = None  # the restart in progress: its frames, stride, last centres, last inertia
        self._best = None  # the finished restart with the lowest inertia so far

    def __call__(self, info) -> None:
        now = time.perf_counter()
        seconds = getattr(info, "seconds", None)
        if seconds is None:  # an engine that does not time its iterations: the time since the last
            seconds = now - self.last
        self.last = now
        self.rows.append(
            (info.run + 1, info.iteration, info.inertia, info.n_changed, info.center_shift, seconds)
        )
        centers = getattr(info, "centers", None)
        if centers is None or self.image_shape is None:
            return
        if self._run is None or self._run["run"] != info.run:
            self._finish_run()
            self._run = {"run": info.run, "frames": [], "stride": 1}
        run = self._run
        caption = (
            f"restart {info.run + 1} · " if self._multiple_runs(info) else ""
        ) + f"iteration {info.iteration} · inertia {info.inertia:.4g} · {info.n_changed:,} moved"
        frame = (info.iteration, caption, centers)
        if (info.iteration - 1) % run["stride"] == 0:
            run["frames"].append(self._frame(frame))
            if len(run["frames"]) > MAX_FRAMES:
                run["frames"] = run["frames"][::2]
                run["stride"] *= 2
        run["last"] = (info.iteration, caption, np.array(centers, dtype=np.float64))
        run["inertia"] = info.inertia

    def _multiple_runs(self, info) -> bool:
        return info.run > 0 or self._best is not None

    def _frame(self, frame: tuple) -> tuple:
        iteration, caption, centers = frame
        shown = np.asarray(centers)[:EVOLUTION_MAX_TILES]
        if self.to_pixels is not None:
            shown = self.to_pixels(shown)
        return iteration, caption, center_images(shown, self.image_shape)

    def _finish_run(self) -> None:
        if self._run is not None and (self._best is None or self._run["inertia"] < self._best["inertia"]):
            self._best = self._run
        self._run = None

    def kept_frames(self, final_centers: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """The frames of the restart whose last centres are the model's (none if no restart's are)."""
        self._finish_run()
        best = self._best
        if best is None or not np.array_equal(best["last"][2], np.asarray(final_centers, np.float64)):
            return []
        frames = best["frames"]
        if frames[-1][0] != best["last"][0]:
            frames = [*frames, self._frame(best["last"])]
        return [(caption, images) for _, caption, images in frames]

    def write_csv(self, path: Path) -> None:
        """history.csv: run (restart, from 1), iteration (from 1 within it), inertia (of the
        iteration's assignment), moved (images that changed cluster), center_shift (squared
        centre movement summed over the centres), seconds (the iteration's wall time)."""
        rows = (
            (run, iteration, f"{inertia:.10g}", moved, f"{shift:.6g}", f"{seconds:.4f}")
            for run, iteration, inertia, moved, shift, seconds in self.rows
        )
        with open(path, "w", encoding="ascii", newline="") as file:
            write_rows(file, HISTORY_COLUMNS, rows)


def read_history(path: Path) -> dict[str, list[float]] | None:
    """iteration, inertia and moved of the restart with the lowest final inertia in a history.csv
    (the one the model kept, as far as the file can tell); None if it cannot be read."""
    try:
        lines = read_rows(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not lines or lines[0][: len(HISTORY_COLUMNS)] != list(HISTORY_COLUMNS):
        return None
    runs: dict[int, dict[str, list[float]]] = {}
    try:
        for fields in lines[1:]:
            run, iteration, inertia, moved, _, _ = fields[: len(HISTORY_COLUMNS)]
            rows = runs.setdefault(int(run), {"iteration": [], "inertia": [], "moved": []})
            rows["iteration"].append(int(iteration))
            rows["inertia"].append(float(inertia))
            rows["moved"].append(float(moved))
    except ValueError:
        return None
    if not runs:
        return None
    return min(runs.values(), key=lambda rows: rows["inertia"][-1])
