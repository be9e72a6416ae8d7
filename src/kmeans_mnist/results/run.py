"""The data files of one K's folder: summary.json, assignments.csv and model.npz.

What each cluster stands for (ClusterClasses), each image's distance to its centre, and the record
every other file is drawn from. The pictures of the same folder are render/kfolder.py; putting the
folder in place is the experiment's (results/experiment.py). Clusters are numbered 1..K in every
file, as the original project did; the Python API keeps 0..K-1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .csvfile import field, text_safe
from .model import save_model  # noqa: F401  the run's model writer is model.py's (tests/test_predict.py)

ASSIGNMENT_BLOCK_ROWS = 65_536  # rows of assignments.csv formatted at a time
NEAREST_FILES = 8  # file names per cluster in summary.json (report.html's tooltips)


def center_images(centers: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """Centres as K x H x W uint8 images (K x H x W x 3 for colour centres, whose rows hold
    3*H*W values, RGB per pixel): rounded, clipped to 0..255."""
    pixels = np.clip(np.rint(np.asarray(centers, dtype=np.float64)), 0, 255).astype(np.uint8)
    height, width = image_shape
    channels = pixels.shape[1] // (height * width) if height * width else 1
    return pixels.reshape(len(pixels), height, width, *([channels] if channels != 1 else []))


def run_dir(root: Path, dataset_name: str, k: int) -> Path:
    """The folder holding one K's results."""
    return Path(root) / dataset_name / f"k{k}"


def cluster_number_width(k: int) -> int:
    """Digits used for cluster numbers in file names (01..K)."""
    return max(2, len(str(k)))


class ClusterClasses(NamedTuple):
    """Which class each cluster stands for (metrics.matched_classes), in the words people read."""

    column: np.ndarray  # K: the matched class's column in the contingency table
    value: np.ndarray  # K: its label value
    name: list[str]  # K: its name ("Trouser"; the digit for MNIST and USPS)
    share: np.ndarray  # K: share of the cluster's members in that class (0 for an empty cluster)
    method: str  # "hungarian" (K <= classes, one-to-one) or "majority"
    class_names: list[str]  # the table's columns, named
    majority_value: np.ndarray | None = None  # K: the cluster's most frequent class (its label value)
    majority_name: list[str] | None = None  # K: its name
    majority_share: np.ndarray | None = None  # K: its share of the cluster

    def differs(self, cluster: int) -> bool:
        """Whether the cluster's most frequent class is another than its matched one."""
        return self.majority_value is not None and self.majority_value[cluster] != self.value[cluster]

    def caption(self, cluster: int) -> str:
        """'Trouser · 92 %', and the majority when it is another class: '5 · 24 % · mostly 0 · 48 %'."""
        text = f"{self.name[cluster]} · {percent(self.share[cluster])}"
        if self.differs(cluster):
            text += f" · mostly {self.majority_name[cluster]} · {percent(self.majority_share[cluster])}"
        return text


def percent(share: float) -> str:
    return f"{100 * share:.0f} %"


def cluster_classes(dataset, table: np.ndarray, classes: np.ndarray) -> ClusterClasses:
    from .metrics import matched_classes

    column, share, method = matched_classes(table)
    class_names = _class_names(dataset, classes)
    table = np.asarray(table)
    majority = table.argmax(axis=1)
    majority_share = table[np.arange(len(table)), majority] / np.maximum(table.sum(axis=1), 1)
    return ClusterClasses(
        column,
        np.asarray(classes)[column],
        [class_names[c] for c in column],
        share,
        method,
        class_names,
        np.asarray(classes)[majority],
        [class_names[c] for c in majority],
        majority_share.astype(np.float64),
    )


def _class_names(dataset, classes: np.ndarray) -> list[str]:
    names = dataset.class_names or {}
    return [names.get(int(value), str(value)) for value in classes]


def run_record(dataset, model, params, seconds, metrics, table, matching) -> dict:
    summary = {
        "dataset": dataset.name,
        "source": text_safe(dataset.source),
        "n_samples": len(dataset.images),
        "image_shape": [int(n) for n in dataset.image_shape],
        "channels": channels(dataset),
        "k": len(model.cluster_centers_),
        "init": init_name(params.get("init")),
        "n_init": params.get("n_init"),
        "seed": params.get("seed"),
        "max_iter": params.get("max_iter"),
        "tol": params.get("tol"),
        "n_iter": int(model.n_iter_),
        "converged": bool(model.converged_),
        "inertia": float(model.inertia_),
        "cluster_sizes": np.bincount(model.labels_, minlength=len(model.cluster_centers_)).tolist(),
        "empty_cluster_reseeds": int(getattr(model, "n_empty_reseeds_", 0)),
        "n_blank_skipped": int(dataset.n_blank_skipped),
        "seconds": {name: round(float(value), 4) for name, value in seconds.items()},
    }
    if metrics is not None:
        summary["metrics"] = {name: float(value) for name, value in metrics.items()}
        summary["confusion"] = {"classes": matching.class_names, "counts": np.asarray(table).tolist()}
        summary["cluster_classes"] = {
            "method": matching.method,
            "clusters": [
                {
                    "cluster": number,
                    "class": int(matching.value[number - 1]),
                    "name": matching.name[number - 1],
                    "share": round(float(matching.share[number - 1]), 4),
                    "majority_class": int(matching.majority_value[number - 1]),
                    "majority_name": matching.majority_name[number - 1],
                    "majority_share": round(float(matching.majority_share[number - 1]), 4),
                }
                for number in range(1, len(matching.name) + 1)
            ],
        }
    return summary


