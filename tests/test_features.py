"""Feature spaces (--features pixels|pca|umap): parsing, the NumPy PCA, the cache, the command
line's folders and records, predict with a PCA model, the refusals, and a real UMAP on MNIST."""

from __future__ import annotations

import csv
import importlib.util
import json

import numpy as np
import pytest

from cli_support import run_cli, snapshot
from kmeans_mnist.cli import main
from kmeans_mnist.data.cache import cached_by_key
from kmeans_mnist.features import (
    PIXELS,
    FeatureError,
    FeatureSpace,
    cluster_means,
    compute_features,
    fit_pca,
    nearest_points,
    parse_space,
)

HAVE_UMAP = importlib.util.find_spec("umap") is not None


def blobs(n: int = 600, d: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 rows around 4 well-separated prototypes, and which prototype each came from."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, (4, d))
    truth = rng.integers(0, 4, n)
    rows = np.clip(prototypes[truth] + rng.normal(0, 12, (n, d)), 0, 255).astype(np.uint8)
    return rows, truth


# --- the option's text -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "space"),
    [
        ("pixels", PIXELS),
        ("pca", FeatureSpace("pca", 50)),
        ("pca:20", FeatureSpace("pca", 20)),
        ("PCA: 7", FeatureSpace("pca", 7)),
        ("umap", FeatureSpace("umap", 10)),
        ("umap:2", FeatureSpace("umap", 2)),
    ],
)
def test_spaces_parse(text, space):
    assert parse_space(text) == space


@pytest.mark.parametrize("text", ["tsne", "pca:0", "pca:x", "pixels:3", "", "umap:-1"])
def test_bad_spaces_are_refused(text):
    with pytest.raises(FeatureError, match="--features"):
        parse_space(text)


def test_space_names():
    assert parse_space("umap").text == "umap:10" and parse_space("umap").slug == "umap10"
    assert PIXELS.text == PIXELS.slug == "pixels"


# --- PCA in NumPy --------------------------------------------------------------------------------


def test_pca_matches_svd_up_to_sign_and_has_a_fixed_sign():
    rows, _ = blobs()
    pca = fit_pca(rows, 5)
    centred = rows.astype(np.float64) - rows.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    for component in range(5):
        assert abs(abs(pca.basis[:, component] @ vt[component]) - 1) < 1e-9
        column = pca.basis[:, component]
        assert column[np.abs(column).argmax()] > 0  # the largest loading is positive
    np.testing.assert_allclose(pca.variance, singular[:5] ** 2 / (len(rows) - 1), rtol=1e-9)
    np.testing.assert_allclose(pca.transform(rows), centred @ pca.basis, rtol=1e-4, atol=1e-3)
    again = fit_pca(rows[::-1].copy(), 5)  # the same rows in another order: the same basis
    np.testing.assert_allclose(again.basis, pca.basis, atol=1e-9)


def test_pixels_are_the_images_themselves():
    rows, _ = blobs()
    features = compute_features(rows, PIXELS, use_cache=False)
    assert features.values is rows
    assert features.map_xy.shape == (len(rows), 2)


def test_cluster_means_and_nearest_points():
    rows, truth = blobs()
    means = cluster_means(rows, truth, 5)  # cluster 4 is empty
    for cluster in range(4):
        np.testing.assert_allclose(means[cluster], rows[truth == cluster].mean(axis=0))
    assert not means[4].any()
    centers = rows[[3, 10, 99]].astype(np.float64) + 0.1
    assert nearest_points(rows, centers).tolist() == [3, 10, 99]


# --- the cache -----------------------------------------------------------------------------------


def test_cached_by_key_computes_once_per_key(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"values": np.arange(6.0).reshape(3, 2)}

    first = cached_by_key("features-test", "key-a", compute, tmp_path)
    second = cached_by_key("features-test", "key-a", compute, tmp_path)
    assert len(calls) == 1 and np.array_equal(first["values"], second["values"])
    cached_by_key("features-test", "key-b", compute, tmp_path)
    assert len(calls) == 2


