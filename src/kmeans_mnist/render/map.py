"""The map of the data: every image as a point in 2-D, coloured by cluster (and by true class).

    write_map(folder, xy, clusters, representatives, labels, label_names, title)

writes map.png (a static picture) and map.npz (a fixed sample of points with their images, from
which report.html draws the interactive map). The 2-D layout comes from features.Features.map_xy:
UMAP's own 2-D layout for `--features umap`, otherwise the first two principal components.

map.png is rasterised with NumPy, not plotted: each point is a 2x2-pixel dot, and where points
pile up their colours are averaged and the pixel darkens with the count (density shading), so
70,000 points stay readable and cost a few tens of milliseconds. Each cluster's representative
(its members' mean image) is drawn at the cluster's place (the median of its members), framed
in the cluster's colour. With labels, a second panel colours the same points by true class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..results.csvfile import text_safe
from .pictures import put_text, save_png, stack, text_block, upscale

PANEL = 460  # pixels a side (the PNG encoding is most of the cost)
MARGIN = 36  # room for the representatives at the edges
INTERACTIVE_POINTS = 1500  # points of map.npz (the report's interactive map)
INTERACTIVE_BYTES = 1_500_000  # at most this many pixel bytes of images in map.npz
SAMPLE_SEED = 0
# Colours that stay apart (Tableau's 10, then 10 lighter ones); beyond 20 they repeat.
PALETTE = np.array(
    [
        [31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40], [148, 103, 189],
        [140, 86, 75], [227, 119, 194], [127, 127, 127], [188, 189, 34], [23, 190, 207],
        [174, 199, 232], [255, 187, 120], [152, 223, 138], [255, 152, 150], [197, 176, 213],
        [196, 156, 148], [247, 182, 210], [199, 199, 199], [219, 219, 141], [158, 218, 229],
    ],
    dtype=np.float64,
)  # fmt: skip


def colour(index: int) -> tuple[int, int, int]:
    return tuple(int(v) for v in PALETTE[index % len(PALETTE)])


def to_panel(xy: np.ndarray, size: int = PANEL, margin: int = MARGIN) -> np.ndarray:
    """Map coordinates -> pixel positions (N x 2 int, column then row) filling the panel; the
    0.2 % most outlying points on each side may be pinned to its border rather than shrink the rest."""
    xy = np.asarray(xy, dtype=np.float32)
    if not len(xy):
        return np.zeros((0, 2), dtype=np.int64)
    some = xy[:: max(1, len(xy) // 20000)]  # the bounds from at most 20,000 points: ample for a picture
    low, high = np.percentile(some, 0.2, axis=0), np.percentile(some, 99.8, axis=0)
    span = np.where(high - low > 0, high - low, 1.0)
    low, high = low - 0.04 * span, high + 0.04 * span  # room around the bulk; the rare rest is pinned
    span = high - low
    unit = (np.clip(xy, low, high) - low) / span
    unit[:, 1] = 1 - unit[:, 1]  # y upwards, as in a plot
    return np.rint(margin + unit * (size - 2 * margin - 2)).astype(np.int64)


def density_panel(where: np.ndarray, groups: np.ndarray, size: int = PANEL) -> np.ndarray:
    """size x size x 3 uint8: 2x2 dots coloured by group, averaged where they overlap, the
    colour's strength growing with the number of points on the pixel."""
    colours = PALETTE[np.asarray(groups) % len(PALETTE)]
    pixel = where[:, 1] * size + where[:, 0]  # each point's top-left pixel; the dot covers 2x2
    dots = np.concatenate([pixel, pixel + 1, pixel + size, pixel + size + 1])
    counts = np.bincount(dots, minlength=size * size)
    occupied = np.flatnonzero(counts)  # only these pixels are computed: most of the panel is white
    image = np.full((size * size, 3), 255, dtype=np.uint8)
    strength = 1 - np.exp(-counts[occupied] / 1.5)  # one point: 49 %, three: 86 %
    for channel in range(3):
        sums = np.bincount(dots, weights=np.tile(colours[:, channel], 4), minlength=size * size)
        mean = sums[occupied] / counts[occupied]
        image[occupied, channel] = np.rint(255 * (1 - strength) + mean * strength).astype(np.uint8)
    return image.reshape(size, size, 3)


