#!/usr/bin/env python3
"""Benchmark of the feature spaces: cluster quality (ACC, NMI) of K-means in pixels, PCA and UMAP.

    KAGGLEHUB_CACHE=/tmp/kagglehub python bench/bench_features.py [--quick] [--out FILE.md]

MNIST and Fashion-MNIST, all 70,000 images each, K=10, seeds 0-2: for each feature space the
features are computed (UMAP with random_state=seed, so each seed embeds anew; PCA depends on no
seed and is computed once), then this project's KMeans(10, random_state=seed) clusters them.
Prints one markdown table (mean and range over the seeds, with the embedding and fit times) and
writes it to bench/results/features.md, or to --out; rows are also appended to a .jsonl file
beside it as they finish, so a stopped run keeps what it measured. `--quick`: 3,000 images and
one seed (checks the script; its figures mean little). The embeddings here skip the map's 2-D
layout (the command line adds it; its time is in docs/notes-features.md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from kmeans_mnist.data.datasets import load_dataset
from kmeans_mnist.engine.estimator import KMeans
from kmeans_mnist.features import PCA, embed_umap, fit_pca, parse_space
from kmeans_mnist.results.metrics import evaluate

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "features.md"
DATASETS = ("mnist", "fashion")
SPACES = ("pixels", "pca:50", "umap:10")
# Published rows for comparison (n2d: McConville et al. 2019, autoencoder + UMAP + GMM).
PUBLISHED = {"mnist": "n2d: ACC 0.979, NMI 0.942", "fashion": "n2d: ACC 0.672, NMI 0.684"}


def features_of(pixels: np.ndarray, text: str, seed: int, pca_cache: dict) -> tuple[np.ndarray, float]:
    """(features, seconds to compute them) as the command line's --features computes them."""
    space = parse_space(text)
    started = time.perf_counter()
    if space.method == "pixels":
        return pixels, 0.0
    if space.method == "pca":
        if text not in pca_cache:
            pca: PCA = fit_pca(pixels, space.dims)
            pca_cache[text] = (pca.transform(pixels), time.perf_counter() - started)
        return pca_cache[text]
    values = embed_umap(pixels, space.dims, seed, with_map=False)["values"]
    return values, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3,000 images, one seed")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--spaces", default=",".join(SPACES))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    seeds = range(1 if args.quick else args.seeds)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log = args.out.with_suffix(".jsonl")
    load_avg = os.getloadavg()
    head = (
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC · {platform.processor() or platform.machine()}"
        f" · {os.cpu_count()} cores · load average at start {load_avg[0]:.1f} · numpy {np.__version__}"
    )
    rows = []
    for name in args.datasets.split(","):
        data = load_dataset(name, limit=3000 if args.quick else None)
        pixels, labels = data.all_pixel, data.labels
        pca_cache: dict = {}
        for text in args.spaces.split(","):
            runs = []
            for seed in seeds:
                values, embed_seconds = features_of(pixels, text, seed, pca_cache)
                started = time.perf_counter()
                model = KMeans(10, random_state=seed).fit(values)
                fit_seconds = time.perf_counter() - started
                scores, _, _ = evaluate(labels, model.labels_, 10)
                run = {
                    "dataset": name,
                    "n": len(pixels),
                    "features": text,
                    "seed": seed,
                    "accuracy": scores["accuracy"],
                    "nmi": scores["nmi"],
                    "embed_seconds": embed_seconds,
                    "fit_seconds": fit_seconds,
                    "load_average": os.getloadavg()[0],
                }
                runs.append(run)
                with open(log, "a", encoding="utf-8") as file:
                    file.write(json.dumps(run) + "\n")
                print(json.dumps(run), file=sys.stderr, flush=True)
            rows.append(summarise(runs))
    table = markdown(head, rows)
    args.out.write_text(table, encoding="utf-8")
    print(table)
    return 0


def summarise(runs: list[dict]) -> dict[str, str]:
    def spread(name: str) -> str:
        values = [run[name] for run in runs]
        mean = statistics.fmean(values)
        return f"{mean:.3f} ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else f"{mean:.3f}"

    first = runs[0]
    embed = [run["embed_seconds"] for run in runs if run["embed_seconds"] > 0]
    return {
        "dataset": f"{first['dataset']} ({first['n']:,})",
        "features": first["features"],
        "seeds": f"{len(runs)}",
        "ACC": spread("accuracy"),
        "NMI": spread("nmi"),
        "embedding s": f"{statistics.fmean(embed):.1f}" if embed else "-",
        "fit s": f"{statistics.fmean(run['fit_seconds'] for run in runs):.2f}",
        "published": PUBLISHED.get(first["dataset"], "") if first["features"] == "umap:10" else "",
    }


def markdown(head: str, rows: list[dict[str, str]]) -> str:
    columns = list(rows[0]) if rows else []
    lines = [head, "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row[column] for column in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
