"""KMeans as a scikit-learn estimator: Pipeline, clone, GridSearchCV, pickle, sample weights,
dtypes, n_init="auto", callable init, random_state, messages; and the CLI that never imports it."""

from __future__ import annotations

import gzip
import pickle
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.cluster import KMeans as SKLearnKMeans
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

import kmeans_mnist
from cli_support import isolated_env, write_kaggle
from kmeans_mnist import KMeans, ModelError, load_model
from kmeans_mnist.engine import lloyd as engine
from kmeans_mnist.results.model import save_model
from test_kmeans import mnist_like


@pytest.fixture(scope="module")
def mnist_with_labels(shared_datasets):
    """10,000 real MNIST training images (N x 784 uint8) and their labels."""
    folder = shared_datasets / "mnist"
    images = np.frombuffer(
        gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes()), np.uint8, offset=16
    )
    labels = np.frombuffer(
        gzip.decompress((folder / "train-labels-idx1-ubyte.gz").read_bytes()), np.uint8, offset=8
    )
    return images.reshape(-1, 784)[:10_000], labels[:10_000].astype(np.int64)


# ---------------------------------------------------------------------- where estimators work


def test_pipeline_clone_grid_search_and_pickle_on_real_mnist(mnist_with_labels):
    X, y = mnist_with_labels
    pipe = make_pipeline(PCA(50, random_state=0), KMeans(10, random_state=0))
    labels = pipe.fit_predict(X)
    assert labels.shape == (len(X),) and set(np.unique(labels)) == set(range(10))
    assert pipe[-1].cluster_centers_.shape == (10, 50)

    twin = clone(pipe)
    assert twin.get_params()["kmeans__n_clusters"] == 10 and not hasattr(twin[-1], "labels_")
    assert np.array_equal(twin.fit_predict(X), labels)  # same parameters, same seed: same answer

    search = GridSearchCV(pipe, {"kmeans__n_clusters": [5, 10, 15]}, scoring="adjusted_rand_score", cv=2)
    search.fit(X, y)
    assert search.best_params_["kmeans__n_clusters"] in (10, 15)  # 5 clusters cannot match 10 digits
    assert len(search.cv_results_["mean_test_score"]) == 3

    restored = pickle.loads(pickle.dumps(pipe))
    assert np.array_equal(restored.predict(X), pipe.predict(X))
    np.testing.assert_array_equal(restored.transform(X[:100]), pipe.transform(X[:100]))


def test_repr_get_params_set_params():
    model = KMeans(5, n_init=3, algorithm="elkan")
    assert repr(model) == "KMeans(algorithm='elkan', n_clusters=5, n_init=3)"
    params = model.get_params()
    expected = {"n_clusters", "init", "n_init", "max_iter", "tol", "verbose", "random_state", "copy_x"}
    assert set(params) == expected | {"algorithm", "callback"}
    assert model.set_params(n_clusters=7) is model and model.n_clusters == 7


def test_the_defaults_are_scikit_learns():
    ours, theirs = KMeans().get_params(), SKLearnKMeans().get_params()
    assert {name: ours[name] for name in theirs} == theirs


# ---------------------------------------------------------------------- sample weights


def test_weighted_fit_agrees_with_scikit_learn_on_real_mnist(mnist_with_labels):
    X = mnist_with_labels[0]
    rng = np.random.default_rng(0)
    weights = rng.uniform(0.1, 3.0, len(X))
    weights[rng.random(len(X)) < 0.05] = 0.0  # some points weigh nothing
    init = X[rng.choice(len(X), 10, replace=False)].astype(np.float64)
    ours = KMeans(10, init=init).fit(X, sample_weight=weights)
    ref = SKLearnKMeans(10, init=init, n_init=1).fit(X.astype(np.float64), sample_weight=weights)
    assert np.mean(ours.labels_ == ref.labels_) >= 0.999
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)
    assert abs(ours.n_iter_ - ref.n_iter_) <= max(1, 0.1 * ref.n_iter_)
    assert ours.score(X, sample_weight=weights) == pytest.approx(
        ref.score(X, sample_weight=weights), rel=1e-5
    )


