"""Data at scale: memory-mapped input without copies, the k-means|| start, and exact answers on
the engine's fast paths (rows multiplied as stored, grouped bounds, sparse sum updates)."""

import tracemalloc

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKLearnKMeans
from sklearn.metrics import adjusted_rand_score

from kmeans_mnist import KMeans
from kmeans_mnist.engine import bounds, prepared, seeding
from kmeans_mnist.engine import lloyd as engine
from kmeans_mnist.engine.lloyd import InitProgress, Prepared
from test_kmeans import mnist_like


def blobs(n_per: int, centres: int, seed: int = 0, spread: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Well separated uint8 blobs (each a random image +- spread): rows and their blob."""
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(spread, 256 - spread, size=(centres, 784))
    which = np.repeat(np.arange(centres), n_per)
    X = prototypes[which] + rng.integers(-spread, spread + 1, size=(len(which), 784))
    return X.astype(np.uint8), which


def assert_float64_answer(ours, X: np.ndarray, init: np.ndarray) -> None:
    """`ours` is scikit-learn's float64 answer from the same start: labels, iterations, inertia."""
    ref = SKLearnKMeans(len(init), init=init, n_init=1, algorithm="lloyd").fit(X.astype(np.float64))
    assert np.array_equal(ours.labels_, ref.labels_)
    assert ours.n_iter_ == ref.n_iter_
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)


# ---------------------------------------------------------------------- memory-mapped input


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """A 160,000 x 784 uint8 .npy (125 MB) opened memory-mapped, and the same rows in memory.

    Large enough that the working memory's fixed part (blocks of 4,096 rows in float32 on each
    thread, ~30 MB) leaves room under half the data: a copy of the data would not fit there."""
    images = np.concatenate([mnist_like(5000, seed=seed) for seed in range(21, 29)]).reshape(-1, 28, 28)
    mirrored = [images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]]  # 4x the rows, cheaply
    X = np.concatenate(mirrored).reshape(-1, 784)
    path = tmp_path_factory.mktemp("big") / "images.npy"
    np.save(path, X)
    return np.load(path, mmap_mode="r"), X


@pytest.mark.parametrize("fit", ["engine", "estimator"])
def test_memory_mapped_input_is_fitted_without_a_copy(mapped, fit):
    """Working memory stays far below the data: no float32 copy (4x the file), no uint8 copy."""
    X_mapped, X = mapped
    init = X[:6].astype(np.float64)

    def run(data):
        if fit == "engine":
            return engine.fit(data, 6, init=init, max_iter=8, tol=0)
        return KMeans(6, init=init, max_iter=8, tol=0).fit(data)

    tracemalloc.start()
    try:
        result = run(X_mapped)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 0.5 * X.nbytes, f"{peak / 1e6:.1f} MB allocated for {X.nbytes / 1e6:.1f} MB of data"
    in_memory = run(X)
    assert np.array_equal(result.labels_, in_memory.labels_)
    assert np.array_equal(result.cluster_centers_, in_memory.cluster_centers_)


def test_memory_mapped_input_gives_scikit_learns_answers(mapped):
    X_mapped, X = mapped
    init = X[100:110].astype(np.float64)
    assert_float64_answer(engine.fit(X_mapped[:15_000], 10, init=init), X[:15_000], init)


# ---------------------------------------------------------------------- exact on every path


@pytest.mark.parametrize(
    ("data", "k"),
    [
        ("digits", 10),  # rows multiplied as stored (offset small against the spread), product padded to 16
        ("digits", 5),  # product padded to 8 columns
        ("digits", 50),  # groups of 2 centres, sums moved by the sparse product
        ("digits", 33),  # groups of 2, the last one padded
        ("grey", 12),  # data far from zero (|offset| 2.2x the spread), multiplied as stored
        ("grey", 70),
        ("flat", 12),  # nearly flat data far from zero: rows centred before the product
    ],
)
def test_compact_storage_gives_exact_answers(monkeypatch, data, k):
    """Large uint8 data (forced here on small data) takes the block-by-block paths: labels and
    iterations are those of scikit-learn's float64 run from the same start."""
    monkeypatch.setattr(prepared, "PARALLEL_MIN_VALUES", 1)
    if data == "digits":
        X = mnist_like(4000, seed=k)
    else:
        spread = 100 if data == "grey" else 10
        X = np.random.default_rng(k).integers(128 - spread, 129 + spread, size=(4000, 784)).astype(np.uint8)
    as_read = Prepared(X)
    assert as_read.raw is not None and bool(as_read.offset_norm) == (data != "flat")
    init = X[np.random.default_rng(k).choice(len(X), k, replace=False)].astype(np.float64)
    if (
        data == "flat"
    ):  # whole rows this close tie exactly with whole centres: scikit-learn's pick is rounding's
        init += np.random.default_rng(k).uniform(-0.5, 0.5, size=init.shape)
    assert_float64_answer(engine.fit(X, k, init=init), X, init)


