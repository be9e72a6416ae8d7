"""The map of the data: map.png (two panels, readable, cheap), map.npz (plain arrays), and the
report's interactive map (escaped data, and a real browser showing a point's image on hover)."""

from __future__ import annotations

import html
import json
import os
import re
import time

import numpy as np
import pytest
from PIL import Image

from kmeans_mnist import cli
from kmeans_mnist.render import map as data_map
from kmeans_mnist.render import report
from test_report import browser_executable


def labelled_points(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    xy = rng.normal(0, 0.3, (n, 2)) + np.array([[0, 0], [3, 0], [0, 3], [3, 3]])[labels]
    images = rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)
    return xy.astype(np.float32), labels, images


def test_map_has_a_cluster_panel_and_a_class_panel_and_plain_arrays(tmp_path):
    xy, labels, images = labelled_points(3000)
    clusters = (labels + 1) % 4  # each class its own cluster, other numbers
    representatives = np.stack([images[clusters == c].mean(axis=0).astype(np.uint8) for c in range(4)])
    names = {0: "zero", 1: "one", 2: "two", 3: "three"}
    data_map.write_map(tmp_path, xy, clusters, representatives, images, labels, names, "title")
    with Image.open(tmp_path / "map.png") as picture:
        assert picture.mode == "RGB" and picture.width > 2 * data_map.PANEL
        pixels = np.asarray(picture)
    # the four groups' colours are on the picture: the cluster panel's #1..#4 and the classes'
    for number in range(4):
        assert (np.abs(pixels.astype(int) - data_map.PALETTE[number]).sum(axis=2) < 30).sum() > 50
    with np.load(tmp_path / "map.npz", allow_pickle=False) as sample:
        index = sample["index"]
        assert len(index) == data_map.INTERACTIVE_POINTS and len(set(index.tolist())) == len(index)
        assert np.array_equal(sample["images"], images[index])
        assert np.array_equal(sample["cluster"], clusters[index] + 1)
        assert [str(name) for name in sample["label_name"][:5]] == [names[int(v)] for v in labels[index][:5]]


def test_map_of_70000_points_is_cheap(tmp_path):
    """A 70,000-point map takes well under a second (the budget: 10 % of a pixel run's write)."""
    xy, labels, images = labelled_points(70_000)
    clusters = labels
    representatives = images[:4]
    started = time.perf_counter()
    data_map.write_map(tmp_path, xy, clusters, representatives, images, labels, None, "t")
    assert time.perf_counter() - started < 2.0  # about 0.2 s on the 2-core development machine


def test_interactive_map_escapes_its_texts(tmp_path):
    xy, labels, images = labelled_points(200)
    names = {0: "</script><b>bold</b>", 1: "a & b", 2: '"quoted"', 3: "plain"}
    (tmp_path / "k4").mkdir()
    data_map.write_map(tmp_path / "k4", xy, labels, images[:4], images, labels, names, "t")
    parts = "\n".join(data_map.map_section(tmp_path, {4: {"folder": "k4"}}))
    assert "<b>bold" not in parts and "</script><b>" not in parts
    payload = re.search(r'<script type="application/json" id="map-data">(.*?)</script>', parts, re.S).group(1)
    decoded = json.loads(payload)
    assert set(decoded["points"]["label_name"]) == set(names.values())
    assert html.unescape(payload) == payload or "&" not in payload  # JSON, not HTML entities


def test_the_interactive_map_shows_a_points_image_on_hover(tmp_path, monkeypatch):
    """A real headless browser: hovering a point of the map shows its image, index, label, cluster."""
    try:
        from playwright import sync_api
    except ImportError:
        pytest.skip("playwright is not installed (pip install playwright)")
    executable = browser_executable()
    if executable is None:
        pytest.skip("no chromium installed (apt-get install chromium)")
    monkeypatch.setenv("KMEANS_MNIST_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["3", "4", "--dataset", "usps", "--features", "pca:10", "--samples", "4", "--quiet"]) == 0
    folder = tmp_path / "output" / "usps-pca10"
    assert (folder / "k3" / "map.png").is_file() and (folder / "k4" / "map.npz").is_file()
    page_text = (folder / "report.html").read_text(encoding="utf-8")
    assert 'id="map-canvas"' in page_text and "k4/map.png" in page_text
    with np.load(folder / "k4" / "map.npz", allow_pickle=False) as sample:
        first = {"index": int(sample["index"][0]), "xy": sample["xy"], "cluster": int(sample["cluster"][0])}
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda r: None if r.url.startswith("file://") else problems.append(r.url))
            page.goto((folder / "report.html").as_uri(), wait_until="load")
            where = data_map.to_panel(first["xy"], data_map.INTERACTIVE_SIZE, 8)[0]
            canvas = page.locator("#map-canvas")
            canvas.scroll_into_view_if_needed()
            box = canvas.bounding_box()
            scale = box["width"] / data_map.INTERACTIVE_SIZE
            page.mouse.move(box["x"] + where[0] * scale, box["y"] + where[1] * scale)
            tip = page.locator("#map-tip")
            assert tip.is_visible()
            words = page.locator("#map-tip-text").text_content()
            drawn = page.evaluate(
                "(() => { const c = document.getElementById('map-tip-image');"
                " const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                " let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i]; return [c.width, s]; })()"
            )
            shot = os.environ.get("KMEANS_MNIST_SCREENSHOT_DIR")
            if shot:
                page.screenshot(path=os.path.join(shot, "map-hover.png"))
        finally:
            browser.close()
    assert problems == []
    assert drawn[0] == 16 and drawn[1] > 0  # the 16x16 USPS image, not blank
    assert words.startswith("image ") and "label " in words and f"cluster #{first['cluster']}" in words
    assert report.REPORT == "report.html"