def test_integer_weights_are_repeated_rows_from_the_same_start():
    X = mnist_like(800, k=6, seed=3)
    weights = np.random.default_rng(1).integers(0, 4, len(X))
    init = X[weights > 0][:6].astype(np.float64)
    weighted = KMeans(6, init=init, tol=0).fit(X, sample_weight=weights)
    repeated = KMeans(6, init=init, tol=0).fit(np.repeat(X, weights, axis=0))
    np.testing.assert_allclose(weighted.cluster_centers_, repeated.cluster_centers_, atol=1e-9)
    assert weighted.inertia_ == pytest.approx(repeated.inertia_, rel=1e-9)
    assert weighted.n_iter_ == repeated.n_iter_


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_rows_of_weight_zero_are_never_initial_centres(init):
    X = np.concatenate([mnist_like(300, k=3, seed=4), np.full((300, 784), 255, np.uint8)])
    weights = np.r_[np.ones(300), np.zeros(300)]
    for seed in range(5):
        model = KMeans(3, init=init, n_init=1, max_iter=1, random_state=seed).fit(X, sample_weight=weights)
        # one iteration from a start among the first 300 rows keeps every centre away from 255
        assert model.cluster_centers_.max() < 255


def test_weighted_kmeans_plus_plus_is_as_good_as_scikit_learns():
    X = mnist_like(4000, seed=5)
    weights = np.random.default_rng(2).uniform(0, 2, len(X))
    ours = KMeans(10, n_init=5, random_state=0).fit(X, sample_weight=weights)
    ref = SKLearnKMeans(10, n_init=5, random_state=0).fit(X.astype(np.float64), sample_weight=weights)
    assert ours.inertia_ <= ref.inertia_ * 1.01


def test_unit_weights_change_nothing():
    X = mnist_like(1000, seed=6)
    plain = KMeans(5, random_state=3).fit(X)
    ones = KMeans(5, random_state=3).fit(X, sample_weight=np.ones(len(X)))
    assert np.array_equal(plain.labels_, ones.labels_) and plain.inertia_ == ones.inertia_


@pytest.mark.parametrize(
    "weights, message",
    [
        (np.ones(3), "shape"),
        (-np.ones(50), ">= 0"),
        (np.zeros(50), "not all zero"),
        (np.full(50, np.nan), "finite"),
    ],
)
def test_bad_weights_are_refused(weights, message):
    with pytest.raises(ValueError, match=message):
        KMeans(2, random_state=0).fit(np.arange(100.0).reshape(50, 2), sample_weight=weights)


# ---------------------------------------------------------------------- dtypes and memory


@pytest.mark.parametrize(
    "dtype, centres",
    [(np.float64, np.float64), (np.float32, np.float32), (np.uint8, np.float64), (np.int32, np.float64)],
)
def test_centre_dtype_follows_scikit_learn(dtype, centres):
    X = mnist_like(500, k=3, seed=7).astype(dtype)
    model = KMeans(3, random_state=0).fit(X)
    assert model.cluster_centers_.dtype == centres
    assert model.transform(X).dtype == centres
    assert model.labels_.dtype == np.int32 and model.predict(X).dtype == np.int32


