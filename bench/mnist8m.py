#!/usr/bin/env python3
"""Write an MNIST8M-sized benchmark set: deformed copies of the 70,000 MNIST digits, as a .npy.

    python bench/mnist8m.py /tmp/mnist8m.npy [--rows 8100000] [--seed 8100000]

Writes OUT (rows x 784 uint8, memory-mappable with `np.load(OUT, mmap_mode="r")`) and, beside it,
OUT's name with `-labels.npy` (rows uint8 digits 0-9). Never write them into the repository: the
full set is 6.35 GB. About a minute for 8.1M rows on two cores.

Like infimnist (Loosli, Canu and Bottou, 2007), which made MNIST8M: rows 0-69,999 are the MNIST
images themselves (train, then t10k, from ../shared/datasets/mnist); row i >= 70,000 is a
deformed copy of image i mod 70,000 (its label is that image's), so every image is the source
of about 115 rows. A deformation is a random affine map (rotation, scale, shear), a random
elastic field (uniform noise smoothed by a Gaussian, as Simard et al., 2003) and a random
translation of up to 2 pixels in each direction, sampled bilinearly.

Fast enough in NumPy because the pieces are drawn from tables instead of per image: 4,096
distortion fields (affine + elastic, drawn once from the seed) times 25 whole-pixel
translations times 70,000 sources give ~7e9 distinct images, far more than 8.1M rows. Each
output pixel is one gather of a uint32 that packs the 2x2 source neighbourhood, and a
fixed-point bilinear blend (weights in 1/256).

Deterministic: the bytes depend only on --seed and the row index. Rows are made in batches of
BATCH rows, each batch from its own generator seeded with (seed, batch number), so the first N
rows of any larger set are the N-row set (the 1M set is the start of the 8.1M set), whatever
the number of threads.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "datasets" / "mnist"
MNIST_FILES = (
    ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
)
DEFAULT_ROWS = 8_100_000
DEFAULT_SEED = 8_100_000
SIDE = 28
PAD = 6  # blank border around each source: the largest displacement stays inside it (clipped beyond)
PADDED = SIDE + 2 * PAD
BATCH = 2048  # rows per batch (and per random generator)
FIELDS = 4096  # distortion fields in the table
SHIFT = 2  # whole-pixel translation, up to this many pixels each way
# Distortion sizes (in pixels or radians, standard deviations): small, so digits stay legible.
ROTATION = 0.08
SCALE = 0.06
SHEAR = 0.08
ELASTIC_ALPHA = 24.0  # Simard's alpha; with sigma 4 the elastic displacement has ~1 px spread
ELASTIC_SIGMA = 4.0


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip-compressed) as a NumPy array of unsigned bytes."""
    raw = gzip.decompress(path.read_bytes())
    if raw[:2] != b"\0\0" or raw[2] != 8:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(n) for n in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_mnist(folder: Path = MNIST) -> tuple[np.ndarray, np.ndarray]:
    """The 70,000 MNIST images (N x 28 x 28) and labels, train then t10k, in their original order."""
    pairs = [(read_idx(folder / images), read_idx(folder / labels)) for images, labels in MNIST_FILES]
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


def packed_neighbourhoods(images: np.ndarray) -> np.ndarray:
    """Per source pixel (padded), its 2x2 neighbourhood packed into one uint32 (flat, N*PADDED^2).

    Byte 0 is the pixel, 1 its right neighbour, 2 the one below, 3 below right: one gather then
    yields all four values a bilinear sample needs.
    """
    padded = np.zeros((len(images), PADDED + 1, PADDED + 1), dtype=np.uint8)
    padded[:, PAD : PAD + SIDE, PAD : PAD + SIDE] = images
    quads = np.empty((len(images), PADDED, PADDED, 4), dtype=np.uint8)
    quads[..., 0] = padded[:, :-1, :-1]
    quads[..., 1] = padded[:, :-1, 1:]
    quads[..., 2] = padded[:, 1:, :-1]
    quads[..., 3] = padded[:, 1:, 1:]
    return quads.view("<u4").reshape(-1)


