"""Pictures of a run, drawn with Pillow (and matplotlib, imported only where a chart needs it)."""

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHEET_TILE_PIXELS = 112  # centroids.png upscales each representative to about this size
SHEET_COLUMNS = 10
CAPTION_PIXELS = 16
GRID_GAP = 2


def image_grid(tiles: np.ndarray, columns: int, gap: int = GRID_GAP, background: int = 255) -> np.ndarray:
    """Tiles (n x h x w uint8) laid out row by row with a gap around each; an empty grid for n=0."""
    count, height, width = tiles.shape
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    grid = np.full((gap + rows * (height + gap), gap + columns * (width + gap)), background, np.uint8)
    for position, tile in enumerate(tiles):
        top = gap + (position // columns) * (height + gap)
        left = gap + (position % columns) * (width + gap)
        grid[top : top + height, left : left + width] = tile
    return grid


def centroid_sheet(representatives: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """All representatives upscaled (nearest neighbour), each captioned "#<cluster>  n=<size>"."""
    _, height, width = representatives.shape
    scale = max(1, round(SHEET_TILE_PIXELS / max(height, width)))
    tiles = representatives.repeat(scale, axis=1).repeat(scale, axis=2)
    tiles = np.pad(tiles, ((0, 0), (0, CAPTION_PIXELS), (0, 0)), constant_values=255)
    gap = 4
    sheet = Image.fromarray(image_grid(tiles, SHEET_COLUMNS, gap=gap))
    draw = ImageDraw.Draw(sheet)
    columns = min(SHEET_COLUMNS, len(tiles))
    for position, size in enumerate(sizes):
        left = gap + (position % columns) * (width * scale + gap)
        top = gap + (position // columns) * (tiles.shape[1] + gap) + height * scale + 2
        draw.text((left + 2, top), f"#{position + 1}  n={size:,}", fill=0)
    return np.asarray(sheet)


def center_images(centers: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """Centres as K x H x W uint8 images: rounded, clipped to 0..255."""
    pixels = np.clip(np.rint(np.asarray(centers, dtype=np.float64)), 0, 255).astype(np.uint8)
    return pixels.reshape(len(pixels), *image_shape)


def save_png(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(path)  # 2-D uint8: mode "L"


def draw_confusion(path: Path, table: np.ndarray, class_names: list[str]) -> None:
    """Heat map of cluster (rows, 1..K) by class (columns), counts in the cells while they fit."""
    from matplotlib.figure import Figure

    k, n_classes = table.shape
    figure = Figure(figsize=(max(5.0, 0.6 * n_classes + 2.5), max(3.5, 0.4 * k + 1.5)), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(table, cmap="Blues", aspect="auto")
    figure.colorbar(image, ax=axes, label="images")
    axes.set_xticks(range(n_classes), class_names, rotation=45 if max(map(len, class_names)) > 2 else 0)
    axes.set_yticks(range(k), [str(number) for number in range(1, k + 1)])
    axes.set_xlabel("class")
    axes.set_ylabel("cluster")
    axes.set_title("images per cluster and class")
    font_size = 8 if k <= 20 else 6 if k <= 40 else 0
    if font_size:
        dark = table.max() / 2
        for (row, column), count in np.ndenumerate(table):
            color = "white" if count > dark else "black"
            axes.text(column, row, str(count), ha="center", va="center", fontsize=font_size, color=color)
    figure.savefig(path, dpi=100)
