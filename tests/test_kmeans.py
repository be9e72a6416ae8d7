"""The engine against scikit-learn (the reference) and against the properties K-means must have."""

import itertools
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans as SKLearnKMeans
from sklearn.exceptions import ConvergenceWarning

from kmeans_mnist.engine.estimator import IterationInfo, KMeans
from kmeans_mnist.engine.lloyd import Prepared, initial_centers


def mnist_like(n: int = 6000, k: int = 10, seed: int = 0) -> np.ndarray:
    """Synthetic 28x28 uint8 'digits': k sparse stroke patterns plus noise, mostly-zero like MNIST."""
    rng = np.random.default_rng(seed)
    prototypes = np.zeros((k, 784))
    for p in prototypes:
        on = rng.choice(784, 150, replace=False)
        p[on] = rng.uniform(120, 255, size=150)
    which = rng.integers(0, k, n)
    noise = rng.normal(0, 45, size=(n, 784)) * (rng.random((n, 784)) < 0.3)
    return np.clip(prototypes[which] + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module", params=["synthetic", "mnist"])
def pixels(request):
    if request.param == "synthetic":
        return mnist_like()
    return request.getfixturevalue("mnist_pixels")[:20000]


def brute_force(X: np.ndarray, centers: np.ndarray):
    """Nearest centre and squared distance of every point, in float64, the slow obvious way."""
    d2 = ((X[:, None, :].astype(np.float64) - centers[None, :, :]) ** 2).sum(axis=2)
    return d2.argmin(axis=1), d2


# ---------------------------------------------------------------------- scikit-learn's answers


@pytest.mark.parametrize("k", [3, 10, 48])  # 48: more centres than bound groups (MAX_GROUPS)
def test_same_answers_as_scikit_learn_from_the_same_start(pixels, k):
    rng = np.random.default_rng(k)
    init = pixels[rng.choice(len(pixels), k, replace=False)].astype(np.float64)
    ours = KMeans(k, init=init).fit(pixels)
    ref = SKLearnKMeans(k, init=init, n_init=1, algorithm="lloyd").fit(pixels.astype(np.float32))

    assert np.mean(ours.labels_ == ref.labels_) >= 0.999
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)
    assert abs(ours.n_iter_ - ref.n_iter_) <= max(1, 0.1 * ref.n_iter_)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=0.5)


def test_same_answers_as_scikit_learn_on_float64_input():
    X = mnist_like(3000, seed=3).astype(np.float64) / 255.0
    init = X[:8].copy()
    ours = KMeans(8, init=init).fit(X)
    ref = SKLearnKMeans(8, init=init, n_init=1, algorithm="lloyd").fit(X)
    assert np.mean(ours.labels_ == ref.labels_) >= 0.999
    assert ours.inertia_ == pytest.approx(ref.inertia_, rel=1e-5)


def test_kmeans_plus_plus_best_of_ten_is_as_good_as_scikit_learn(pixels):
    X = pixels[:8000]
    ours = KMeans(10, n_init=10, random_state=0).fit(X)
    ref = SKLearnKMeans(10, n_init=10, random_state=0, algorithm="lloyd").fit(X.astype(np.float32))
    assert ours.inertia_ <= ref.inertia_ * 1.005


def test_random_init_picks_distinct_images_from_the_data():
    X = np.repeat(mnist_like(50, seed=1), 20, axis=0)  # every image 20 times
    centers = initial_centers(Prepared(X), "random", 12, np.random.default_rng(4))
    assert len(np.unique(centers, axis=0)) == 12


# ---------------------------------------------------------------------- properties


def test_inertia_never_increases_and_progress_is_reported():
    seen: list[IterationInfo] = []
    X = mnist_like(3000, seed=5)
    model = KMeans(10, init="random", n_init=1, random_state=1, tol=0, callback=seen.append).fit(X)
    energies = [info.inertia for info in seen]
    assert len(seen) == model.n_iter_
    assert [info.iteration for info in seen] == list(range(1, model.n_iter_ + 1))
    assert seen[0].n_changed == len(X) and seen[-1].n_changed == 0
    assert all(later <= earlier * (1 + 1e-9) for earlier, later in itertools.pairwise(energies))
    assert model.inertia_ <= energies[-1] * (1 + 1e-6)


