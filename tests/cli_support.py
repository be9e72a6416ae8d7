"""Helpers for the command-line tests: small generated data, an isolated subprocess, snapshots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

MNIST_HEADER = ",".join(["label"] + [f"{row}x{col}" for row in range(1, 29) for col in range(1, 29)])
FASHION_HEADER = ",".join(["label"] + [f"pixel{i}" for i in range(1, 785)])
KAGGLE_FILES = {
    "mnist": ("mnist_train.csv", "mnist_test.csv", MNIST_HEADER),
    "fashion": ("fashion-mnist_train.csv", "fashion-mnist_test.csv", FASHION_HEADER),
}
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: every connection is refused
CACHE_DIRS = ("parsed-cache", "kagglehub-cache")  # caches in tmp_path, not part of the snapshots


def random_images(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """count 28x28 uint8 images, mostly zeros like MNIST digits, none all black; labels 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    images[rng.random(images.shape) < 0.6] = 0
    images[:, 14, 14] = 255
    return images, rng.integers(0, 10, count).astype(np.int64)


def csv_lines(images: np.ndarray, labels: np.ndarray, header: str = MNIST_HEADER) -> list[bytes]:
    rows = [
        ",".join(map(str, [int(label), *image.ravel().tolist()]))
        for image, label in zip(images, labels, strict=True)
    ]
    return [header.encode()] + [row.encode() for row in rows]


def kaggle_csv(
    lines: list[bytes], newline: bytes = b"\n", bom: bool = False, final_newline: bool = True
) -> bytes:
    return (b"\xef\xbb\xbf" if bom else b"") + newline.join(lines) + (newline if final_newline else b"")


def write_kaggle(
    folder: Path, name: str = "mnist", n_train: int = 20, n_test: int = 10, seed: int = 0
) -> Path:
    """Both Kaggle CSV files of dataset `name` (random images) in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    train_name, test_name, header = KAGGLE_FILES[name]
    for file_name, count, part_seed in ((train_name, n_train, seed), (test_name, n_test, seed + 1)):
        (folder / file_name).write_bytes(kaggle_csv(csv_lines(*random_images(count, part_seed), header)))
    return folder


def write_fixed_width_mnist(folder: Path, count: int, seed: int = 0) -> Path:
    """A large mnist_train.csv made fast: every field written as 3 digits ("007"), which the format allows."""
    folder.mkdir(parents=True, exist_ok=True)
    images, labels = random_images(count, seed)
    values = np.concatenate([labels[:, None], images.reshape(count, -1)], axis=1)
    text = np.empty((count, values.shape[1], 4), dtype=np.uint8)
    text[..., 0] = values // 100 + 48
    text[..., 1] = values // 10 % 10 + 48
    text[..., 2] = values % 10 + 48
    text[..., 3] = ord(",")
    text[:, -1, 3] = ord("\n")
    (folder / "mnist_train.csv").write_bytes(MNIST_HEADER.encode() + b"\n" + text.tobytes())
    return folder


def write_usps(
    folder: Path, size: tuple[int, int] = (32, 48), mode: str = "L", skip: int | None = None
) -> Path:
    """usps_1.jpg .. usps_5.jpg: random sheets of size (width, height) px, in Pillow mode `mode`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    for digit in range(1, 6):
        if digit == skip:
            continue
        pixels = rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)
        image = Image.fromarray(pixels).convert(mode)
        # JPEG holds grey and colour; other modes (a palette, say) are stored as PNG data
        image.save(folder / f"usps_{digit}.jpg", format="JPEG" if mode in ("L", "RGB", "CMYK") else "PNG")
    return folder


def isolated_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a run that can touch nothing outside tmp_path and can download nothing."""
    env = {name: value for name, value in os.environ.items() if name.lower() != "no_proxy"}
    env["KMEANS_MNIST_CACHE"] = str(tmp_path / "parsed-cache")
    env["KAGGLEHUB_CACHE"] = str(tmp_path / "kagglehub-cache")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env[name] = DEAD_PROXY
    env.pop("KMEANS_MNIST_TEST_KAGGLE_CACHE", None)
    (tmp_path / "kagglehub-cache").mkdir(exist_ok=True)
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    """`python -m kmeans_mnist *args` in cwd, isolated (see isolated_env); output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "kmeans_mnist", *args],
        cwd=cwd,
        env=isolated_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(args: list[str], cwd: Path, **popen) -> subprocess.Popen:
    """Like run_cli, but started in the background; stderr unbuffered so lines arrive as printed.
    popen: more of Popen's arguments (stdout, preexec_fn...)."""
    env = isolated_env(cwd)
    env["PYTHONUNBUFFERED"] = "1"
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen}
    return subprocess.Popen([sys.executable, "-m", "kmeans_mnist", *args], cwd=cwd, env=env, **options)


def snapshot(folder: Path, skip: tuple[str, ...] = CACHE_DIRS) -> dict[str, bytes | None]:
    """Every path under folder (or folder itself, if a file) -> its bytes (None for folders)."""
    if folder.is_file():
        return {".": folder.read_bytes()}
    found: dict[str, bytes | None] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if relative.parts[0] in skip:
            continue
        try:
            found[str(relative)] = None if path.is_dir() else path.read_bytes()
        except PermissionError:  # a file made unreadable on purpose
            found[str(relative)] = b"<unreadable>"
    return found


def leftovers(folder: Path) -> list[str]:
    """Temporary or aside entries left by a run (hidden .k*/.summary* names, except the lock)."""
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob(".*")
        if (".tmp-" in path.name or ".old-" in path.name)
    )


def fails_cleanly(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit code 2 with one `error:` line holding the fragments, and no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
