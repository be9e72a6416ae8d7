"""The pictures of one K's folder: centroids/, centroids.png, the cluster grids, confusion.png,
evolution.gif, and the members exported as images; drawn from what results/run.py computed."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import numpy as np

from ..results.csvfile import text_safe
from ..results.history import EVOLUTION_MAX_TILES
from ..results.run import center_images, cluster_number_width, image_paths
from .pictures import (
    centroid_sheet,
    cluster_grid,
    draw_confusion,
    percent,
    run_title,
    save_evolution_gif,
    save_png,
)

TYPICAL_MAX_K = 100  # typical.png beyond would be a sheet of thumbnails nobody reads


def picture_count(
    k: int, n_images: int, samples: int, export_members: bool | str, labelled: bool, history, features=None
) -> int:
    """How many pictures draw_k_pictures writes (for the progress bar)."""
    return (
        k  # centroids/
        + 1  # centroids.png
        + (1 if k <= TYPICAL_MAX_K else 0)  # typical.png
        + (k if samples > 0 else 0)
        + (n_images if export_members else 0)
        + (1 if labelled else 0)
        + (1 if history is not None else 0)
        + (1 if features is not None else 0)  # map.png (and map.npz)
    )


def draw_k_pictures(
    folder: Path,
    dataset,
    centers: np.ndarray,
    clusters: np.ndarray,
    members_by_cluster: list[np.ndarray],
    *,
    matching=None,
    metrics: dict | None = None,
    table: np.ndarray | None = None,
    samples: int = 64,
    export_members: bool | str = False,
    history=None,
    step=None,
    features=None,
    pixel_means: np.ndarray | None = None,
) -> np.ndarray:
    """Every picture of one K into folder; step() after each (see picture_count). Returns each
    cluster's most typical member (nearest its centre; -1 for an empty cluster).

    members_by_cluster: each cluster's members, nearest its centre first (results/run.py).
    features: the features.Features the model was fitted in (None: the pixels), whose centres
    are no images: pixel_means (each cluster's mean image) are shown instead."""
    step = step or (lambda: None)
    k = len(centers)
    width = cluster_number_width(k)
    images = np.asarray(dataset.images)
    sizes = np.bincount(clusters, minlength=k)
    representatives = center_images(centers if pixel_means is None else pixel_means, dataset.image_shape)
    title = run_title(dataset.name, k, len(images), metrics)
    in_features = features is not None and features.space.method != "pixels"

    (folder / "centroids").mkdir()
    for number, image in enumerate(representatives, start=1):
        save_png(image, folder / "centroids" / f"centroid_{number:0{width}d}.png")
        step()
    note = None
    if matching is not None:
        note = (
            "captions: cluster, its matched class (one-to-one, Hungarian) and its share of the cluster; "
            "the most frequent class too where that is another"
            if matching.method == "hungarian"
            else "captions: cluster, its majority class (K > classes: no one-to-one match) and its share"
        )
    captions = [matching.caption(i) for i in range(k)] if matching is not None else None
    save_png(
        centroid_sheet(representatives, sizes, title=title, classes=captions, note=note),
        folder / "centroids.png",
    )
    step()

    typical = np.array([members[0] if len(members) else -1 for members in members_by_cluster], dtype=np.int64)
    if k <= TYPICAL_MAX_K:
        typical_images = np.where(
            (typical >= 0).reshape(-1, *[1] * (images.ndim - 1)),  # K x 1 x 1 (x 1 in colour)
            images[np.maximum(typical, 0)],
            np.uint8(255),
        )
        save_png(
            centroid_sheet(
                typical_images,
                sizes,
                title=title,
                classes=captions,
                note="each cluster's most typical member: the one nearest its centre"
                + (f" in the {features.space.text} space" if in_features else ""),
            ),
            folder / "typical.png",
        )
        step()
    export = _member_exporter(dataset, images, export_members) if export_members else None
    if samples > 0 or export_members:
        (folder / "clusters").mkdir()
    for number, members in enumerate(members_by_cluster, start=1):
        if samples > 0:
            grid = _cluster_grid(dataset, title, number, members, samples, matching)
            save_png(grid, folder / "clusters" / f"cluster_{number:0{width}d}.png")
            step()
        if export:
            export(members, folder / "clusters" / f"{number:0{width}d}", step)
    if table is not None:
        draw_confusion(
            folder / "confusion.png", table, matching.class_names, matching.column, matching.method, title
        )
        step()
    if history is not None:
        frames = history.kept_frames(centers)
        if frames:
            gif_title = _evolution_title(dataset, k)
            if k > EVOLUTION_MAX_TILES:
                gif_title += f" · the first {EVOLUTION_MAX_TILES} of {k:,} clusters"
            save_evolution_gif(folder / "evolution.gif", frames, gif_title)
        step()
    if features is not None:
        from .map import write_map

        write_map(
            folder,
            features.map_xy,
            clusters,
            representatives,
            images,
            dataset.labels,
            dataset.class_names,
            title + (f" · features {features.space.text}" if in_features else ""),
            features.map_method,
            features.map_index,
            image_paths(dataset),
        )
        step()
    return typical


def grid_members(
    members: np.ndarray, samples: int, labels: np.ndarray | None = None, matched: int | None = None
) -> dict[str, np.ndarray]:
    """Which members a cluster grid shows, at most `samples` in all, none twice.

    members: the cluster's indices, nearest to the representative first. "nearest": the first
    half; "farthest": the last members (farthest last); with labels, "other": members of other
    classes than the matched one, spread evenly over the distance order, so a mixed cluster
    shows its mix. Small clusters are shown whole, in the nearest section.
    """
    labelled = labels is not None and matched is not None
    if len(members) <= samples:
        other = members[labels[members] != matched] if labelled else members[:0]
        return {"nearest": members, "farthest": members[:0], "other": other[:0]}
    n_nearest = math.ceil(samples / 2)
    n_farthest = (samples - n_nearest) // 2 if labelled else samples - n_nearest
    nearest = members[:n_nearest]
    farthest = members[len(members) - n_farthest :] if n_farthest else members[:0]
    other = members[:0]
    if labelled:
        middle = members[n_nearest : len(members) - n_farthest]
        strangers = middle[labels[middle] != matched]
        n_other = samples - n_nearest - n_farthest
        if len(strangers) > n_other:
            strangers = strangers[np.linspace(0, len(strangers) - 1, n_other).round().astype(np.int64)]
        other = strangers
    return {"nearest": nearest, "farthest": farthest, "other": other}


def _file_captions(dataset, indices: np.ndarray, classes: list[str] | None = None) -> list[list[str]] | None:
    """Caption lines of grid tiles: the file's name (not its folders: the class folder is in the
    heading or the class line), under the class when given; None without file names."""
    paths = image_paths(dataset)
    if paths is None:
        return None if classes is None else [[name] for name in classes]
    names = [_printable(text_safe(str(paths[index])).rsplit("/", 1)[-1]) for index in indices]
    return [[names[i]] if classes is None else [classes[i], names[i]] for i in range(len(names))]


def _printable(text: str) -> str:
    """A line break or other control character in a file name, written as \\n...: one caption line."""
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def _cluster_grid(dataset, title, number, members, samples, matching) -> np.ndarray:
    labels = dataset.labels if matching is not None else None
    index = number - 1
    matched = int(matching.value[index]) if matching is not None else None
    shown = grid_members(members, samples, labels, matched)
    images = dataset.images
    names = dataset.class_names or {}
    size = len(members)
    heading = [title, f"cluster #{number} · {size:,} images"]
    if matching is not None:
        how = "matched class" if matching.method == "hungarian" else "majority class"
        heading[1] += f" · {how}: {matching.name[index]} ({percent(matching.share[index])} of the cluster)"
        if matching.differs(index):
            heading[1] += (
                f" · mostly {matching.majority_name[index]} ({percent(matching.majority_share[index])})"
            )
    sections = []
    if not size:
        sections.append(("an empty cluster: no members", images[:0], None))
    elif not len(shown["farthest"]) and len(shown["nearest"]) == size:
        sections.append(
            (
                f"all {size:,} members, nearest to the representative first",
                images[members],
                _file_captions(dataset, members),
            )
        )
    else:
        nearest, farthest = shown["nearest"], shown["farthest"]
        sections.append(
            (
                f"the {len(nearest)} nearest to the representative",
                images[nearest],
                _file_captions(dataset, nearest),
            )
        )
        if len(farthest):
            sections.append(
                (
                    f"the {len(farthest)} farthest (farthest last)",
                    images[farthest],
                    _file_captions(dataset, farthest),
                )
            )
    if matching is not None and size:
        strangers = int(np.count_nonzero(labels[members] != matched))
        other = shown["other"]
        if not strangers:
            sections.append((f"every member is {matching.name[index]}", images[:0], None))
        elif len(other):
            captions = [names.get(int(label), str(label)) for label in labels[other]]
            sections.append(
                (
                    f"{len(other)} of the {strangers:,} members of other classes than "
                    f"{matching.name[index]}, from nearest to farthest",
                    images[other],
                    _file_captions(dataset, other, captions),
                )
            )
    return cluster_grid(heading, sections)


def _evolution_title(dataset, k: int) -> str:
    return f"{dataset.name} · K={k} · the representatives, iteration by iteration"


EXPORT_MODES = ("png", "link", "copy")


def _member_exporter(dataset, images: np.ndarray, mode):
    """export(members, folder, step) for --export-members MODE (True: link for files, else png).

    link/copy put each member's original file under its own name (symbolic links to the
    absolute original path, or copies where links cannot be made); a dataset without files (a
    named one, an .npy...) writes PNGs by index, as png does.
    """
    paths, root = image_paths(dataset), getattr(dataset, "paths_root", None)
    mode = "link" if mode is True else mode
    if mode not in EXPORT_MODES:
        raise ValueError(f"export_members must be one of {', '.join(EXPORT_MODES)} (or True), got {mode!r}")
    if mode == "png" or paths is None or root is None:
        return lambda members, folder, step: _export_members(images, members, folder, step)
    can_link = [mode == "link"]

    def export(members: np.ndarray, folder: Path, step=None) -> None:
        folder.mkdir()
        taken: set[str] = set()
        for index in members:
            relative = str(paths[index])
            name = _free_name(relative.rsplit("/", 1)[-1], taken)
            source, target = Path(root) / relative, folder / name
            if can_link[0]:
                try:
                    os.symlink(source, target)
                except OSError:  # no links on this file system (or not for this user): copies
                    can_link[0] = False
            if not can_link[0]:
                shutil.copy2(source, target, follow_symlinks=True)
            if step is not None:
                step()

    return export


def _free_name(name: str, taken: set[str]) -> str:
    """name, or name~2, name~3... (before the extension) when a member of the cluster already has
    it; compared ignoring case, for file systems that do."""
    stem, dot, suffix = name.rpartition(".")
    if not stem:
        stem, dot, suffix = name, "", ""
    candidate, number = name, 1
    while candidate.lower() in taken:
        number += 1
        candidate = f"{stem}~{number}{dot}{suffix}"
    taken.add(candidate.lower())
    return candidate


def _export_members(images: np.ndarray, members: np.ndarray, folder: Path, step=None) -> None:
    """Every member as its own PNG, named by its index in the loaded data; step() after each."""
    folder.mkdir()
    width = max(6, len(str(len(images) - 1)))
    for index in members:
        save_png(images[index], folder / f"{index:0{width}d}.png")
        if step is not None:
            step()