@pytest.mark.parametrize("k", [10, 40])
def test_blocks_of_assign_rows_give_exact_answers(monkeypatch, k):
    """Large data is assigned in blocks of up to ASSIGN_ROWS rows (forced here on small data):
    float32 sums of a whole block stay exact, labels and iterations are scikit-learn's float64 ones."""
    monkeypatch.setattr(prepared, "PARALLEL_MIN_VALUES", 1)
    monkeypatch.setattr(bounds, "block_rows", lambda k, n=None: prepared.ASSIGN_ROWS)
    X = mnist_like(9000, seed=k)
    init = X[np.random.default_rng(k).choice(len(X), k, replace=False)].astype(np.float64)
    assert_float64_answer(engine.fit(X, k, init=init), X, init)


@pytest.mark.parametrize("k", [10, 50])
def test_passes_without_bounds_give_exact_answers(monkeypatch, k):
    """Every bound test counted useless (then two passes keep no bounds, and look at every
    point): labels and iterations are still those of scikit-learn's float64 run."""
    monkeypatch.setattr(prepared, "PARALLEL_MIN_VALUES", 1)
    monkeypatch.setattr(bounds, "USELESS_STALE", 0.0)
    tested = []
    stale_rows = engine.BlockState.stale_rows
    monkeypatch.setattr(
        engine.BlockState, "stale_rows", lambda self, c: tested.append(self.bounded) or stale_rows(self, c)
    )
    X = np.random.default_rng(k).integers(28, 229, size=(3000, 784)).astype(np.uint8)  # slow to settle
    init = X[np.random.default_rng(k).choice(len(X), k, replace=False)].astype(np.float64)
    ours = engine.fit(X, k, init=init, tol=0)
    ref = SKLearnKMeans(k, init=init, n_init=1, algorithm="lloyd", tol=0).fit(X.astype(np.float64))
    assert np.array_equal(ours.labels_, ref.labels_)
    assert ours.n_iter_ == ref.n_iter_ > 8
    assert tested[:7] == [False, True, False, False, True, False, False]  # kept in passes 2, 5, ...


@pytest.mark.parametrize("data", ["digits", "grey"])
def test_tolerance_from_cluster_sums_is_the_column_sums_one(monkeypatch, data):
    """Without column sums, the fit's tolerance comes from the first assignment's cluster sums:
    the same value to the last bit (whole numbers sum exactly)."""
    monkeypatch.setattr(prepared, "PARALLEL_MIN_VALUES", 1)
    rng = np.random.default_rng(3)
    X = (
        mnist_like(6000, seed=3)
        if data == "digits"
        else rng.integers(28, 229, size=(6000, 784)).astype(np.uint8)
    )
    lean = Prepared(X, column_sums=False)
    assert lean.column_sums == []
    state = engine.BlockState(lean, 7)
    state.assign(engine.Centers(lean.transform_centers(X[:7].astype(np.float64))))
    assert lean.tol_abs(1e-4, state.sums.sum(axis=0)) == Prepared(X).tol_abs(1e-4) > 0


@pytest.mark.parametrize("data", ["digits", "grey", "bright"])
def test_norms_come_from_the_first_pass_exactly(monkeypatch, data):
    """Compact rows without column sums leave their squared norms to the first pass that converts
    every row (the first assignment, or k-means++'s first pass): no pass of their own, and the
    same values to the last bit as that pass makes (also for rows of 255s, |x|^2 = 51M > 2^24,
    which float32 would round)."""
    monkeypatch.setattr(prepared, "PARALLEL_MIN_VALUES", 1)
    rng = np.random.default_rng(5)
    if data == "digits":
        X = mnist_like(5000, seed=5)
    elif data == "grey":
        X = rng.integers(28, 229, size=(5000, 784)).astype(np.uint8)
    else:
        X = mnist_like(5000, seed=5)
        X[rng.choice(len(X), 300, replace=False)] = 255
    eager = Prepared(X)
    passes = []
    fill_all = Prepared._fill_all
    monkeypatch.setattr(Prepared, "_fill_all", lambda self, *a: passes.append(1) or fill_all(self, *a))
    for start in ("array", "k-means++"):
        lean = Prepared(X, column_sums=False)
        init = X[:9].astype(np.float64) if start == "array" else "k-means++"
        centers = engine.initial_centers(lean, init, 9, np.random.default_rng(0))
        engine.BlockState(lean, 9).assign(engine.Centers(centers))
        assert np.array_equal(lean.xn2, eager.xn2) and not passes
    read_first = Prepared(X, column_sums=False).xn2  # before any pass: a pass of their own
    assert np.array_equal(read_first, eager.xn2) and passes == [1]
    init = X[rng.choice(len(X), 9, replace=False)].astype(np.float64)
    assert_float64_answer(engine.fit(X, 9, init=init), X, init)