def test_verbose_prints_each_iteration(capsys):
    model = KMeans(3, random_state=0, verbose=True).fit(mnist_like(300, k=3))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == model.n_iter_ and "inertia" in lines[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    n=st.integers(1, 40),
    d=st.integers(1, 6),
    init=st.sampled_from(["k-means++", "random"]),
)
def test_properties_on_random_small_data(data, n, d, init):
    """Every label is the nearest centre, every centre the mean of its members, never NaN."""
    values = data.draw(st.lists(st.integers(-4, 4), min_size=n * d, max_size=n * d))
    X = np.array(values, dtype=np.float64).reshape(n, d)
    k = data.draw(st.integers(1, n))
    with warnings.catch_warnings(
        record=True
    ) as caught:  # fewer distinct points than K: said, as scikit-learn does
        warnings.simplefilter("always")
        model = KMeans(
            k, init=init, n_init=1, tol=0, max_iter=300, random_state=data.draw(st.integers(0, 2**16))
        ).fit(X)
    used = len(np.unique(model.labels_))
    assert [w.category for w in caught] == ([ConvergenceWarning] if used < k else [])
    assert used == min(k, len(np.unique(X, axis=0)))

    centers = model.cluster_centers_
    assert centers.shape == (k, d) and np.all(np.isfinite(centers))
    assert model.labels_.shape == (n,) and model.labels_.min() >= 0 and model.labels_.max() < k
    _, d2 = brute_force(X, centers)
    own = d2[np.arange(n), model.labels_]
    assert np.all(own <= d2.min(axis=1) + 1e-6)
    assert model.inertia_ == pytest.approx(own.sum(), rel=1e-6, abs=1e-6)
    if model.converged_:
        for cluster in np.unique(model.labels_):
            np.testing.assert_allclose(centers[cluster], X[model.labels_ == cluster].mean(axis=0), atol=1e-5)


def test_same_seed_same_bits():
    X = mnist_like(2000, seed=7)
    a = KMeans(6, n_init=3, random_state=11).fit(X)
    b = KMeans(6, n_init=3, random_state=11).fit(X)
    assert np.array_equal(a.cluster_centers_, b.cluster_centers_)
    assert np.array_equal(a.labels_, b.labels_) and a.inertia_ == b.inertia_
    c = KMeans(6, n_init=3, random_state=12).fit(X)
    assert not np.array_equal(a.cluster_centers_, c.cluster_centers_)


def test_uint8_and_float_input_give_the_same_clusters():
    X = mnist_like(2000, seed=8)
    a = KMeans(5, random_state=0).fit(X)
    for dtype in (np.float32, np.float64):
        b = KMeans(5, random_state=0).fit(X.astype(dtype))
        assert np.array_equal(a.labels_, b.labels_)
        np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, atol=1e-4)  # of 0..255


def test_n_init_keeps_the_best_run():
    finals: dict[int, float] = {}
    X = mnist_like(2000, seed=9)
    model = KMeans(
        10, init="random", n_init=6, random_state=3, callback=lambda i: finals.__setitem__(i.run, i.inertia)
    )
    model.fit(X)
    assert sorted(finals) == list(range(6))
    assert model.inertia_ <= min(finals.values()) * (1 + 1e-6)  # float32 rounding of the final sum


