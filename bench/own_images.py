"""How fast own images load: `python bench/own_images.py [N]` (about half a minute).

Writes N (default 10,000) 28x28 PNG files in 10 class folders, the same images as a .npy, a
generic CSV (no header) and IDX files, into a temporary folder, then times
load_dataset("files", ...) on each: the median of 5 loads, in this process (the files in the
page cache, as on a second run). The CSV is timed cold (its parse) and warm (the parsed-data cache).
"""

from __future__ import annotations

import gzip
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from kmeans_mnist import load_dataset
from kmeans_mnist.data.datasets import pillow_warnings_off

REPEATS = 5


def images_and_labels(count: int) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's first `count` training images when ../shared is there, else random digit-like images."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mnist"
    if (shared / "train-images-idx3-ubyte.gz").is_file() and count <= 60_000:
        pixels = gzip.decompress((shared / "train-images-idx3-ubyte.gz").read_bytes())
        labels = gzip.decompress((shared / "train-labels-idx1-ubyte.gz").read_bytes())
        images = np.frombuffer(pixels, np.uint8, offset=16).reshape(-1, 28, 28)[:count]
        return images, np.frombuffer(labels, np.uint8, offset=8)[:count].astype(np.int64)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    images[rng.random(images.shape) < 0.8] = 0
    return images, rng.integers(0, 10, count).astype(np.int64)


def write_sources(folder: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, Path]:
    pngs = folder / "pngs"
    for label in range(10):
        (pngs / str(label)).mkdir(parents=True)
    with pillow_warnings_off():
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            Image.fromarray(image).save(pngs / str(label) / f"{index:06d}.png")
    np.save(folder / "images.npy", images)
    rows = np.concatenate([labels[:, None], images.reshape(len(images), -1)], axis=1)
    np.savetxt(folder / "rows.csv", rows, fmt="%d", delimiter=",")
    idx = folder / "idx"
    idx.mkdir()
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape)
    (idx / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes(), 6))
    label_header = bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big")
    (idx / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(label_header + labels.astype(np.uint8).tobytes(), 6)
    )
    return {
        "folder of PNGs": pngs,
        "IDX (.gz)": idx,
        ".npy (memory-mapped)": folder / "images.npy",
        "CSV": folder / "rows.csv",
    }


def median_seconds(path: Path, cache: Path) -> float:
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        load_dataset("files", data_dir=path, keep_blank=True, cache_dir=cache)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        sources = write_sources(folder, *images_and_labels(count))
        print(f"| source | N | load (median of {REPEATS}) |")
        print("|---|---|---|")
        for name, path in sources.items():
            if name == "CSV":
                started = time.perf_counter()
                load_dataset("files", data_dir=path, keep_blank=True, cache_dir=folder / "cold")
                print(f"| CSV, parsed (cache cold) | {count:,} | {time.perf_counter() - started:.3f} s |")
                name = "CSV, parsed-data cache warm"
            print(f"| {name} | {count:,} | {median_seconds(path, folder / 'cache'):.3f} s |")


if __name__ == "__main__":
    main()