def image_paths(dataset) -> np.ndarray | None:
    """The images' file names (Dataset.paths, relative to --data-dir), or None for a named
    dataset or a single file (.npy, CSV, IDX), which have no file per image."""
    return getattr(dataset, "paths", None)


def channels(dataset) -> int:
    """1 for grey images, 3 for colour ones."""
    return int(getattr(dataset, "channels", 1))


def nearest_files(dataset, members_by_cluster: list[np.ndarray]) -> list[list[str]] | None:
    """Each cluster's NEAREST_FILES nearest members' paths (for report.html's tooltips), or None
    without file names."""
    paths = image_paths(dataset)
    if paths is None:
        return None
    return [[text_safe(str(paths[i])) for i in members[:NEAREST_FILES]] for members in members_by_cluster]


def write_record(folder: Path, record: dict) -> None:
    """folder/summary.json: the record the experiment's tables and report are made from."""
    (Path(folder) / "summary.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def feature_arrays(features, pixel_means: np.ndarray) -> dict:
    """model.npz's record of the feature space: plain arrays only (never pickle). A PCA model
    keeps its mean and basis, so predict can map new images; a UMAP model cannot be kept so."""
    arrays = {"features": np.str_(features.space.text), "pixel_means": pixel_means}
    if features.pca is not None:
        arrays.update(pca_mean=features.pca.mean, pca_basis=features.pca.basis)
    return arrays


def feature_summary(features, typical: np.ndarray) -> dict:
    """summary.json's feature-space entries and each cluster's most typical member (its index in
    the loaded data; -1 for an empty cluster)."""
    info = features.record() if features is not None else {"features": "pixels"}
    info["typical_members"] = typical.tolist()
    return info


def init_name(init) -> str | None:
    """The init method as text (an array of starting centres is recorded as "array")."""
    return init if init is None or isinstance(init, str) else "array"


def members_nearest_first(clusters: np.ndarray, distances: np.ndarray, k: int) -> list[np.ndarray]:
    """For each cluster, the indices of its members sorted by distance to the centre."""
    order = np.lexsort((distances, clusters))
    boundaries = np.cumsum(np.bincount(clusters, minlength=k))[:-1]
    return np.split(order, boundaries)


def write_assignments(
    path: Path, labels, clusters: np.ndarray, distances: np.ndarray, matching=None, paths=None
) -> None:
    """assignments.csv, one row per image: index,label,cluster,distance,matched_class,matched_name,
    and index,path,label,... for images read from files (paths: Dataset.paths, each a cell made
    by csvfile.field; no path column for named datasets and single files).

    label is blank when unknown, and so are the two matched columns: the class the image's cluster
    stands for (see cluster_classes) and its name, a cell made by the csv module (csvfile.field).
    """
    per_cluster = (
        [","] * (int(clusters.max(initial=-1)) + 1)
        if matching is None
        else [
            f"{value},{field(name)}"
            for value, name in zip(matching.value.tolist(), matching.name, strict=True)
        ]
    )
    with open(path, "w", encoding="utf-8", newline="\n") as file:
        path_column = "path," if paths is not None else ""
        file.write(f"index,{path_column}label,cluster,distance,matched_class,matched_name\n")
        # A block of rows at a time: 8.1 million rows never become one list of strings in memory.
        for start in range(0, len(clusters), ASSIGNMENT_BLOCK_ROWS):
            rows = slice(start, start + ASSIGNMENT_BLOCK_ROWS)
            block = clusters[rows].tolist()
            label_texts = [""] * len(block) if labels is None else labels[rows].tolist()
            values = zip(label_texts, block, distances[rows].tolist(), strict=True)
            path_texts = (
                [""] * len(block) if paths is None else [field(str(name)) + "," for name in paths[rows]]
            )
            # The numbers need no quoting: one f-string per row is six times faster than np.savetxt.
            file.write(
                "".join(
                    f"{index},{path_text}{label},{cluster + 1},{distance:.6g},{per_cluster[cluster]}\n"
                    for index, path_text, (label, cluster, distance) in zip(
                        range(start, start + len(block)), path_texts, values, strict=True
                    )
                )
            )
