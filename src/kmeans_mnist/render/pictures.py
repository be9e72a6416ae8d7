"""Pictures of a run, drawn with Pillow: representatives, cluster grids, the confusion heat map,
the evolution GIF and the K-side-by-side sheet (the line charts are in charts.py). No chart
library: each of these is a grid of images, and matplotlib's import and layout cost more than
the whole drawing.

Every picture carries a title that says what it shows (dataset, K, the scores), and every one
stays a sane size for large K: past a point, sheets show the largest clusters and say so, and the
confusion table merges clusters by their majority class.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SHEET_TILE_PIXELS = 112  # centroids.png upscales each representative to about this size
SHEET_COLUMNS = 10
SHEET_MAX_TILES = 2500  # beyond this, centroids.png shows the largest clusters (all are in centroids/)
GRID_TILE_PIXELS = 48  # cluster grids: each member upscaled to about this size (28 px x2, 16 px x3)
GRID_COLUMNS = 8
GRID_NAMED_TILE_PIXELS = 96  # cluster grids of files: cells this wide, for the file names under them
GRID_GAP = 2
CONFUSION_MAX_ROWS = 60  # beyond this, clusters are merged by majority class
SIDE_BY_SIDE_MAX_TILES = 40  # per K row
EVOLUTION_TILE_PIXELS = 84
EVOLUTION_FRAME_MS = 150
EVOLUTION_LAST_FRAME_MS = 2000
INK, GREY, WHITE = 0, 110, 255
PNG_COMPRESS_LEVEL = 1  # zlib: slightly larger files than the default 6, written much faster
BLUES = np.array([[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]], float)
MATCH_OUTLINE = (230, 120, 20)


# --- text ----------------------------------------------------------------------------------


@functools.cache
def font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font (no font file needed); its fixed bitmap font without FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, OSError, TypeError):
        return ImageFont.load_default()


@functools.lru_cache(maxsize=4096)
def text_width(text: str, size: int) -> int:
    return math.ceil(font(size).getlength(text))


def fitted_size(text: str, width: int, size: int, smallest: int = 8) -> int:
    """The largest font size up to `size` at which text fits in width pixels (at least `smallest`)."""
    while size > smallest and text_width(text, size) > width:
        size -= 1
    return size


def shortened(text: str, width: int, size: int) -> str:
    """text, or its start and end around "..." when it is wider than width px at size px (a long
    file name keeps its extension and the number it often ends with)."""
    if text_width(text, size) <= width or len(text) < 5:
        return text
    keep = len(text) - 1
    while (
        keep > 2 and text_width(f"{text[: (keep + 1) // 2]}...{text[len(text) - keep // 2 :]}", size) > width
    ):
        keep -= 1
    return f"{text[: (keep + 1) // 2]}...{text[len(text) - keep // 2 :]}"


def text_block(
    lines: Sequence[tuple[str, int] | str], width: int = 0, fill: int = INK, pad: int = 4
) -> Image.Image:
    """Lines of text (plain strings at 12 px, or (text, size) pairs; below 12 px in grey) on white."""
    lines = [(line, 12) if isinstance(line, str) else line for line in lines]
    rendered = [_line_image(text, size, fill if size >= 12 else GREY) for text, size in lines]
    heights = [round(size * 1.35) for _, size in lines]
    width = max([width] + [image.width + 2 * pad for image in rendered])
    block = Image.new("L", (width, sum(heights) + 2 * pad), WHITE)
    top = pad
    for image, height in zip(rendered, heights, strict=True):
        block.paste(image, (pad, top))
        top += height
    return block


@functools.lru_cache(maxsize=512)
def _line_image(text: str, size: int, fill: int) -> Image.Image:
    """One line of text, rendered once: titles repeat on every grid of a run."""
    return _render_line(text, size, fill)


def _render_line(text: str, size: int, fill: int) -> Image.Image:
    """One line of text, put together from its words, each rendered once: FreeType takes about
    a millisecond per line, and most lines differ only by a number or two ("iteration 12 ·
    1,234 moved", "cluster #7 · 903 images")."""
    words = text.split(" ")
    space = font(size).getlength(" ")
    images = [_word_image(word, size, fill) for word in words]
    width = sum(image.width for image in images) + round(space * (len(words) - 1))
    line = Image.new("L", (max(1, width), round(size * 1.35)), WHITE)
    left = 0.0
    for word, image in zip(words, images, strict=True):
        line.paste(image, (round(left), 0))
        left += text_width(word, size) + space if word else space
    return line


def put_text(canvas: Image.Image, xy: tuple[int, int], text: str, size: int, ink) -> None:
    """Text in colour ink on any background (the confusion's coloured cells), from the cached
    renders: the line's darkness is the mask through which ink is painted."""
    mask = _text_mask(text, size)
    canvas.paste(ink, (xy[0], xy[1], xy[0] + mask.width, xy[1] + mask.height), mask)


@functools.lru_cache(maxsize=1024)
def _text_mask(text: str, size: int) -> Image.Image:
    return _line_image(text, size, INK).point(lambda value: 255 - value)


@functools.lru_cache(maxsize=4096)
def _word_image(word: str, size: int, fill: int) -> Image.Image:
    image = Image.new("L", (max(1, text_width(word, size)), round(size * 1.35)), WHITE)
    if word:
        ImageDraw.Draw(image).text((0, 0), word, font=font(size), fill=fill)
    return image


def stack(blocks: Sequence[Image.Image], gap: int = 0) -> Image.Image:
    """Blocks one under the other, left-aligned on white; the mode of the first block."""
    mode = "RGB" if any(block.mode == "RGB" for block in blocks) else "L"
    width = max(block.width for block in blocks)
    height = sum(block.height for block in blocks) + gap * (len(blocks) - 1)
    canvas = Image.new(mode, (width, height), (WHITE,) * 3 if mode == "RGB" else WHITE)
    top = 0
    for block in blocks:
        canvas.paste(block.convert(mode), (0, top))
        top += block.height + gap
    return canvas


def run_title(dataset: str, k: int, n_images: int, metrics: dict | None = None) -> str:
    """'fashion · K=10 · 70,000 images · ACC 0.554 · NMI 0.512 · purity 0.593 · ARI 0.366'."""
    parts = [dataset, f"K={k}", f"{n_images:,} images"]
    for name, short in (("accuracy", "ACC"), ("nmi", "NMI"), ("purity", "purity"), ("ari", "ARI")):
        if metrics and name in metrics:
            parts.append(f"{short} {metrics[name] + 0.0:.3f}".replace("-0.000", "0.000"))
    return " · ".join(parts)


def percent(share: float) -> str:
    return f"{100 * share:.0f} %"


# --- images --------------------------------------------------------------------------------


def save_png(pixels: np.ndarray | Image.Image, path: Path) -> None:
    """A 2-D uint8 array (mode "L"), an H x W x 3 one (RGB) or a Pillow image, as PNG."""
    image = (
        pixels if isinstance(pixels, Image.Image) else Image.fromarray(np.ascontiguousarray(pixels, np.uint8))
    )
    image.save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def upscale(tiles: np.ndarray, target: int) -> np.ndarray:
    """Tiles (n x h x w, or n x h x w x 3) enlarged by a whole factor (nearest neighbour) to about target px."""
    scale = max(1, round(target / max(tiles.shape[1:3])))
    return tiles.repeat(scale, axis=1).repeat(scale, axis=2) if scale > 1 else tiles


def widen(tiles: np.ndarray, width: int) -> np.ndarray:
    """Tiles centred on white cells at least width px wide, to leave room for their captions."""
    extra = max(0, width - tiles.shape[2])
    return np.pad(
        tiles, ((0, 0), (0, 0), (extra // 2, extra - extra // 2), *_channel_pad(tiles)), constant_values=WHITE
    )


def _channel_pad(tiles: np.ndarray) -> list[tuple[int, int]]:
    """np.pad's entry for the channel axis of colour tiles (none for grey ones)."""
    return [(0, 0)] * (tiles.ndim - 3)


def image_grid(tiles: np.ndarray, columns: int, gap: int = GRID_GAP, background: int = WHITE) -> np.ndarray:
    """Tiles (n x h x w uint8, or n x h x w x 3 in colour) laid out row by row with a gap around
    each; an empty grid for n=0."""
    count, height, width = tiles.shape[:3]
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    grid = np.full(
        (gap + rows * (height + gap), gap + columns * (width + gap), *tiles.shape[3:]), background, np.uint8
    )
    for position, tile in enumerate(tiles):
        top = gap + (position // columns) * (height + gap)
        left = gap + (position % columns) * (width + gap)
        grid[top : top + height, left : left + width] = tile
    return grid


def captioned_grid(
    tiles: np.ndarray, columns: int, captions: Sequence[Sequence[str]] | None, size: int = 11, gap: int = 4
) -> Image.Image:
    """Tiles in a grid, each with up to two lines of caption under it (shrunk to the tile's width)."""
    n_lines = max((len(lines) for lines in captions), default=0) if captions else 0
    _, height, cell_width = tiles.shape[:3]
    caption_height = round(size * 1.3) * n_lines + (2 if n_lines else 0)
    padded = np.pad(tiles, ((0, 0), (0, caption_height), (0, 0), *_channel_pad(tiles)), constant_values=WHITE)
    grid = Image.fromarray(image_grid(padded, columns, gap=gap))
    if n_lines:
        columns = max(1, min(columns, len(tiles)))
        for position, lines in enumerate(captions):
            left = gap + (position % columns) * (cell_width + gap)
            top = gap + (position // columns) * (padded.shape[1] + gap) + height + 1
            for number, line in enumerate(lines):
                line = shortened(line, cell_width, size)
                rendered = _line_image(line, fitted_size(line, cell_width, size), INK)
                grid.paste(
                    rendered.crop((0, 0, min(rendered.width, cell_width), rendered.height)),
                    (left, top + number * round(size * 1.3)),
                )
    return grid


def centroid_sheet(
    representatives: np.ndarray,
    sizes: np.ndarray,
    *,
    title: str | None = None,
    classes: Sequence[str] | None = None,
    note: str | None = None,
) -> np.ndarray:
    """All representatives upscaled, each captioned "#3: Trouser · 92 %" and "n=6,903".

    classes: a caption per cluster ("Trouser · 92 %"), when labels are known. Up to 100 clusters
    get 112 px tiles and both lines, up to 1,000 half that and their number; beyond, native-size
    tiles of the SHEET_MAX_TILES largest clusters, without captions.
    """
    k = len(representatives)
    shown = np.arange(k)
    if k > SHEET_MAX_TILES:
        shown = np.sort(np.argsort(-np.asarray(sizes), kind="stable")[:SHEET_MAX_TILES])
    if k <= 100:
        tiles, columns = upscale(representatives, SHEET_TILE_PIXELS), SHEET_COLUMNS
        captions = [
            [f"#{i + 1}: {classes[i]}" if classes else f"#{i + 1}", f"n={int(sizes[i]):,}"] for i in range(k)
        ]
    elif k <= 1000:
        tiles, columns = upscale(representatives, SHEET_TILE_PIXELS // 2), 20
        captions = [[f"#{i + 1}"] for i in range(k)]
    else:
        tiles, columns, captions = representatives[shown], 50, None
    if captions and len(captions[0]) > 1:
        tiles = widen(tiles, 116)
    grid = captioned_grid(tiles, columns, captions, size=12)
    lines = [(title, 14)] if title else []
    if len(shown) < k:
        lines.append(
            (f"the {len(shown):,} largest of {k:,} clusters, in cluster order (all are in centroids/)", 11)
        )
    elif k > 1000:
        lines.append(("in cluster order, 50 to a row, #1 at the top left", 11))
    if note and k <= 100:  # the captions it explains are shown up to K=100
        lines.append((note, 11))
    return np.asarray(stack([text_block(lines), grid]) if lines else grid)


def cluster_grid(
    title_lines: Sequence[str],
    sections: Sequence[tuple[str, np.ndarray, Sequence[str | Sequence[str]] | None]],
) -> np.ndarray:
    """One cluster's members: for each section a heading, then its tiles (upscaled), captioned
    when a caption list is given: a class name (a str), or lines (the class and the file name);
    tiles captioned with lines are widened so that a file name can be read."""
    blocks = [text_block([(title_lines[0], 13), *[(line, 11) for line in title_lines[1:]]])]
    named = any(not isinstance(c, str) for _, _, captions in sections for c in captions or [])
    for heading, tiles, captions in sections:
        blocks.append(text_block([(heading, 11)], pad=3))
        if len(tiles):
            big = upscale(tiles, GRID_TILE_PIXELS)
            lines = [[c] if isinstance(c, str) else list(c) for c in captions] if captions else None
            if named:
                big = widen(big, GRID_NAMED_TILE_PIXELS)
            blocks.append(captioned_grid(big, GRID_COLUMNS, lines, size=10))
    return np.asarray(stack(blocks))


# --- the confusion heat map ----------------------------------------------------------------


def _blue(share: float) -> tuple[int, int, int]:
    """White to dark blue, as matplotlib's "Blues": a colour for a share 0..1."""
    position = min(max(share, 0.0), 1.0) * (len(BLUES) - 1)
    low = min(int(position), len(BLUES) - 2)
    mixed = BLUES[low] + (BLUES[low + 1] - BLUES[low]) * (position - low)
    return tuple(round(float(value)) for value in mixed)


def confusion_rows(
    table: np.ndarray, class_names: Sequence[str], match: np.ndarray, method: str
) -> tuple[np.ndarray, list[str], np.ndarray, str]:
    """The rows confusion_image draws: (counts, row labels, each row's matched column, subtitle).

    Rows run in the order of their matched class (then largest share first), so matched pairs
    form the diagonal. Beyond CONFUSION_MAX_ROWS clusters, the clusters with the same matched
    (majority) class are merged into one row, so the picture stays readable, and fast, for K
    in the thousands.
    """
    table = np.asarray(table, dtype=np.int64)
    k, n_classes = table.shape
    sizes = table.sum(axis=1)
    if k > CONFUSION_MAX_ROWS:
        merged = np.zeros((n_classes, n_classes), dtype=np.int64)
        np.add.at(merged, match, table)
        counts = np.bincount(match, minlength=n_classes)
        keep = np.flatnonzero(counts)
        labels = [f"{class_names[c]}: {counts[c]:,} clusters" for c in keep]
        subtitle = (
            f"{k:,} clusters are too many for a row each: each row merges the clusters "
            "whose majority class it names"
        )
        return merged[keep], labels, keep, subtitle
    share = table[np.arange(k), match] / np.maximum(sizes, 1)
    order = np.lexsort((-share, match))
    how = "matched one-to-one (Hungarian)" if method == "hungarian" else "labelled by their majority class"
    outlined = "the matched class" if method == "hungarian" else "each cluster's majority class"
    subtitle = f"rows: clusters, {how}, in the order of their class; outlined: {outlined}"
    return table[order], [f"#{i + 1}  n={sizes[i]:,}" for i in order], match[order], subtitle


def confusion_image(
    table: np.ndarray,
    class_names: Sequence[str],
    match: np.ndarray,
    method: str,
    title: str,
) -> Image.Image:
    """Clusters (rows) by true classes (columns): counts and the share of the row, cells coloured
    by that share, the matched class of each cluster outlined; rows as confusion_rows orders them."""
    rows, row_labels, row_match, subtitle = confusion_rows(table, class_names, match, method)
    n_classes = len(class_names)
    cell_w, cell_h, label_w, pad = 78, 36, max(118, max(text_width(t, 11) for t in row_labels) + 12), 8
    header = text_block(
        [(title, 14), (subtitle, 11), ("cells: images, and their share of the row (colour)", 11)], pad=pad
    )
    head_h = 34
    grid_w = label_w + n_classes * cell_w + 1
    grid_h = head_h + (len(rows) + 1) * cell_h + 1
    grid = Image.new("RGB", (grid_w + pad, grid_h + pad), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for column, name in enumerate(class_names):  # column headings, on two lines when long
        words = name.replace("/", "/ ").split(" ")
        lines = (
            [name]
            if text_width(name, 11) <= cell_w - 6 or len(words) == 1
            else [
                " ".join(words[: len(words) // 2]).replace("/ ", "/"),
                " ".join(words[len(words) // 2 :]).replace("/ ", "/"),
            ]
        )
        for number, line in enumerate(lines):
            size = fitted_size(line, cell_w - 6, 11)
            left = label_w + column * cell_w + (cell_w - text_width(line, size)) // 2
            put_text(grid, (left, 4 + number * 14), line, size, (0, 0, 0))
    put_text(grid, (4, head_h - 16), "cluster \\ class", 11, (90, 90, 90))
    totals = rows.sum(axis=1)
    for row, (counts, label) in enumerate(zip(rows, row_labels, strict=True)):
        top = head_h + row * cell_h
        put_text(grid, (4, top + cell_h // 2 - 7), label, 11, (0, 0, 0))
        for column, count in enumerate(counts):
            fraction = count / totals[row] if totals[row] else 0.0
            left = label_w + column * cell_w
            colour = _blue(fraction)
            draw.rectangle((left, top, left + cell_w, top + cell_h), fill=colour, outline=(225, 225, 225))
            ink = (255, 255, 255) if fraction > 0.5 else (0, 0, 0)
            if count:
                put_text(grid, (left + 5, top + 4), f"{count:,}", 12, ink)
                put_text(grid, (left + 5, top + 19), percent(fraction), 10, ink)
        matched = label_w + int(row_match[row]) * cell_w
        draw.rectangle((matched, top, matched + cell_w, top + cell_h), outline=MATCH_OUTLINE, width=3)
    top = head_h + len(rows) * cell_h  # the class sizes, as a last row
    put_text(grid, (4, top + cell_h // 2 - 7), "all clusters", 11, (0, 0, 0))
    for column, count in enumerate(rows.sum(axis=0)):
        put_text(grid, (label_w + column * cell_w + 5, top + 10), f"{count:,}", 11, (60, 60, 60))
    return stack([header, grid])


def draw_confusion(
    path: Path,
    table: np.ndarray,
    class_names: Sequence[str],
    match: np.ndarray,
    method: str,
    title: str,
) -> None:
    """confusion_image, saved as PNG."""
    confusion_image(table, class_names, match, method, title).save(path, format="PNG")


# --- the fit, iteration by iteration -------------------------------------------------------


def save_evolution_gif(path: Path, frames: Sequence[tuple[str, np.ndarray]], title: str) -> None:
    """An animated GIF of the representatives, one frame per recorded iteration (caption, K x H x W
    uint8 images), each numbered "#1" ...; the last frame is held longer.

    The layout (title, numbers, gaps) is drawn once; each frame only changes the tiles and its
    caption line, which keeps a 48-frame GIF at a few tens of milliseconds.
    """
    first = widen(upscale(frames[0][1], EVOLUTION_TILE_PIXELS), 40)
    numbers = [[f"#{number}"] for number in range(1, len(first) + 1)]
    grid = np.asarray(captioned_grid(first, SHEET_COLUMNS, numbers, size=11, gap=3))
    colour = first.shape[3:]  # (3,) for colour tiles: the frames are RGB
    heading = _with_channels(np.asarray(text_block([(title, 12)])), colour)
    line_height = round(11 * 1.35) + 4
    width = max(grid.shape[1], heading.shape[1], max(text_width(c, 11) + 8 for c, _ in frames))
    template = np.full((heading.shape[0] + line_height + grid.shape[0], width, *colour), WHITE, np.uint8)
    template[: heading.shape[0], : heading.shape[1]] = heading
    top = heading.shape[0] + line_height
    template[top:, : grid.shape[1]] = grid
    _, tile_height, tile_width = first.shape[:3]
    columns = min(SHEET_COLUMNS, len(first))
    cell_height = tile_height + round(11 * 1.3) + 2
    pictures = []
    for caption, images in frames:
        picture = template.copy()
        tiles = widen(upscale(images, EVOLUTION_TILE_PIXELS), 40)
        for position, tile in enumerate(tiles):
            y = top + 3 + (position // columns) * (cell_height + 3)
            x = 3 + (position % columns) * (tile_width + 3)
            picture[y : y + tile_height, x : x + tile_width] = tile
        line = _with_channels(
            np.asarray(_render_line(caption, 11, GREY)), colour
        )  # new each frame: not cached
        picture[heading.shape[0] - 2 : heading.shape[0] - 2 + line.shape[0], 4 : 4 + line.shape[1]] = line
        pictures.append(Image.fromarray(picture))
    durations = [EVOLUTION_FRAME_MS] * (len(pictures) - 1) + [EVOLUTION_LAST_FRAME_MS]
    pictures[0].save(  # optimize=False: Pillow's palette optimisation costs time and saves nothing here
        path,
        format="GIF",
        save_all=True,
        append_images=pictures[1:],
        duration=durations,
        loop=0,
        optimize=False,
    )


def _with_channels(pixels: np.ndarray, channels: tuple[int, ...]) -> np.ndarray:
    """A grey H x W array as H x W x 3 when channels is (3,) (colour pictures), else as it is."""
    return np.repeat(pixels[..., None], channels[0], axis=2) if channels and pixels.ndim == 2 else pixels


# --- the sweep: K side by side -------------------------------------------------------------


def side_by_side(
    rows: Sequence[tuple[int, np.ndarray, Sequence[tuple[int, str]] | None, Sequence[Sequence[str]] | None]],
    title: str,
) -> np.ndarray:
    """One row of representatives per K: (K, K x H x W images, the class (value, name) of each or
    None, caption lines of each or None), K ascending.

    When every row knows its classes, each class gets its own columns, as many as the K that
    gives it the most clusters, headed by its name: the same class lines up down the sheet.
    Otherwise (or when that would be wider than SIDE_BY_SIDE_MAX_TILES) the rows are plain.
    """
    tile_shape = rows[0][1].shape[1:]  # H x W, or H x W x 3 in colour
    groups = _class_columns(rows)
    slots = sum(groups.values()) if groups else max(min(len(r[1]), SIDE_BY_SIDE_MAX_TILES) for r in rows)
    tile = GRID_TILE_PIXELS if slots <= 20 else GRID_TILE_PIXELS // 2
    cell = max(64 if tile >= GRID_TILE_PIXELS else tile, upscale(rows[0][1][:1], tile).shape[2])
    blank = np.full(tile_shape, WHITE, np.uint8)
    blocks = [text_block([(title, 14)])]
    if groups:
        blocks.append(_class_header(groups, cell, gap=4, left=0))
    for k, images, classes, captions in rows:
        if groups:
            placed: dict[tuple[int, str], list[int]] = {}
            for index, key in enumerate(classes):
                placed.setdefault(key, []).append(index)
            order, lines = [], []
            for key, count in groups.items():
                members = placed.get(key, [])
                order += members + [-1] * (count - len(members))
            tiles = np.stack([images[i] if i >= 0 else blank for i in order])
            lines = [list(captions[i]) if i >= 0 and captions else [""] for i in order]
            note = ""
        else:
            shown = min(len(images), SIDE_BY_SIDE_MAX_TILES)
            tiles = images[:shown]
            lines = [list(c) for c in captions[:shown]] if captions else None
            note = f" (the first {shown} of {k})" if shown < k else ""
        blocks.append(text_block([(f"K={k}{note}", 12)], pad=3))
        blocks.append(captioned_grid(widen(upscale(tiles, tile), cell), slots, lines, size=10))
    return np.asarray(stack(blocks))


def _class_columns(rows) -> dict[tuple[int, str], int]:
    """Class -> how many columns it needs (its most clusters in one K), in class order; empty when
    some row does not know its classes or the columns would be too many."""
    if not all(classes for _, _, classes, _ in rows):
        return {}
    needed: dict[tuple[int, str], int] = {}
    for _, _, classes, _ in rows:
        for key in set(classes):
            needed[key] = max(needed.get(key, 0), list(classes).count(key))
    if sum(needed.values()) > SIDE_BY_SIDE_MAX_TILES:
        return {}
    return dict(sorted(needed.items()))


def _class_header(groups: dict[tuple[int, str], int], cell: int, gap: int, left: int) -> Image.Image:
    """The class names over their columns, each centred over its group, with a rule under it."""
    width = gap + sum(groups.values()) * (cell + gap)
    header = Image.new("L", (width, 24), WHITE)
    draw = ImageDraw.Draw(header)
    x = gap
    for (_, name), count in groups.items():
        span = count * (cell + gap) - gap
        size = fitted_size(name, span, 12)
        rendered = _line_image(name, size, INK)
        header.paste(rendered, (x + max(0, (span - rendered.width) // 2), 2))
        draw.line((x, 21, x + span, 21), fill=GREY, width=1)
        x += span + gap
    return header