def test_large_uint8_data_is_never_copied_to_float():
    X = np.random.default_rng(0).integers(0, 256, (40_000, 784), dtype=np.uint8)
    tracemalloc.start()
    try:
        KMeans(3, random_state=0, max_iter=2).fit(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.75 * X.size * 4  # a float32 copy alone would be X.size * 4 bytes


def test_feature_names_from_a_data_frame():
    pd = pytest.importorskip("pandas", reason='needs pandas, in the test extra: pip install -e ".[test]"')
    X = pd.DataFrame(mnist_like(200, k=2, seed=8)[:, :5], columns=list("abcde"))
    model = KMeans(2, random_state=0).fit(X)
    assert model.feature_names_in_.tolist() == list("abcde") and model.n_features_in_ == 5
    assert model.get_feature_names_out().tolist() == ["kmeans0", "kmeans1"]


# ---------------------------------------------------------------------- parameters


def runs_made(**params) -> int:
    seen = set()
    KMeans(4, random_state=0, callback=lambda info: seen.add(info.run), **params).fit(mnist_like(300, k=4))
    return len(seen)


def test_n_init_auto_as_scikit_learn():
    start = mnist_like(300, k=4)[:4].astype(np.float64)
    assert runs_made() == 1
    assert runs_made(init="random") == 10
    assert runs_made(init=lambda X, k, random_state: X[:k]) == 10
    assert runs_made(init=start) == 1
    with pytest.warns(RuntimeWarning, match="only one init"):
        assert runs_made(init=start, n_init=3) == 1


def test_callable_init_gets_the_data_and_a_random_state():
    X = mnist_like(500, k=4, seed=9)
    calls = []

    def pick(data, k, random_state):
        calls.append((data.shape, k, type(random_state)))
        return data[random_state.choice(len(data), k, replace=False)]

    model = KMeans(4, init=pick, n_init=2, random_state=0).fit(X)
    assert calls == [(X.shape, 4, np.random.RandomState)] * 2
    assert model.cluster_centers_.shape == (4, 784)
    with pytest.raises(ValueError, match=r"init callable.*shape"):
        KMeans(4, init=lambda data, k, random_state: data[:3]).fit(X)


def test_algorithm_lloyd_and_elkan_give_the_same_exact_answer():
    X = mnist_like(600, k=5, seed=10)
    a = KMeans(5, random_state=1, algorithm="lloyd").fit(X)
    b = KMeans(5, random_state=1, algorithm="elkan").fit(X)
    assert np.array_equal(a.labels_, b.labels_) and a.inertia_ == b.inertia_


def test_random_state_kinds():
    X = mnist_like(400, k=3, seed=11)
    a = KMeans(3, random_state=np.random.RandomState(5)).fit(X)
    b = KMeans(3, random_state=np.random.RandomState(5)).fit(X)
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
    np.random.seed(3)
    c = KMeans(3).fit(X)
    np.random.seed(3)
    d = KMeans(3).fit(X)
    assert np.array_equal(c.cluster_centers_, d.cluster_centers_)  # None: numpy's global state
    e = KMeans(3, random_state=np.random.default_rng(2)).fit(X)
    assert e.cluster_centers_.shape == (3, 784)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"init": "nearest"}, "init must be 'k-means\\+\\+', 'k-means\\|\\|', 'random'"),
        ({"init": np.array([["a", "b"], ["c", "d"]], dtype=object)}, "init array must hold numbers"),
        ({"init": np.zeros((2, 2), dtype=complex)}, "init array must hold real numbers"),
        ({"init": 3}, "init array must have shape"),
        ({"random_state": "seed"}, "random_state must be"),
        ({"random_state": -1}, "random_state must be >= 0"),
        ({"random_state": 1.5}, "random_state must be"),
        ({"callback": 5}, "callback must be None or a callable"),
        ({"algorithm": "auto"}, "algorithm must be 'lloyd' or 'elkan'"),
        ({"n_init": "many"}, "n_init must be an integer >= 1 or 'auto'"),
        ({"tol": "0"}, "tol must be"),
        ({"copy_x": "yes"}, "copy_x"),
        ({"n_clusters": 6}, "n_samples=5 should be >= n_clusters=6"),
    ],
)
def test_parameter_messages_name_the_parameter(params, message):
    with pytest.raises(ValueError, match=message):
        KMeans(**{"n_clusters": 2, **params}).fit(np.arange(10.0).reshape(5, 2))


def test_numpy_scalars_are_numbers():
    X = np.arange(20.0).reshape(10, 2)
    model = KMeans(
        np.int64(2), tol=np.int64(0), max_iter=np.int32(50), n_init=np.int8(2), random_state=np.uint32(4)
    )
    assert model.fit(X).cluster_centers_.shape == (2, 2)


# ---------------------------------------------------------------------- large integers


@pytest.mark.parametrize("dtype, base", [(np.int64, 2**62), (np.int64, -(2**62)), (np.uint64, 2**63 + 2**62)])
def test_huge_integers_cluster_like_their_float64_values(dtype, base):
    rng = np.random.default_rng(12)
    groups = rng.integers(0, 3, 300)
    offsets = np.array([0, 2**58, 2**59], dtype=np.int64)[groups][:, None] + rng.integers(0, 2**50, (300, 4))
    X = (np.array(base, dtype=dtype) + offsets.astype(dtype)).astype(dtype)
    as_int = KMeans(3, random_state=0).fit(X)
    as_float = KMeans(3, random_state=0).fit(X.astype(np.float64))
    assert np.array_equal(as_int.labels_, as_float.labels_)
    assert as_int.inertia_ == pytest.approx(as_float.inertia_, rel=1e-6)
    assert len(np.unique(as_int.labels_)) == 3
    assert np.array_equal(as_int.predict(X), as_int.labels_)


