"""The two-photo case of issue 24: `python bench/two_photos.py FOLDER [--odd]`.

Makes two generated colour "photos" (512x512: fractal noise shaped into a warm sunset-like
scene with a sky gradient and a cool leafy one; both built on the same kind of luminance, so
that in grey they look alike) and cuts 228 random 64x64 crops out of each into FOLDER/warm/ and
FOLDER/cool/ (456 JPEG files, as a camera would give). --odd adds what a real folder holds: a
notes.txt and a 32x48 (HxW) crop. Then compare:

    python -m kmeans_mnist 2 --dataset files --data-dir FOLDER --output out
    python -m kmeans_mnist 2 --dataset files --data-dir FOLDER --grey --output out

and read the NMI in out/<folder>/summary.csv and out/<folder>-grey/summary.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 512
CROP = 64
CROPS_PER_PHOTO = 228


def fractal_noise(rng: np.random.Generator, side: int, octaves: int = 6) -> np.ndarray:
    """side x side noise in 0..1 with detail at every scale (sums of upsampled random grids)."""
    total = np.zeros((side, side))
    for octave in range(octaves):
        cells = 2 ** (octave + 2)
        grid = rng.random((cells, cells))
        layer = np.asarray(
            Image.fromarray((grid * 255).astype(np.uint8)).resize((side, side), Image.Resampling.BICUBIC),
            dtype=float,
        )
        total += layer / 255 / 2**octave
    total -= total.min()
    return total / total.max()


def photos(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = np.linspace(0, 1, SIDE)[:, None]
    light = 0.35 + 0.5 * fractal_noise(rng, SIDE)
    warm = np.stack(
        [
            light * (1.0 - 0.2 * rows) + 0.1,  # red: strong, weaker towards the ground
            light * (0.55 + 0.1 * rows),
            light * (0.25 + 0.35 * (1 - rows)),  # a bluish sky at the top
        ],
        axis=2,
    )
    light = 0.35 + 0.5 * fractal_noise(rng, SIDE)
    leaves = fractal_noise(rng, SIDE)
    cool = np.stack(
        [light * (0.35 + 0.2 * leaves), light * (0.85 - 0.1 * leaves) + 0.05, light * 0.6], axis=2
    )
    return tuple(np.clip(picture * 255, 0, 255).astype(np.uint8) for picture in (warm, cool))


def main(folder: Path, odd: bool) -> None:
    rng = np.random.default_rng(1)
    for name, picture in zip(("warm", "cool"), photos(), strict=True):
        (folder / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(folder / f"{name}-photo.png")
        for index in range(CROPS_PER_PHOTO):
            top, left = rng.integers(0, SIDE - CROP, 2)
            crop = picture[top : top + CROP, left : left + CROP]
            Image.fromarray(crop).save(folder / name / f"{name}_{index:03d}.jpg", quality=92)
        (folder / f"{name}-photo.png").rename(folder.parent / f"{folder.name}-{name}-photo.png")
    if odd:
        (folder / "notes.txt").write_text("crops of two photos\n")
        Image.fromarray(photos()[0][:32, :48]).save(folder / "warm" / "colour_odd.jpg")


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--odd" in sys.argv[2:])