def test_k_equal_one_gives_the_mean():
    X = mnist_like(500, seed=2)
    model = KMeans(1).fit(X)
    np.testing.assert_allclose(model.cluster_centers_[0], X.mean(axis=0), atol=1e-3)
    assert np.all(model.labels_ == 0)
    assert model.inertia_ == pytest.approx(((X - X.mean(axis=0)) ** 2).sum(), rel=1e-6)


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_k_equal_to_the_number_of_distinct_points(init):
    distinct = mnist_like(7, seed=3)
    X = np.repeat(distinct, 30, axis=0)
    model = KMeans(7, init=init, random_state=0).fit(X)
    assert model.inertia_ == 0.0
    assert len(np.unique(model.labels_)) == 7
    for cluster in range(7):
        members = X[model.labels_ == cluster]
        assert np.all(members == members[0])


def test_constant_images_and_more_clusters_than_distinct_points():
    X = np.full((50, 16), 7, dtype=np.uint8)
    with pytest.warns(ConvergenceWarning, match="distinct clusters"):
        model = KMeans(3, random_state=0).fit(X)
    assert np.all(np.isfinite(model.cluster_centers_)) and model.inertia_ == 0.0
    assert np.all(model.cluster_centers_ == 7)


def test_single_image_with_one_cluster():
    model = KMeans(1).fit(np.arange(784, dtype=np.uint8).reshape(1, 784))
    assert model.inertia_ == 0.0 and model.labels_.tolist() == [0] and model.converged_


def test_an_emptied_cluster_is_reseeded_with_the_farthest_point():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (100, 2)), rng.normal(20, 1, (100, 2))])
    init = np.array([[0.0, 0.0], [20.0, 20.0], [1000.0, 1000.0]])  # the third attracts nobody
    model = KMeans(3, init=init).fit(X)
    assert model.n_empty_reseeds_ >= 1
    assert np.all(np.isfinite(model.cluster_centers_))
    assert np.bincount(model.labels_, minlength=3).min() >= 1
    ref = SKLearnKMeans(3, init=init, n_init=1, algorithm="lloyd").fit(X)
    assert model.inertia_ == pytest.approx(ref.inertia_, rel=1e-6)


@pytest.mark.parametrize("magnitude", [1e30, 1e-30])
def test_huge_and_tiny_float_values_are_clustered_like_ordinary_ones(magnitude):
    X = mnist_like(1000, seed=4).astype(np.float64)
    plain = KMeans(4, random_state=0).fit(X)
    scaled = KMeans(4, random_state=0).fit(X * magnitude)
    assert np.array_equal(plain.labels_, scaled.labels_)
    np.testing.assert_allclose(
        scaled.cluster_centers_ / magnitude, plain.cluster_centers_, rtol=1e-5, atol=1e-3
    )
    assert scaled.inertia_ / magnitude**2 == pytest.approx(plain.inertia_, rel=1e-5)


def test_predict_transform_score_agree_with_the_fit():
    X = mnist_like(1500, seed=6)
    model = KMeans(5, random_state=0, tol=0).fit(X)
    assert np.array_equal(model.predict(X), model.labels_)
    distances = model.transform(X)
    assert distances.shape == (len(X), 5)
    assert np.array_equal(distances.argmin(axis=1), model.labels_)
    _, d2 = brute_force(X[:50], model.cluster_centers_)
    np.testing.assert_allclose(distances[:50], np.sqrt(d2), rtol=1e-4)
    assert model.score(X) == pytest.approx(-model.inertia_, rel=1e-6)
    assert np.array_equal(KMeans(5, random_state=0, tol=0).fit_predict(X), model.labels_)


def test_predict_before_fit_and_with_wrong_width_are_errors():
    with pytest.raises(ValueError, match="not fitted"):
        KMeans(2).predict(np.zeros((3, 4)))
    model = KMeans(2, random_state=0).fit(np.arange(20.0).reshape(5, 4))
    with pytest.raises(ValueError, match="features"):
        model.predict(np.zeros((3, 5)))