def _panel(
    where: np.ndarray, groups: np.ndarray, heading: str, places=None, tiles=None, numbers=None
) -> Image.Image:
    canvas = Image.fromarray(density_panel(where, groups))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, PANEL - 1, PANEL - 1), outline=(200, 200, 200))
    if places is not None:
        for (x, y), tile, number in zip(places, tiles, numbers, strict=True):
            image = Image.fromarray(tile).convert("RGB")
            left = int(np.clip(x - image.width // 2, 0, PANEL - image.width))
            top = int(np.clip(y - image.height // 2, 0, PANEL - image.height))
            canvas.paste(image, (left, top))
            draw.rectangle(
                (left - 2, top - 2, left + image.width + 1, top + image.height + 1),
                outline=colour(number - 1),
                width=2,
            )
            put_text(canvas, (left, top), f"#{number}", 10, (255, 255, 255))
    return stack([text_block([(heading, 12)], width=PANEL), canvas])


def _legend(names: list[str], title: str) -> Image.Image:
    """Colour swatches with their names, in rows under a panel."""
    rows, line, width = [], [], 0
    for number, name in enumerate(names):
        item = (number, name[:18])
        if line and width + 24 + 7 * len(item[1]) > PANEL:
            rows.append(line)
            line, width = [], 0
        line.append(item)
        width += 24 + 7 * len(item[1]) + 10
    if line:
        rows.append(line)
    canvas = Image.new("RGB", (PANEL, 18 * len(rows) + 20), (255, 255, 255))
    put_text(canvas, (2, 0), title, 11, (90, 90, 90))
    for row, items in enumerate(rows):
        left = 2
        for number, name in items:
            top = 18 + row * 18
            ImageDraw.Draw(canvas).rectangle((left, top + 3, left + 11, top + 14), fill=colour(number))
            put_text(canvas, (left + 15, top + 1), name, 11, (0, 0, 0))
            left += 24 + 7 * len(name) + 10
    return canvas


def write_map(
    folder: Path,
    xy: np.ndarray,
    clusters: np.ndarray,
    representatives: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray | None = None,
    label_names: dict[int, str] | None = None,
    title: str = "",
    method: str = "pca",
    index: np.ndarray | None = None,
    paths: np.ndarray | None = None,
) -> None:
    """map.png and map.npz in folder (see the module docstring). representatives: K x H x W uint8
    (the members' mean images); images: the loaded images (for map.npz's sample). xy places the
    images `index` (None: all); clusters and labels are those of all the images."""
    n_images = len(clusters)
    index = np.arange(n_images) if index is None else np.asarray(index)
    clusters = np.asarray(clusters, dtype=np.int64)[index]
    labels = None if labels is None else np.asarray(labels)[index]
    k = len(representatives)
    where = to_panel(xy)
    order = np.random.default_rng(SAMPLE_SEED).permutation(len(where))  # no cluster always on top
    sizes = np.bincount(clusters, minlength=k)
    places, tiles, numbers = [], [], []
    # doubled where clusters lie apart (UMAP); native size where they overlap (PCA of pixels)
    scale = 2 if method == "umap" and max(representatives.shape[1:]) <= 32 else 1
    for cluster in np.argsort(-sizes, kind="stable")[: min(k, 40)]:  # at most 40 pictures on the map
        members = where[clusters == cluster]
        if len(members):
            places.append(np.median(members, axis=0))
            tiles.append(upscale(representatives[cluster][None], representatives.shape[1] * scale)[0])
            numbers.append(int(cluster) + 1)
    axes = "UMAP's 2-D layout" if method == "umap" else "the first two principal components of the pixels"
    panels = [
        _panel(
            where[order],
            clusters[order],
            "coloured by cluster; each cluster's mean image at its median place",
            places,
            tiles,
            numbers,
        )
    ]
    legends = [
        _legend(
            [f"#{i + 1}" for i in range(min(k, 20))], "clusters" + (" (colours repeat)" if k > 20 else "")
        )
    ]
    if labels is not None:
        classes, codes = np.unique(labels, return_inverse=True)
        names = [(label_names or {}).get(int(value), str(value)) for value in classes]
        panels.append(_panel(where[order], codes[order], "the same images coloured by their true class"))
        legends.append(_legend(names[:20], "classes" + (" (colours repeat)" if len(names) > 20 else "")))
    columns = [stack([panel, legend]) for panel, legend in zip(panels, legends, strict=True)]
    width = sum(column.width for column in columns) + 16 * (len(columns) - 1)
    body = Image.new("RGB", (width, max(column.height for column in columns)), (255, 255, 255))
    left = 0
    for column in columns:
        body.paste(column, (left, 0))
        left += column.width + 16
    shown = f"{n_images:,} images"
    if len(index) < n_images:
        shown = f"a fixed sample of {len(index):,} of the {n_images:,} images"
    note = f"{shown}, each a dot placed by {axes}; where dots pile up the colour is their average, darker"
    save_png(stack([text_block([(title, 14), (note, 11)]), body]), folder / "map.png")
    _write_sample(folder / "map.npz", xy, clusters, images, labels, label_names, method, index, paths)


def _write_sample(
    path: Path, xy, clusters, images, labels, label_names, method: str, where, paths=None
) -> None:
    """A fixed sample of points (the same for every K of the data) with their images, for the
    report's interactive map. Plain arrays only."""
    pixels = int(np.prod(images.shape[1:]))
    count = min(len(clusters), INTERACTIVE_POINTS, max(100, INTERACTIVE_BYTES // max(pixels, 1)))
    rng = np.random.default_rng(SAMPLE_SEED)
    index = (
        np.sort(rng.choice(len(clusters), count, replace=False))
        if count < len(clusters)
        else np.arange(count)
    )
    arrays = {
        "index": where[index],  # in the loaded data
        "xy": np.asarray(xy, dtype=np.float32)[index],
        "cluster": clusters[index] + 1,
        "images": np.asarray(images[where[index]], dtype=np.uint8),
        "method": np.str_(method),
    }
    if labels is not None:
        arrays["label"] = np.asarray(labels)[index].astype(np.int64)
        names = label_names or {}
        arrays["label_name"] = np.array([names.get(int(value), str(value)) for value in arrays["label"]])
    if paths is not None:  # the file names, for the tooltips (unicode arrays: no pickle)
        arrays["path"] = np.array([text_safe(str(paths[i])) for i in where[index]], dtype=np.str_)
    with open(path, "wb") as file:
        np.savez(file, **arrays)  # uncompressed: written in milliseconds, read by the report


# --- the interactive map of report.html --------------------------------------------------------

MAP_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById("map-data").textContent);
  var palette = %PALETTE%;
  var canvas = document.getElementById("map-canvas"), ctx = canvas.getContext("2d");
  var tip = document.getElementById("map-tip"), tipImage = document.getElementById("map-tip-image");
  var tipText = document.getElementById("map-tip-text"), choice = document.getElementById("map-k");
  var p = data.points, n = p.x.length, size = canvas.width, shape = data.shape;
  function clusters() { return data.clusters[choice.value]; }
  function draw() {
    var c = clusters();
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, size, size);
    for (var i = 0; i < n; i++) {
      var rgb = palette[(c[i] - 1) % palette.length];
      ctx.fillStyle = "rgb(" + rgb.join(",") + ")";
      ctx.fillRect(p.x[i] - 2, p.y[i] - 2, 4, 4);
    }
  }
  function nearest(event) {
    var box = canvas.getBoundingClientRect();
    var x = (event.clientX - box.left) * size / box.width, y = (event.clientY - box.top) * size / box.height;
    var best = -1, bestDistance = 144;
    for (var i = 0; i < n; i++) {
      var d = (p.x[i] - x) * (p.x[i] - x) + (p.y[i] - y) * (p.y[i] - y);
      if (d < bestDistance) { bestDistance = d; best = i; }
    }
    return best;
  }
  function show(event) {
    var i = nearest(event);
    if (i < 0) { tip.hidden = true; return; }
    var raw = atob(p.images[i]), pixels = ctx.createImageData(shape[1], shape[0]);
    var channels = shape.length > 2 ? shape[2] : 1;  // 3: colour images, RGB per pixel
    for (var j = 0; j < shape[0] * shape[1]; j++) {
      for (var c = 0; c < 3; c++) { pixels.data[4 * j + c] = raw.charCodeAt(channels * j + (channels > 1 ? c : 0)); }
      pixels.data[4 * j + 3] = 255;
    }
    tipImage.width = shape[1]; tipImage.height = shape[0];
    tipImage.getContext("2d").putImageData(pixels, 0, 0);
    var words = p.path ? p.path[i] : "image " + p.index[i];  // textContent: a name is never markup
    if (p.label) { words += " \\u00b7 label " + p.label_name[i]; }
    words += " \\u00b7 cluster #" + clusters()[i];
    tipText.textContent = words;
    var box = canvas.getBoundingClientRect();
    tip.style.left = Math.min(box.width - 150, p.x[i] * box.width / size + 12) + "px";
    tip.style.top = (p.y[i] * box.height / size + 12) + "px";
    tip.hidden = false;
  }
  canvas.addEventListener("pointermove", show);
  canvas.addEventListener("pointerdown", show);
  canvas.addEventListener("pointerleave", function () { tip.hidden = true; });
  choice.addEventListener("change", draw);
  draw();
})();
"""

MAP_STYLE = """
.map-wrap { position: relative; display: inline-block; max-width: 100%; }
#map-canvas { width: 560px; max-width: 100%; border: 1px solid #ddd; touch-action: none; cursor: crosshair; }
#map-tip { position: absolute; background: #fff; border: 1px solid #888; padding: 4px; font-size: 12px;
           width: 136px; pointer-events: none; box-shadow: 0 2px 6px rgba(0,0,0,.25); }
#map-tip canvas { width: 84px; image-rendering: pixelated; display: block; margin-bottom: 2px; }
"""

INTERACTIVE_SIZE = 560


def map_section(folder: Path, runs: dict[int, dict]) -> list[str]:
    """The interactive map of report.html, from the k<K>/map.npz of the folder (empty without
    one): the sample's points on a canvas, coloured by the chosen K's clusters; hovering or
    tapping a point shows its image, its index, its label and its cluster. All inline: no
    network, no external script; every text goes in as JSON and is shown with textContent."""
    import base64
    import html
    import json

    points, clusters = None, {}
    for k, run in runs.items():
        try:
            with np.load(Path(folder) / run["folder"] / "map.npz", allow_pickle=False) as stored:
                sample = {name: stored[name] for name in stored.files}
        except (OSError, ValueError, KeyError):
            continue
        if points is None:
            where = to_panel(sample["xy"], INTERACTIVE_SIZE, 8)
            points = {
                "index": sample["index"].tolist(),
                "x": where[:, 0].tolist(),
                "y": where[:, 1].tolist(),
                "images": [base64.b64encode(image.tobytes()).decode("ascii") for image in sample["images"]],
                "label": sample["label"].tolist() if "label" in sample else None,
                "label_name": sample["label_name"].tolist() if "label_name" in sample else None,
                "path": sample["path"].tolist() if "path" in sample else None,
            }
            shape = list(sample["images"].shape[1:])
            method = str(sample["method"])
        elif sample["index"].tolist() != points["index"]:
            continue  # another sample (other data): not drawn on these points
        clusters[str(k)] = sample["cluster"].tolist()
    if points is None:
        return []
    data = {"points": points, "clusters": clusters, "shape": shape}
    text = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")
    script = MAP_SCRIPT.replace("%PALETTE%", json.dumps(PALETTE.astype(int).tolist()))
    options = "".join(
        f'<option value="{html.escape(k)}"{" selected" if number == len(clusters) - 1 else ""}>K={html.escape(k)}</option>'
        for number, k in enumerate(clusters)
    )
    axes = "UMAP's 2-D layout" if method == "umap" else "the first two principal components"
    return [
        '<h2 id="map">The map</h2>',
        f'<p class="note">{len(points["x"]):,} images sampled from the data, placed by {html.escape(axes)} and '
        "coloured by cluster: hover over (or tap) a point to see its image, its index in the loaded data, "
        f'its label and its cluster. Colour by <select id="map-k">{options}</select></p>',
        f"<style>{MAP_STYLE}</style>",
        f'<div class="map-wrap"><canvas id="map-canvas" width="{INTERACTIVE_SIZE}" height="{INTERACTIVE_SIZE}"'
        ' aria-label="map of the images"></canvas>',
        '<div id="map-tip" hidden><canvas id="map-tip-image"></canvas><div id="map-tip-text"></div></div></div>',
        f'<script type="application/json" id="map-data">{text}</script>',
        f"<script>{script}</script>",
    ]