def test_integers_spanning_the_whole_int64_range():
    X = np.array([[-(2**63)], [-(2**63) + 1], [2**63 - 1], [2**63 - 2]], dtype=np.int64)
    model = KMeans(2, random_state=0).fit(X)
    assert model.labels_[0] == model.labels_[1] != model.labels_[2] == model.labels_[3]
    assert np.isfinite(model.inertia_)


def test_int16_values_beyond_exact_float32_chunk_sums():
    X = np.random.default_rng(13).integers(-32768, 32767, (3000, 8)).astype(np.int16)
    init = X[:4].astype(np.float64)
    ours = KMeans(4, init=init).fit(X)
    ref = SKLearnKMeans(4, init=init, n_init=1).fit(X.astype(np.float64))
    assert np.mean(ours.labels_ == ref.labels_) >= 0.999
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, rtol=1e-6, atol=1e-3)


# ---------------------------------------------------------------------- the package


def test_package_lists_and_serves_its_names():
    for name in ("KMeans", "load_dataset", "load_model", "ModelError", "Dataset", "DatasetError"):
        assert name in dir(kmeans_mnist) and getattr(kmeans_mnist, name) is not None


def test_load_model_round_trip(tmp_path):
    model = KMeans(3, random_state=0).fit(mnist_like(300, k=3))
    save_model(tmp_path / "model.npz", model)
    loaded = load_model(tmp_path / "model.npz")
    assert np.array_equal(loaded.predict(mnist_like(300, k=3)), model.labels_)


def bad_model_files(tmp_path):
    good = KMeans(2, random_state=0).fit(np.arange(20.0).reshape(10, 2))
    save_model(tmp_path / "good.npz", good)
    arrays = dict(np.load(tmp_path / "good.npz"))

    def npz(name, **changes):
        values = {**arrays, **changes}
        values = {key: value for key, value in values.items() if value is not None}
        with open(tmp_path / name, "wb") as file:
            np.savez(file, **values)
        return tmp_path / name

    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npz").write_text("not a model\n")
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    np.save(tmp_path / "plain.npy", np.zeros(3))
    return [
        tmp_path / "empty.npz",
        tmp_path / "text.npz",
        tmp_path / "cut.npz",
        tmp_path / "plain.npy",
        npz("no-centres.npz", cluster_centers=None),
        npz("no-version.npz", format_version=None),
        npz("text-version.npz", format_version=np.array("one")),
        npz("vector-version.npz", format_version=np.arange(3)),
        npz("flat-centres.npz", cluster_centers=np.zeros(4)),
        npz("text-centres.npz", cluster_centers=np.array([["a", "b"]])),
        npz("nan-centres.npz", cluster_centers=np.full((2, 2), np.nan)),
        npz("empty-centres.npz", cluster_centers=np.zeros((0, 2))),
        npz("future.npz", format_version=np.array(99)),
        npz("text-inertia.npz", inertia=np.array("much")),
    ]


def test_load_model_raises_model_error_naming_the_file(tmp_path):
    for path in bad_model_files(tmp_path):
        with pytest.raises(ModelError) as caught:
            load_model(path)
        assert str(path) in str(caught.value) and isinstance(caught.value, ValueError)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.npz")
    (tmp_path / "notes.md").write_text("# not a model\n")
    with pytest.raises(
        ModelError, match=r"notes.md is not a model file kmeans-mnist wrote \(not an .npz file\)"
    ):
        load_model(tmp_path / "notes.md")  # not NumPy's words about pickled data, which is never loaded


# ---------------------------------------------------------------------- the command line


def test_a_cli_run_never_imports_scikit_learn(tmp_path):
    data = write_kaggle(tmp_path / "data", n_train=40, n_test=10)
    code = (
        "import sys\n"
        "from kmeans_mnist.cli import main\n"
        f"code = main(['3', '--data-dir', {str(data)!r}, '--output', {str(tmp_path / 'out')!r}, '--quiet'])\n"
        "print(code, sorted(name for name in sys.modules if name.split('.')[0] == 'sklearn'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=isolated_env(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "[]"]
    assert (tmp_path / "out").is_dir()


def test_help_imports_neither_numpy_nor_scikit_learn(tmp_path):
    code = (
        "import sys\n"
        "from kmeans_mnist.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({'sklearn', 'numpy'} & set(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stderr.strip() == "[]"


def test_engine_fit_warns_nothing_for_duplicates():
    """The scikit-learn notice about duplicate points is the estimator's; the engine stays silent."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = engine.fit(np.zeros((10, 3)), 3, random_state=0)
    assert result.inertia_ == 0.0