def test_pca_features_are_cached_per_images_and_space(tmp_path):
    rows, _ = blobs()
    first = compute_features(rows, parse_space("pca:8"), cache_dir=tmp_path)
    second = compute_features(rows, parse_space("pca:8"), cache_dir=tmp_path)
    assert not first.cached and second.cached
    np.testing.assert_array_equal(first.values, second.values)
    assert not compute_features(rows, parse_space("pca:9"), cache_dir=tmp_path).cached
    changed = rows.copy()
    changed[0, 0] ^= 1
    assert not compute_features(changed, parse_space("pca:8"), cache_dir=tmp_path).cached


# --- the command line ----------------------------------------------------------------------------


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_pixels_results_do_not_change(tmp_path):
    """--features pixels is the default: same folder, same clusters as the engine on the pixels."""
    from kmeans_mnist.data.datasets import load_dataset
    from kmeans_mnist.engine.estimator import KMeans

    plain = run_cli(["4", "--dataset", "usps", "--quiet", "--output", "a"], tmp_path)
    named = run_cli(["4", "--dataset", "usps", "--quiet", "--output", "b", "--features", "pixels"], tmp_path)
    assert plain.returncode == named.returncode == 0, plain.stderr + named.stderr
    ours = [row["cluster"] for row in read_rows(tmp_path / "a" / "usps" / "k4" / "assignments.csv")]
    assert ours == [row["cluster"] for row in read_rows(tmp_path / "b" / "usps" / "k4" / "assignments.csv")]
    pixels = load_dataset("usps").all_pixel
    expected = KMeans(4, random_state=0).fit(pixels).labels_ + 1
    assert [int(value) for value in ours] == expected.tolist()
    [row] = read_rows(tmp_path / "a" / "usps" / "summary.csv")
    assert row["features"] == "pixels"
    summary = json.loads((tmp_path / "a" / "usps" / "k4" / "summary.json").read_text())
    assert summary["features"] == "pixels" and len(summary["typical_members"]) == 4


def test_pca_run_records_its_space_and_predict_uses_the_basis(tmp_path):
    run = ["5", "--dataset", "usps", "--keep-blank", "--features", "pca:12", "--quiet", "--output", "out"]
    done = run_cli(run, tmp_path)  # --keep-blank: the images predict reads
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "out" / "usps-keepblank-pca12"
    [row] = read_rows(folder / "summary.csv")
    assert row["features"] == "pca:12"
    assert json.loads((folder / "settings.json").read_text())["features"] == "pca:12"
    summary = json.loads((folder / "k5" / "summary.json").read_text())
    assert summary["features"] == "pca:12" and summary["feature_params"]["dims"] == 12
    with np.load(folder / "k5" / "model.npz", allow_pickle=False) as model:
        assert model["cluster_centers"].shape == (5, 12)
        assert model["pca_basis"].shape == (model["pca_mean"].shape[0], 12)
        means = model["pixel_means"]
    # the representatives are the members' mean images, not the 12-number centres
    from kmeans_mnist.data.datasets import load_dataset

    data = load_dataset("usps", keep_blank=True)
    clusters = np.array([int(r["cluster"]) - 1 for r in read_rows(folder / "k5" / "assignments.csv")])
    np.testing.assert_allclose(means[2], data.all_pixel[clusters == 2].mean(axis=0))
    # predict on the same images puts each in the cluster the run gave it
    predicted = run_cli(["predict", str(folder / "k5" / "model.npz"), "usps", "--output", "p.csv"], tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    again = np.array([int(r["cluster"]) - 1 for r in read_rows(tmp_path / "p.csv")])
    assert np.mean(again == clusters) > 0.999  # float32 ties aside, the same assignment
    # and so does the Python API's load_model, from pixels: the projection, then the KMeans
    from kmeans_mnist import KMeans, load_model

    loaded = load_model(folder / "k5" / "model.npz")
    assert isinstance(loaded["kmeans"], KMeans) and loaded["kmeans"].cluster_centers_.shape == (5, 12)
    assert "pca:12" in repr(loaded) and len(repr(loaded)) < 1000  # the basis is not printed
    assert np.mean(loaded.predict(data.all_pixel) == clusters) > 0.999
    import pickle

    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(loaded)).predict(data.all_pixel[:50]), loaded.predict(data.all_pixel[:50])
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["--features", "pca:9999"],
            "asks for 9,999 principal axes, but images of 256 pixels give at most 256: use --features pca:256",
        ),
        (
            ["--features", "pca:50", "--limit", "20"],
            "asks for 50 principal axes, but 20 images give at most 19",
        ),
    ],
)
def test_more_principal_axes_than_the_data_has_is_one_error_line(tmp_path, args, words):
    """Refused after the load, before anything is written: the records would name axes that do
    not exist (and pca:9999 would be a folder of its own holding pca:256's results)."""
    done = run_cli(["3", "--dataset", "usps", *args, "--output", "out"], tmp_path)
    assert done.returncode == 2 and done.stderr.count("error:") == 1 and words in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_umap_without_the_extra_is_one_error_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "umap" else real_find_spec(name, *a)
    )
    code = main(["10", "--dataset", "usps", "--features", "umap", "--output", str(tmp_path / "out")])
    error = capsys.readouterr().err
    assert code == 2
    assert error.count("\n") == 1 and error.startswith("error: ")
    assert 'pip install "kmeans-mnist[embed]"' in error
    assert not (tmp_path / "out").exists()


