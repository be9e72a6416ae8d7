"""Pictures and the cluster -> class matching they show: order, caps for large K, the GIF."""

import itertools

import numpy as np
import pytest
from PIL import Image

from kmeans_mnist.render import pictures
from kmeans_mnist.results.metrics import accuracy, best_matching, matched_classes

NAMES = [f"class {c}" for c in range(10)]


def random_table(k: int, classes: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 50, (k, classes))


def find_tile(picture: np.ndarray, tile: np.ndarray, scale: int = 1) -> list[tuple[int, int]]:
    """Where (top, left) the tile, upscaled by scale, lies in the picture: every exact match."""
    tile = np.kron(tile, np.ones((scale, scale), np.uint8))
    height, width = tile.shape
    rows = np.lib.stride_tricks.sliding_window_view(picture, width, axis=1)
    candidates = np.argwhere((rows[: picture.shape[0] - height + 1] == tile[0]).all(axis=2))
    return [
        (int(top), int(left))
        for top, left in candidates
        if np.array_equal(picture[top : top + height, left : left + width], tile)
    ]


# --- cluster -> class ------------------------------------------------------------------------


@pytest.mark.parametrize("k, classes", [(1, 1), (3, 5), (5, 5), (4, 9)])
def test_hungarian_matching_is_one_to_one_and_best(k, classes):
    table = random_table(k, classes, seed=k)
    match, share, method = matched_classes(table)
    assert method == "hungarian"
    assert len(set(match.tolist())) == k
    total = table[np.arange(k), match].sum()
    best = max(table[np.arange(k), list(p)].sum() for p in itertools.permutations(range(classes), k))
    assert total == best and total / table.sum() == pytest.approx(accuracy(table))
    assert share == pytest.approx(table[np.arange(k), match] / table.sum(axis=1))


def test_best_matching_finds_scipys_best_sum_for_any_shape_and_ties():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(7)
    for _ in range(400):
        rows, columns = rng.integers(1, 13, 2)
        table = rng.integers(0, rng.choice([2, 4, 1000]), (rows, columns))  # few values: many ties
        found_rows, found_columns = best_matching(table)
        best_rows, best_columns = scipy_optimize.linear_sum_assignment(table, maximize=True)
        assert len(found_rows) == min(rows, columns) and np.array_equal(found_rows, np.sort(found_rows))
        assert len(set(found_rows.tolist())) == len(found_rows) == len(set(found_columns.tolist()))
        assert table[found_rows, found_columns].sum() == table[best_rows, best_columns].sum()


def test_a_plain_run_never_imports_scipy(tmp_path):
    """scipy.optimize alone took a fifth of a USPS sweep's time: the matching is our own."""
    import subprocess
    import sys

    from cli_support import isolated_env, write_kaggle

    write_kaggle(tmp_path / "data")
    code = (
        "import sys; from kmeans_mnist import cli; "
        "code = cli.main(['3', '--data-dir', 'data', '--quiet', '--samples', '2']); "
        "print(code, sorted(name for name in sys.modules if name.split('.')[0] in ('scipy', 'sklearn')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=isolated_env(tmp_path), capture_output=True, text=True
    )
    assert result.stdout.strip() == "0 []", result.stderr


def test_more_clusters_than_classes_get_their_majority_class():
    table = random_table(12, 4)
    table[3] = 0  # an empty cluster: share 0, not NaN
    match, share, method = matched_classes(table)
    assert method == "majority"
    assert (table[np.arange(12), match] == table.max(axis=1)).all()
    assert share[3] == 0 and np.isfinite(share).all()


# --- the confusion heat map ------------------------------------------------------------------


def test_confusion_rows_put_matched_pairs_on_the_diagonal():
    table = random_table(6, 6, seed=3)
    match, _, method = matched_classes(table)
    rows, labels, row_match, _ = pictures.confusion_rows(table, NAMES[:6], match, method)
    assert row_match.tolist() == list(range(6)), "row i is the cluster matched to class i"
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, table.tolist()))
    for row, label, column in zip(rows, labels, row_match, strict=True):
        cluster = int(label.split()[0][1:]) - 1
        assert np.array_equal(row, table[cluster]) and match[cluster] == column


