"""How long --export-members takes: `python bench/bench_export_members.py [N]` (about a minute).

Writes N (default 10,000) 28x28 PNG files in 10 class folders (MNIST's first N training images
when ../shared is there, else random digit-like images), loads them, fits K=10 once, then times
write_run (samples=0: no cluster grids) without an export and with --export-members png, link
and copy, in turn, REPEATS rounds alternating the four; prints min and median of each, and the
export's own time (with export minus without, per round).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from kmeans_mnist import KMeans, load_dataset
from kmeans_mnist.results.run import write_run

sys.path.insert(0, str(Path(__file__).parent))
from own_images import images_and_labels

REPEATS = 3
MODES = (False, "png", "link", "copy")


def main(count: int) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        images, labels = images_and_labels(count)
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / "pngs" / f"class-{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{index:05d}.png")
        data = load_dataset("files", data_dir=root / "pngs", keep_blank=True)
        model = KMeans(10, random_state=0, max_iter=20).fit(data.all_pixel)
        times: dict[object, list[float]] = {mode: [] for mode in MODES}
        for round_number in range(REPEATS):
            for mode in MODES:
                started = time.perf_counter()
                write_run(
                    root / f"out-{round_number}-{mode}",
                    data,
                    model,
                    params={},
                    seconds={},
                    samples=0,
                    export_members=mode,
                )
                times[mode].append(time.perf_counter() - started)
        print(f"{len(data):,} files, K=10, write_run with samples=0, {REPEATS} rounds (min / median s):")
        for mode in MODES:
            extra = [
                with_export - without for with_export, without in zip(times[mode], times[False], strict=True)
            ]
            line = (
                f"  {mode or 'no export':>9}: {min(times[mode]):.3f} / {statistics.median(times[mode]):.3f}"
            )
            if mode:
                line += f"   export itself: {min(extra):.3f} / {statistics.median(extra):.3f}"
            print(line)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
