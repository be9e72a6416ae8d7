"""report.html and the sweep-level pictures: what the page holds, that it needs nothing outside the
folder, that it survives odd summaries, and that a real browser shows it without an error."""

from __future__ import annotations

import csv
import html
import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_support import write_kaggle
from kmeans_mnist import cli
from kmeans_mnist.render import report
from kmeans_mnist.results.experiment import Experiment
from kmeans_mnist.results.kchoice import recommend


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    """An experiment folder written by the command: K=2 and K=4 on 80 labelled random images."""
    base = tmp_path_factory.mktemp("report")
    write_kaggle(base / "data", name="fashion", n_train=50, n_test=30)
    previous = Path.cwd()
    os.environ["KMEANS_MNIST_CACHE"] = str(base / "parsed-cache")
    try:
        os.chdir(base)
        assert (
            cli.main(["2", "4", "--dataset", "fashion", "--data-dir", "data", "--samples", "6", "--quiet"])
            == 0
        )
    finally:
        os.chdir(previous)
        del os.environ["KMEANS_MNIST_CACHE"]
    return base / "output" / "fashion"


class Links(HTMLParser):
    """Every src and href of a page."""

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in ("link", "iframe") or (
            tag == "script" and "src" in attrs
        ):  # the map's inline script is fine
            raise AssertionError(f"the page loads nothing but its images: found <{tag}>")


def links_of(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_report_shows_every_k_with_its_pictures(experiment):
    page = experiment / "report.html"
    links = links_of(page)
    for k in (2, 4):
        assert f"k{k}/centroids.png" in links.images and f"k{k}/confusion.png" in links.images
        assert f"k{k}/clusters/cluster_01.png" in links.images
        assert f"#k{k}" in links.links and f"k{k}/assignments.csv" in links.links
    assert "convergence.png" in links.images and "representatives_by_k.png" in links.images
    text = page.read_text(encoding="utf-8")
    header = (experiment / "summary.csv").read_text(encoding="utf-8").splitlines()[0]
    same = text.split("the same for every K: ")[1].split("</p>")[0] if "the same for every K" in text else ""
    settings = text.split("<h2>Settings</h2>")[1].split("</table>")[0]
    for column in header.split(","):
        in_table = f"<th>{column}</th>" in text
        assert in_table or f"{column} " in same or f">{column}<" in settings or column.endswith("_std"), (
            column
        )


def test_report_needs_nothing_outside_its_folder(experiment):
    links = links_of(experiment / "report.html")
    for target in links.images + links.links:
        if target.startswith("#"):
            continue
        assert "://" not in target and not target.startswith("/"), target
        assert (experiment / target).exists(), target


def test_sweep_pictures_cover_every_k_in_the_folder(experiment):
    with Image.open(experiment / "representatives_by_k.png") as image:
        assert image.mode == "L" and image.height > 2 * 56
    with Image.open(experiment / "convergence.png") as image:
        assert image.format == "PNG"
    for k in (2, 4):
        lines = (experiment / f"k{k}" / "history.csv").read_text(encoding="ascii").splitlines()
        rows = list(csv.DictReader(lines))
        assert [int(row["iteration"]) for row in rows] == list(range(1, len(rows) + 1))
        assert all(int(row["run"]) == 1 for row in rows)


def page(folder: Path) -> str:
    """report.html's text for a folder, made as the sweep makes it: from the experiment's rows."""
    experiment = Experiment(folder)
    runs = experiment.runs()
    rows = experiment.rows(runs)
    return report.report_html(experiment, runs, rows, experiment.advice(rows))


def test_report_reads_the_k_folders_never_the_tables_written_from_them(experiment, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(experiment, folder)
    whole = page(folder)
    assert "<h2>Summary</h2>" in whole and 'href="#k2"' in whole and 'href="#k4"' in whole
    (folder / "summary.csv").write_bytes(b"\xff\xfe\x00garbage")
    (folder / "results.md").write_text("## Choosing K\n\nhand-edited advice\n", encoding="utf-8")
    assert page(folder) == whole, "a damaged summary.csv or results.md changes nothing"
    (folder / "summary.csv").unlink()
    assert 'href="#k4"' in page(folder)
    (folder / "k2" / "summary.json").write_text("{not json", encoding="utf-8")
    text = page(folder)
    assert 'id="k2"' not in text and 'id="k4"' in text and 'href="#k2"' not in text


def test_report_shows_the_experiments_settings_and_the_k_advice(experiment, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(experiment, folder)
    (folder / "settings.json").write_text(
        '{"format": 1, "dataset": "fashion", "repeats": 3}', encoding="utf-8"
    )
    text = page(folder)
    settings = text.split("<h2>Settings</h2>")[1].split("</table>")[0]
    assert ">repeats<" in settings and ">3<" in settings and "format" not in settings
    rows = Experiment(folder).rows()
    advice = recommend(rows)
    assert advice and "<h3>Choosing K</h3>" in text
    assert all(f"<p>{html.escape(line)}</p>" in text for line in advice)
    assert 'href="results.md"' in text


def test_report_is_replaced_atomically(experiment, tmp_path, monkeypatch):
    folder = tmp_path / "copy"
    shutil.copytree(experiment, folder)
    before = (folder / "report.html").read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "report_html", fail)
    with pytest.raises(OSError):
        report.finish_experiment(folder)
    assert (folder / "report.html").read_bytes() == before
    assert not [path.name for path in folder.iterdir() if ".tmp-" in path.name]


def test_report_escapes_what_it_shows(tmp_path):
    folder = tmp_path / "<b>odd & name</b>"
    (folder / "k3").mkdir(parents=True)
    (folder / "k3" / "summary.json").write_text('{"dataset": "<script>x</script>", "k": 3}', encoding="utf-8")
    text = page(folder)
    assert "<script>x" not in text and "&lt;script&gt;" in text and "<b>odd" not in text


# --- a real browser ------------------------------------------------------------------------


def browser_executable() -> str | None:
    for name in (
        os.environ.get("KMEANS_MNIST_TEST_BROWSER"),
        "chromium",
        "chromium-browser",
        "google-chrome",
    ):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def test_report_opens_in_a_headless_browser_from_a_copied_folder(experiment, tmp_path):
    """Every image loads, nothing errors, no request leaves the folder; saves a screenshot."""
    required = os.environ.get("KMEANS_MNIST_REQUIRE_BROWSER") == "1"  # CI: fail, never skip
    try:
        from playwright import sync_api
    except ImportError:
        if required:
            raise
        pytest.skip("playwright is not installed (pip install playwright)")
    executable = browser_executable()
    if executable is None:
        (pytest.fail if required else pytest.skip)("no chromium installed (apt-get install chromium)")
    folder = tmp_path / "copied elsewhere"
    shutil.copytree(experiment, folder)
    problems: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda message: (
                    problems.append(f"console {message.type}: {message.text}")
                    if message.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
            page.on(
                "request",
                lambda request: (
                    None
                    if request.url.startswith("file://")
                    else problems.append(f"left the folder: {request.url}")
                ),
            )
            page.goto((folder / "report.html").as_uri(), wait_until="load")
            images = page.evaluate(
                "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])"
            )
            screenshot = Path(os.environ.get("KMEANS_MNIST_SCREENSHOT_DIR", tmp_path)) / "report.png"
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert len(images) >= 2 * 3 + 2
    assert [src for src, loaded in images if not loaded] == []
    assert problems == []
    with Image.open(screenshot) as shot:
        pixels = np.asarray(shot.convert("L"))
        assert shot.width == 1280 and pixels.std() > 10, "the screenshot shows a page, not a blank"