def distortion_fields(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """FIELDS random distortions: per output pixel, the padded source offset and bilinear weights.

    Returns offsets (FIELDS x 784 intp, y * PADDED + x of the top-left neighbour) and weights
    (4 x FIELDS x 784 uint16, summing to 256 per pixel).
    """
    rng = np.random.default_rng([seed, 0xF1E1D])
    grid = np.arange(SIDE, dtype=np.float64) - (SIDE - 1) / 2
    y, x = np.meshgrid(grid, grid, indexing="ij")
    angle = rng.normal(0, ROTATION, FIELDS)[:, None, None]
    scale = 1 + rng.normal(0, SCALE, FIELDS)[:, None, None]
    shear = rng.normal(0, SHEAR, FIELDS)[:, None, None]
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    source_y = cos * y - sin * x
    source_x = sin * y + cos * x + shear * y
    for source in (source_y, source_x):  # elastic: smoothed uniform noise (Simard et al., 2003)
        noise = rng.uniform(-1, 1, (FIELDS, SIDE, SIDE))
        source += ELASTIC_ALPHA * gaussian_filter(noise, ELASTIC_SIGMA, axes=(1, 2))
    # Kept SHIFT pixels inside the padded image, so the translation added later stays inside too
    # (beyond PAD - SHIFT pixels out, a source pixel is blank anyway).
    low, high = SHIFT, PADDED - 1 - SHIFT - 1e-6
    source_y = np.clip(source_y + (SIDE - 1) / 2 + PAD, low, high).reshape(FIELDS, -1)
    source_x = np.clip(source_x + (SIDE - 1) / 2 + PAD, low, high).reshape(FIELDS, -1)
    top, left = np.floor(source_y), np.floor(source_x)
    offsets = (top * PADDED + left).astype(np.intp)
    fy = np.rint((source_y - top) * 256)  # fixed point: 0..256
    fx = np.rint((source_x - left) * 256)
    weights = np.stack([(256 - fy) * (256 - fx), (256 - fy) * fx, fy * (256 - fx), fy * fx])
    weights = np.rint(weights / 256)
    weights[0] += 256 - weights.sum(axis=0)  # exactly 256 in all, so a flat patch stays flat
    return offsets, weights.astype(np.uint16)


class Generator:
    """Makes any batch of rows of the set, from the seed alone (thread-safe: batches share no state)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int):
        self.images, self.labels, self.seed = images, labels, seed
        self.quads = packed_neighbourhoods(images)
        self.offsets, self.weights = distortion_fields(seed)
        shifts = np.arange(-SHIFT, SHIFT + 1)
        self.shift_offsets = (shifts[:, None] * PADDED + shifts[None, :]).ravel()

    def batch(self, number: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows number*BATCH ... (+ rows) as (rows x 784 uint8, rows labels)."""
        n_sources = len(self.images)
        index = number * BATCH + np.arange(rows)
        sources = index % n_sources
        rng = np.random.default_rng([self.seed, number])
        field = rng.integers(0, FIELDS, BATCH)[:rows]  # always draw BATCH: prefixes stay identical
        shift = self.shift_offsets[rng.integers(0, len(self.shift_offsets), BATCH)[:rows]]
        at = self.offsets[field]
        at += (sources * PADDED**2 + shift)[:, None]
        packed = np.take(self.quads, at).view(np.uint8).reshape(rows, SIDE * SIDE, 4)
        weights = self.weights[:, field]
        blend = np.multiply(packed[..., 0], weights[0], dtype=np.uint16)
        for corner in (1, 2, 3):
            blend += np.multiply(packed[..., corner], weights[corner], dtype=np.uint16)
        blend += 128
        blend >>= 8
        out = blend.astype(np.uint8)
        original = index < n_sources  # the first 70,000 rows are MNIST itself
        out[original] = self.images[index[original]].reshape(-1, SIDE * SIDE)
        return out, self.labels[sources]


def in_order(pool: ThreadPoolExecutor, work, items, ahead: int):
    """work(item) for each item on the pool, results in order, at most `ahead` in flight (bounded memory)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(work, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def labels_path(images_path: Path) -> Path:
    """Where the labels of an images .npy go: beside it, `NAME-labels.npy`."""
    return images_path.with_name(images_path.stem + "-labels.npy")


def write_set(path: Path, rows: int, seed: int, threads: int, progress: bool = True) -> None:
    """Write `rows` rows to `path` (.npy, rows x 784 uint8) and their labels beside it, atomically.

    Worker threads make the batches; this thread appends them to the file in order.
    """
    started = time.perf_counter()
    generator = Generator(*load_mnist(), seed)
    partial = path.with_name(path.name + ".partial")
    labels = np.empty(rows, dtype=np.uint8)
    n_batches = -(-rows // BATCH)

    def make(number: int) -> np.ndarray:
        start = number * BATCH
        stop = min(rows, start + BATCH)
        images, labels[start:stop] = generator.batch(number, stop - start)
        return images

    try:
        with open(partial, "wb") as file, ThreadPoolExecutor(threads) as pool:
            header = {"descr": "|u1", "fortran_order": False, "shape": (rows, SIDE * SIDE)}
            np.lib.format.write_array_header_2_0(file, header)
            for done, images in enumerate(in_order(pool, make, range(n_batches), 4 * threads), 1):
                file.write(images.data)
                if progress and (done % 256 == 0 or done == n_batches):
                    elapsed = time.perf_counter() - started
                    print(
                        f"\r{min(rows, done * BATCH):,} of {rows:,} rows, {elapsed:.0f} s",
                        end="",
                        file=sys.stderr,
                    )
        np.save(labels_path(path), labels)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    if progress:
        print(
            f"\nwrote {path} and {labels_path(path)} in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the images .npy to write (outside the repository)")
    parser.add_argument(
        "--rows", type=int, default=DEFAULT_ROWS, help=f"rows to write (default {DEFAULT_ROWS:,})"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})"
    )
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="worker threads (default: cores)"
    )
    args = parser.parse_args()
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.out.suffix != ".npy":
        parser.error("the output file must end in .npy")
    if ROOT in args.out.resolve().parents:
        parser.error(f"{args.out} is inside the repository: write it elsewhere (e.g. /tmp)")
    write_set(args.out, args.rows, args.seed, max(1, args.threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
