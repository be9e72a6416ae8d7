"""The pure NumPy engine on its own: what its callbacks report, its fit result, its per-block state."""

import subprocess
import sys

import numpy as np
import pytest

from kmeans_mnist.engine import bounds
from kmeans_mnist.engine import lloyd as engine
from kmeans_mnist.engine.lloyd import BlockState, Centers, InitProgress, IterationInfo, Prepared
from test_kmeans import mnist_like


def test_fit_result_has_the_estimator_attribute_names():
    X = mnist_like(1000, seed=1)
    result = engine.fit(X, 4, random_state=0)
    assert result.cluster_centers_.shape == (4, 784) and result.cluster_centers_.dtype == np.float64
    assert result.labels_.shape == (1000,) and result.n_features_in_ == 784
    assert result.inertia_ > 0 and result.n_iter_ >= 1
    assert isinstance(result.converged_, bool) and result.n_empty_reseeds_ == 0
    labels, inertia = engine.labels_inertia(X, result.cluster_centers_)
    assert np.array_equal(labels, result.labels_)
    assert inertia == pytest.approx(result.inertia_, rel=1e-6)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_iteration_info_carries_the_centres_in_the_data_space(init):
    seen: list[IterationInfo] = []
    X = mnist_like(2000, seed=2).astype(np.float64) * 1e30  # scaled internally by a power of two
    result = engine.fit(X, 5, init=init, n_init=2, random_state=3, tol=0, callback=seen.append)
    assert sorted({info.run for info in seen}) == [0, 1]
    for info in seen:
        assert info.centers.shape == (5, 784) and info.centers.dtype == np.float64
        assert info.seconds >= 0
    # The last iteration of the winning run ends on the returned centres.
    best_run = [info for info in seen if info.iteration == result.n_iter_ and info.inertia > 0]
    assert any(np.allclose(info.centers, result.cluster_centers_, rtol=1e-12, atol=0) for info in best_run)


def test_the_first_iteration_reports_the_means_of_the_first_assignment():
    X = mnist_like(1500, seed=6).astype(np.float64)
    init = X[:4].copy()
    seen: list[IterationInfo] = []
    engine.fit(X, 4, init=init, callback=seen.append)
    labels = ((X[:, None, :] - init[None]) ** 2).sum(axis=2).argmin(axis=1)
    means = np.array([X[labels == c].mean(axis=0) for c in range(4)])
    np.testing.assert_allclose(seen[0].centers, means, rtol=0, atol=1e-4)  # pixels 0..255
    assert seen[0].n_changed == len(X)


def test_init_progress_counts_centres_per_restart():
    reports: list[InitProgress] = []
    X = mnist_like(1500, seed=4)
    engine.fit(X, 6, n_init=3, random_state=0, progress=reports.append)
    for run in range(3):
        counts = [r.n_chosen for r in reports if r.run == run]
        assert counts == list(range(1, 7))
    assert {r.n_clusters for r in reports} == {6}
    reports.clear()
    engine.fit(X, 6, init="random", n_init=2, random_state=0, progress=reports.append)
    assert reports == [InitProgress(0, 6, 6), InitProgress(1, 6, 6)]
    reports.clear()
    engine.fit(X, 6, init=X[:6], progress=reports.append)
    assert reports == [InitProgress(0, 6, 6)]


def test_block_states_per_chunk_add_up_to_the_whole():
    """What a distributed engine does: one BlockState per chunk, sums and counts added up."""
    X = mnist_like(3000, seed=5)
    whole = Prepared(X)
    centers = Centers(whole.block(slice(0, 7)).astype(np.float64))
    reference = BlockState(whole, 7)
    reference.assign(centers)
    parts = []
    for rows in (slice(0, 1000), slice(1000, 2200), slice(2200, 3000)):
        part = BlockState(Prepared(X[rows], offset=whole.offset, scale=whole.scale), 7)
        part.assign(centers)
        parts.append(part)
    assert np.array_equal(np.concatenate([p.labels for p in parts]), reference.labels)
    assert np.array_equal(sum(p.counts for p in parts), reference.counts)
    np.testing.assert_allclose(sum(p.sums for p in parts), reference.sums, rtol=1e-12)
    assert sum(p.energy(centers.values) for p in parts) == pytest.approx(reference.energy(centers.values))