def test_confusion_for_thousands_of_clusters_merges_them_by_class():
    k = 5000
    table = random_table(k, 10, seed=4)
    match, _, method = matched_classes(table)
    rows, labels, _, subtitle = pictures.confusion_rows(table, NAMES, match, method)
    assert len(rows) <= 10 and rows.sum() == table.sum()
    assert np.array_equal(rows.sum(axis=0), table.sum(axis=0))
    assert sum(int(label.split(": ")[1].split()[0].replace(",", "")) for label in labels) == k
    assert "5,000 clusters" in subtitle
    image = pictures.confusion_image(table, NAMES, match, method, "title")
    assert image.height < 1000 and image.width < 1200


def test_confusion_image_colours_each_matched_cell():
    table = np.array([[90, 10], [5, 95]])
    match, _, method = matched_classes(table)
    image = np.asarray(pictures.confusion_image(table, ["a", "b"], match, method, "title"))
    outline = np.all(image == pictures.MATCH_OUTLINE, axis=2)
    assert outline.sum() > 4 * 70 * 2, "two outlined cells"
    assert image.shape[2] == 3


# --- sheets for large K ----------------------------------------------------------------------


@pytest.mark.parametrize("k", [5, 150, 3000])
def test_centroid_sheet_stays_a_sane_size(k):
    rng = np.random.default_rng(0)
    representatives = rng.integers(0, 256, (k, 28, 28), dtype=np.uint8)
    sizes = rng.integers(0, 100, k)
    sheet = pictures.centroid_sheet(representatives, sizes, title="t")
    assert sheet.shape[0] * sheet.shape[1] < 16e6
    scale = 4 if k <= 100 else 2 if k <= 1000 else 1
    largest = representatives[np.argmax(sizes)]
    assert len(find_tile(sheet, largest, scale)) == 1, "the largest cluster's representative is on it"
    if k > pictures.SHEET_MAX_TILES:
        smallest = representatives[np.argmin(sizes)]
        assert not find_tile(sheet, smallest, scale), "the smallest clusters are left out"


# --- the fit, iteration by iteration ---------------------------------------------------------


def test_evolution_gif_has_one_frame_per_recorded_iteration(tmp_path):
    rng = np.random.default_rng(0)
    frames = [(f"iteration {i}", rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)) for i in range(1, 6)]
    path = tmp_path / "evolution.gif"
    pictures.save_evolution_gif(path, frames, "usps · K=3")
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5 and gif.info.get("loop") == 0
        gif.seek(4)
        assert gif.info["duration"] == pictures.EVOLUTION_LAST_FRAME_MS


def test_side_by_side_has_a_row_per_k():
    rng = np.random.default_rng(0)
    rows = [(k, rng.integers(0, 256, (k, 16, 16), dtype=np.uint8), None, None) for k in (2, 3, 60)]
    sheet = pictures.side_by_side(rows, "usps")
    [(top_k2, _)] = find_tile(sheet, rows[0][1][1], scale=2)
    [(top_k3, _)] = find_tile(sheet, rows[1][1][2], scale=2)
    assert top_k2 < top_k3, "K ascending, one row each"
    assert not find_tile(sheet, rows[2][1][-1], scale=2), "a row shows at most SIDE_BY_SIDE_MAX_TILES"


def test_side_by_side_puts_each_class_in_its_own_columns():
    rng = np.random.default_rng(1)
    images = {k: rng.integers(0, 256, (k, 16, 16), dtype=np.uint8) for k in (2, 3)}
    a, b = (0, "a"), (1, "b")
    rows = [(2, images[2], [a, b], [["x"], ["y"]]), (3, images[3], [a, a, b], [["x"], ["y"], ["z"]])]
    sheet = pictures.side_by_side(rows, "t")
    [(_, b_in_k2)] = find_tile(sheet, images[2][1], scale=3)
    [(_, b_in_k3)] = find_tile(sheet, images[3][2], scale=3)
    [(_, second_a)] = find_tile(sheet, images[3][1], scale=3)
    assert b_in_k2 == b_in_k3, "class b in the same column for every K"
    assert second_a < b_in_k3, "class a gets two columns: K=3 has two of its clusters"


def test_text_falls_back_to_the_bitmap_font(monkeypatch):
    pictures.font.cache_clear()
    pictures._line_image.cache_clear()

    def no_freetype(size=None):
        if size is not None:
            raise ImportError("no FreeType")
        return original()

    original = pictures.ImageFont.load_default
    monkeypatch.setattr(pictures.ImageFont, "load_default", no_freetype)
    try:
        block = pictures.text_block(["hello"])
        assert (np.asarray(block) < 128).any()
    finally:
        pictures.font.cache_clear()
        pictures._line_image.cache_clear()