@pytest.mark.parametrize("k", [7, 12])  # cluster sums moved by the dense product, by the sparse one
def test_weighted_fit_on_compact_storage_matches_repeated_rows(monkeypatch, k):
    """Integer weights on the stored-rows path: the same clusters as the rows repeated."""
    monkeypatch.setattr(prepared, "PARALLEL_MIN_VALUES", 1)
    X = mnist_like(2000, seed=8)
    weights = np.random.default_rng(8).integers(0, 3, size=len(X))
    init = X[weights > 0][:k].astype(np.float64)
    weighted = engine.fit(X, k, init=init, sample_weight=weights)
    repeated = engine.fit(np.repeat(X, weights, axis=0), k, init=init)
    np.testing.assert_allclose(weighted.cluster_centers_, repeated.cluster_centers_, rtol=0, atol=1e-9)
    assert weighted.inertia_ == pytest.approx(repeated.inertia_, rel=1e-9)
    assert weighted.n_iter_ == repeated.n_iter_


# ---------------------------------------------------------------------- k-means||


def test_kmeans_parallel_finds_every_blob():
    X, truth = blobs(300, 12, seed=1)
    data = Prepared(X)
    centers = data.restore_centers(seeding.kmeans_parallel(data, 12, np.random.default_rng(0)))
    blob_of_centre = engine.labels_inertia(centers, X[np.searchsorted(truth, np.arange(12))])[0]
    assert sorted(blob_of_centre.tolist()) == list(range(12))  # one start in each blob
    assert np.array_equal(blob_of_centre[engine.labels_inertia(X, centers)[0]], truth)
    model = KMeans(12, init="k-means||", random_state=0).fit(X)
    assert adjusted_rand_score(truth, model.labels_) == 1.0


def test_kmeans_parallel_is_as_good_as_kmeans_plus_plus_on_digits():
    X = mnist_like(3000, seed=9)
    inertia = {
        init: np.mean([engine.fit(X, 10, init=init, random_state=seed).inertia_ for seed in range(3)])
        for init in ("k-means++", "k-means||")
    }
    assert inertia["k-means||"] <= 1.02 * inertia["k-means++"]


def test_kmeans_parallel_same_seed_same_bits(monkeypatch):
    X = mnist_like(3000, seed=10)
    for threshold in (2**62, 1):  # in one thread on a float32 copy, then stored rows on threads
        monkeypatch.setattr(prepared, "PARALLEL_MIN_VALUES", threshold)
        first = engine.fit(X, 8, init="k-means||", random_state=7, max_iter=3)
        again = engine.fit(X, 8, init="k-means||", random_state=7, max_iter=3)
        other = engine.fit(X, 8, init="k-means||", random_state=8, max_iter=3)
        assert np.array_equal(first.cluster_centers_, again.cluster_centers_)
        assert np.array_equal(first.labels_, again.labels_)
        assert not np.array_equal(first.cluster_centers_, other.cluster_centers_)


def test_kmeans_parallel_weights():
    """Rows of weight 0 never start a cluster; weights are counted, not ignored."""
    X, truth = blobs(200, 6, seed=2)
    weights = np.where(truth < 3, 1.0, 0.0)
    data = Prepared(X, weights=weights)
    for seed in range(3):
        centers = seeding.kmeans_parallel(data, 3, np.random.default_rng(seed), weights=weights)
        start = engine.labels_inertia(data.restore_centers(centers), X[np.searchsorted(truth, np.arange(6))])[
            0
        ]
        assert sorted(start.tolist()) == [0, 1, 2]
    model = KMeans(3, init="k-means||", random_state=0).fit(X, sample_weight=weights)
    assert adjusted_rand_score(truth[truth < 3], model.labels_[truth < 3]) == 1.0


def test_kmeans_parallel_on_few_distinct_rows_and_progress():
    X = np.repeat(mnist_like(3, seed=11), 50, axis=0)  # 3 distinct images
    reports: list[InitProgress] = []
    result = engine.fit(X, 5, init="k-means||", random_state=0, progress=reports.append)
    assert reports == [InitProgress(0, 5, 5)]
    assert result.inertia_ == 0.0 and len(np.unique(result.labels_)) == 3
    assert np.all(np.isfinite(result.cluster_centers_))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda X: KMeans(3, init="k-means|||").fit(X), "init must be 'k-means++', 'k-means||'"),
        (lambda X: engine.fit(X, 3, init="kmeans||"), "init must be 'k-means++', 'k-means||'"),
        (lambda X: seeding.kmeans_parallel(Prepared(X), 3, np.random.default_rng(0), rounds=-1), "rounds"),
        (lambda X: seeding.kmeans_parallel(Prepared(X), 3, np.random.default_rng(0), rounds=1.5), "rounds"),
        (
            lambda X: seeding.kmeans_parallel(Prepared(X), 3, np.random.default_rng(0), oversampling=0),
            "oversampling",
        ),
    ],
)
def test_kmeans_parallel_bad_parameters(call, message):
    with pytest.raises(ValueError, match=message.replace("|", r"\|").replace("+", r"\+")):
        call(mnist_like(200, seed=3))