def test_the_engine_does_not_import_scikit_learn():
    code = "import sys, kmeans_mnist.engine.lloyd; print('sklearn' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


# ---------------------------------------------------------------------- memory in K (issue 13)


def test_half_gaps_in_blocks_equal_the_whole_matrix(monkeypatch):
    centers = np.random.default_rng(0).normal(size=(100, 7))
    size, groups = bounds.group_sizes(100)
    assert (size, groups) == (4, 25)
    d = np.sqrt(((centers[:, None] - centers[None]) ** 2).sum(axis=2)) / 2
    np.fill_diagonal(d, np.inf)
    whole = np.stack([d[g::groups].min(axis=0) for g in range(groups)])  # centre j in group j mod G
    monkeypatch.setattr(bounds, "GAP_VALUES", 300)  # 3 centres per block
    np.testing.assert_allclose(bounds.grouped_half_gaps(centers, groups), whole, rtol=1e-6)


def test_group_maxima_take_every_member_of_the_strided_groups():
    values = np.arange(33, dtype=np.float64)[::-1].copy()  # K=33: 17 groups of 2, the last one short
    size, groups = bounds.group_sizes(33)
    assert (size, groups) == (2, 17)
    expected = [max(values[g::groups]) for g in range(groups)]
    np.testing.assert_array_equal(bounds.group_maxima(values, groups), expected)


def test_k_near_n_never_builds_k_by_k_arrays():
    """K = N = 6,000: a K x K float64 matrix would be 288 MB; the fit stays far below it."""
    import tracemalloc

    X = np.random.default_rng(1).normal(size=(6000, 3))
    tracemalloc.start()
    try:
        result = engine.fit(X, 6000, init="random", random_state=0, max_iter=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.inertia_ == pytest.approx(0.0, abs=1e-9)
    assert peak < 6000 * 6000 * 8 / 3


@pytest.mark.parametrize("k", [4, 40])  # the nearest two found column by column, or by argmin
def test_exact_ties_among_several_centres_go_to_the_lowest_index(k):
    X = mnist_like(500, seed=7)
    init = np.repeat(X[:1].astype(np.float64), k, axis=0)
    init[-1] = X[1]  # k - 1 identical centres and one other
    labels = engine.labels_inertia(X, init)[0]
    d2 = ((X[:, None, :].astype(np.float64) - init[None]) ** 2).sum(axis=2)
    assert np.array_equal(labels, d2.argmin(axis=1))  # argmin: the lowest index among equals
    assert set(np.unique(labels)) == {0, k - 1}


def test_estimate_grows_with_k_and_n_and_knows_the_compact_storage():
    small, large_k = (
        engine.estimate(60_000, 784, 10, dtype=np.uint8),
        engine.estimate(60_000, 784, 60_000, dtype=np.uint8),
    )
    assert large_k.bytes > small.bytes and large_k.seconds > 1000 * small.seconds
    assert large_k.bytes < 8 * 2**30  # bounded: O(K x D) + O(N), no K x K term
    as_float = engine.estimate(60_000, 784, 10, dtype=np.float64)
    assert as_float.bytes - small.bytes >= 4 * 60_000 * 784  # the float32 copy that uint8 data avoids
    restarts = engine.estimate(70_000, 784, 10, dtype=np.uint8, n_init=1_000_000)
    assert restarts.seconds > 86400
    assert engine.estimate(1000, 2, 5, init="random").init_seconds == 0


def test_largest_k_is_the_boundary_of_the_estimate():
    budget = engine.estimate(50_000, 784, 2000, dtype=np.uint8).bytes
    most = engine.largest_k(50_000, 784, budget, dtype=np.uint8)
    assert most >= 2000
    assert engine.estimate(50_000, 784, most, dtype=np.uint8).bytes <= budget
    assert engine.estimate(50_000, 784, most + 1, dtype=np.uint8).bytes > budget
    assert engine.largest_k(50_000, 784, 1000, dtype=np.uint8) == 0


def test_the_estimate_is_on_the_safe_side_of_a_real_fit():
    import tracemalloc

    X = np.random.default_rng(2).normal(size=(5000, 50)).astype(np.float32)
    tracemalloc.start()
    try:
        engine.fit(X, 300, random_state=0, max_iter=5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= engine.estimate(5000, 50, 300, dtype=np.float32).bytes