def test_bad_features_option_is_one_error_line(tmp_path):
    done = run_cli(["3", "--dataset", "usps", "--features", "tsne"], tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "pca[:N]" in done.stderr
    assert snapshot(tmp_path) == {}


def test_a_umap_model_is_refused_by_predict_without_unpickling(tmp_path):
    from kmeans_mnist.engine.estimator import KMeans
    from kmeans_mnist.results.model import save_model

    rows, _ = blobs(n=50, d=256)
    model = KMeans(3, random_state=0).fit(rows[:, :10].astype(np.float64))
    save_model(
        tmp_path / "model.npz",
        model,
        image_shape=(16, 16),
        features=np.str_("umap:10"),
        pixel_means=np.zeros((3, 256)),
    )
    done = run_cli(["predict", str(tmp_path / "model.npz"), "usps"], tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "umap:10" in done.stderr and "pickle" in done.stderr and "--features pca" in done.stderr


# --- a real UMAP ---------------------------------------------------------------------------------


@pytest.mark.skipif(not HAVE_UMAP, reason='umap-learn is not installed (pip install "kmeans-mnist[embed]")')
def test_umap_clusters_of_real_mnist_beat_raw_pixels(mnist_pixels, shared_datasets, tmp_path):
    """3,000 real MNIST images: K-means after UMAP agrees with the digits better (NMI) than on pixels."""
    import gzip

    from kmeans_mnist.engine.estimator import KMeans
    from kmeans_mnist.results.metrics import evaluate

    raw = gzip.decompress((shared_datasets / "mnist" / "train-labels-idx1-ubyte.gz").read_bytes())
    labels = np.frombuffer(raw, dtype=np.uint8, offset=8).astype(np.int64)
    pick = np.random.default_rng(0).choice(len(mnist_pixels), 3000, replace=False)
    pixels, truth = mnist_pixels[pick], labels[pick]
    features = compute_features(pixels, parse_space("umap:10"), seed=0, cache_dir=tmp_path)
    assert features.values.shape == (3000, 10) and features.map_xy.shape == (3000, 2)
    nmi = {}
    for name, values in (("pixels", pixels), ("umap", features.values)):
        clusters = KMeans(10, random_state=0).fit(values).labels_
        nmi[name] = evaluate(truth, clusters, 10)[0]["nmi"]
    assert nmi["umap"] > nmi["pixels"] + 0.1, nmi
    again = compute_features(pixels, parse_space("umap:10"), seed=0, cache_dir=tmp_path)
    assert again.cached and np.array_equal(again.values, features.values)


def test_umap_progress_lines_become_short_phases():
    from kmeans_mnist.features import _UmapProgress

    said: list[str] = []
    stream = _UmapProgress(said.append)
    stream.stage = "UMAP to 10 dimensions"
    stream.write("UMAP(min_dist=0.0, n_components=10, random_state=0, verbose=True)\n")
    stream.write("Mon Dec  7 04:51:45 2026 Finding Nearest Neighbors\n")
    stream.write("\rEpochs completed:  45%| ####      90/200 [00:10]")
    assert said == [
        "UMAP to 10 dimensions: finding nearest neighbors",
        "UMAP to 10 dimensions: layout, epoch 90/200",
    ]


def test_features_work_in_a_scikit_learn_pipeline():
    """The Python API's other way: a scikit-learn pipeline of a reducer and this project's KMeans."""
    from sklearn.decomposition import PCA as SkPCA
    from sklearn.pipeline import make_pipeline

    from kmeans_mnist import KMeans

    rows, truth = blobs()
    clusters = make_pipeline(SkPCA(n_components=5), KMeans(4, random_state=0)).fit_predict(rows)
    ours = KMeans(4, random_state=0).fit(compute_features(rows, parse_space("pca:5"), use_cache=False).values)
    from kmeans_mnist.results.metrics import evaluate

    assert evaluate(truth, clusters, 4)[0]["nmi"] > 0.99
    assert evaluate(truth, ours.labels_, 4)[0]["nmi"] > 0.99


def test_captions_name_the_majority_class_where_the_match_is_another():
    """Results that read right: a cluster matched one-to-one to class 1 but mostly of class 0 says so."""
    from types import SimpleNamespace

    from kmeans_mnist.results.run import cluster_classes

    table = np.array([[48, 24], [50, 10]])  # the best one-to-one match gives cluster 1 class 1
    matching = cluster_classes(SimpleNamespace(class_names={0: "zero", 1: "one"}), table, np.array([0, 1]))
    assert matching.name == ["one", "zero"]
    assert matching.caption(0) == "one · 33 % · mostly zero · 67 %"
    assert matching.caption(1) == "zero · 83 %"


@pytest.mark.parametrize(
    ("mean", "std", "shown"),
    [
        ("486.886", "0.000308837", "486.886 ± 0.00031"),
        ("8.589664e+09", "8.199352e+02", "8.589664e+09 ± 820"),
        ("0.5423", "0.0281", "0.542 ± 0.028"),
        ("1234567.0", "52000", "1.235e+06 ± 52000"),
        ("0.25", "0", "0.25 ± 0"),
    ],
)
def test_report_numbers_have_sensible_digits(mean, std, shown):
    from kmeans_mnist.render.report import plus_minus

    assert plus_minus(mean, std) == shown


def k_rows(scores: dict[int, tuple[float, float, float, float | None]], repeats: int = 1) -> list[dict]:
    """summary rows: K -> (silhouette, Calinski-Harabasz, Davies-Bouldin, stability)."""
    return [
        {
            "k": str(k),
            "inertia": "",
            "silhouette": str(s),
            "calinski_harabasz": str(ch),
            "davies_bouldin": str(db),
            "stability": "" if st is None else str(st),
            "repeats": str(repeats),
        }
        for k, (s, ch, db, st) in scores.items()
    ]


def test_k_advice_settles_on_one_k_or_none_with_reasons():
    from kmeans_mnist.results.kchoice import recommend

    # CH picks the smallest K (an end: says little); silhouette and DB agree on K=5
    agree = k_rows({3: (0.1, 500, 2.9, None), 5: (0.2, 400, 2.5, None), 7: (0.15, 300, 2.7, None)})
    verdict = recommend(agree)[1]
    assert verdict.startswith("Recommendation: K=5 (silhouette, Davies-Bouldin)")
    assert "; at an end of the range tried, which says little: Calinski-Harabasz K=3." in verdict
    # two K: both are ends, so no score votes (each best may lie beyond), and it says to go on
    two = recommend(k_rows({3: (0.1, 500, 2.9, None), 4: (0.05, 450, 2.5, None)}))[1]
    assert two.startswith("Recommendation: none (at an end of the range tried, which says little: ")
    assert "silhouette K=3" in two and "Davies-Bouldin K=4" in two and "try K beyond 3..4" in two
    # split between two inner K: none, and why
    split = k_rows(
        {3: (0.1, 500, 2.9, None), 4: (0.2, 450, 2.9, None), 5: (0.1, 400, 2.5, None), 7: (0.1, 1, 2.8, None)}
    )
    assert recommend(split)[1].startswith("Recommendation: none (the scores split: K=4 (silhouette); K=5")
    # with repeats: an unstable K cannot be recommended, and the steadiest inner K votes
    unstable = k_rows(
        {3: (0.1, 500, 2.9, 0.99), 5: (0.2, 400, 2.5, 0.6), 6: (0.15, 390, 2.6, 0.95), 7: (0.1, 1, 2.8, 0.9)},
        3,
    )
    verdict = recommend(unstable)[1]
    assert verdict.startswith("Recommendation: K=6 (stability 0.95)") and "K=5 not stable" in verdict