@pytest.mark.parametrize(
    "params, X, message",
    [
        ({"n_clusters": 0}, np.zeros((5, 2)), "n_clusters"),
        ({"n_clusters": 6}, np.zeros((5, 2)), "n_clusters"),
        ({"n_clusters": 2.5}, np.zeros((5, 2)), "n_clusters"),
        ({"n_clusters": 2, "max_iter": 0}, np.zeros((5, 2)), "max_iter"),
        ({"n_clusters": 2, "n_init": 0}, np.zeros((5, 2)), "n_init"),
        ({"n_clusters": 2, "tol": -1.0}, np.zeros((5, 2)), "tol"),
        ({"n_clusters": 2, "init": "nearest"}, np.zeros((5, 2)), "init"),
        ({"n_clusters": 2, "init": np.zeros((3, 2))}, np.zeros((5, 2)), r"shape \(2, 2\)"),
        ({"n_clusters": 2}, np.array([[0.0, np.nan], [1, 1], [2, 2]]), "NaN"),
        ({"n_clusters": 2}, np.array([[0.0, np.inf], [1, 1], [2, 2]]), "infinity"),
        ({"n_clusters": 1}, np.zeros((0, 3)), "0 sample"),
        ({"n_clusters": 1}, np.zeros(5), "2D array"),
        ({"n_clusters": 1}, np.array([["a", "b"]]), "numeric"),
    ],
)
def test_bad_parameters_raise_value_error(params, X, message):
    """The estimator's messages (scikit-learn's own for the data)."""
    with pytest.raises(ValueError, match=message):
        KMeans(**params).fit(X)


@pytest.mark.parametrize(
    "X, message",
    [
        (np.array([[0.0, np.inf], [1, 1], [2, 2]]), "NaN or infinity"),
        (np.zeros((0, 3)), "empty"),
        (np.zeros(5), "2-D"),
        (np.array([["a", "b"]]), "numbers"),
    ],
)
def test_the_engine_refuses_bad_data_itself(X, message):
    from kmeans_mnist.engine import lloyd as engine

    with pytest.raises(ValueError, match=message):
        engine.fit(X, 1)


def test_constructor_stores_parameters_as_given():
    init = np.zeros((2, 3))
    model = KMeans(2, init=init, n_init=4, max_iter=7, tol=0.5, random_state=9)
    assert model.init is init and model.n_init == 4 and model.max_iter == 7 and model.tol == 0.5
    assert not hasattr(model, "labels_")
    with pytest.warns(RuntimeWarning, match="only one init"):  # scikit-learn's words for given centres
        assert model.fit(np.arange(12.0).reshape(4, 3)) is model


def test_many_exact_ties_are_settled_in_small_steps():
    """Every point ties between identical centres: the float64 tie-break must not blow up memory."""
    X = np.full((20000, 784), 9, dtype=np.uint8)
    X[:5] = 200
    with pytest.warns(ConvergenceWarning, match="distinct clusters"):
        model = KMeans(4, init=np.vstack([X[:1], X[5:8]]).astype(np.float64)).fit(X)
    assert np.all(np.isfinite(model.cluster_centers_)) and model.inertia_ == 0.0
    assert sorted(np.bincount(model.labels_, minlength=4).tolist())[-2:] == [5, 19995]


@pytest.mark.parametrize("init", ["k-means++", "random"])
def test_threads_and_compact_storage_change_nothing(monkeypatch, init):
    """Large data runs on worker threads and converts uint8 blocks on the fly; small data runs in
    one thread on a float32 copy. Forced either way, the answers are the same."""
    import kmeans_mnist.engine.prepared as prepared

    X = mnist_like(3000, seed=12)
    fits = []
    for threshold in (1, 2**62):
        monkeypatch.setattr(prepared, "PARALLEL_MIN_VALUES", threshold)
        fits.append(KMeans(8, init=init, n_init=2, random_state=5).fit(X))
    parallel, serial = fits
    assert np.array_equal(parallel.labels_, serial.labels_)
    np.testing.assert_allclose(parallel.cluster_centers_, serial.cluster_centers_, rtol=0, atol=1e-9)
    assert parallel.inertia_ == pytest.approx(serial.inertia_, rel=1e-12)
    assert parallel.n_iter_ == serial.n_iter_
