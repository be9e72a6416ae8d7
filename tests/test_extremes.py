"""The API on data and weights at the edges of float64: scikit-learn's answers where it has them,
one clear ValueError where nothing can be computed, never NaN centres or an OverflowError."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans as SKLearnKMeans

from kmeans_mnist import KMeans


def blobs(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, 6)) * 5
    return centres[rng.integers(0, 4, 400)] + rng.normal(size=(400, 6))


def reference(X: np.ndarray, init: np.ndarray, sample_weight=None) -> SKLearnKMeans:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SKLearnKMeans(4, init=init, n_init=1).fit(X, sample_weight=sample_weight)


@pytest.mark.parametrize("factor", [2.0**-530, 1e-160, 1e-300, 1e200, 2.0**900])
def test_tiny_and_huge_data_cluster_as_at_ordinary_scale(factor):
    """Labels and centres of factor x X are those of X (scikit-learn's), scaled: no OverflowError
    for 1e-160, no ZeroDivisionError for 1e200; the inertia is infinite where float64 cannot hold it."""
    X = blobs()
    init = X[:4].copy()
    expected = reference(X, init)
    ours = KMeans(4, init=init * factor, n_init=1).fit(X * factor)
    assert np.array_equal(ours.labels_, expected.labels_)
    np.testing.assert_allclose(
        ours.cluster_centers_ / factor, expected.cluster_centers_, rtol=1e-6, atol=1e-5
    )
    true_inertia = expected.inertia_ * factor * factor
    if np.isfinite(true_inertia) and true_inertia > 1e-300:
        np.testing.assert_allclose(ours.inertia_, true_inertia, rtol=1e-6)
    elif not np.isfinite(true_inertia):
        assert ours.inertia_ == np.inf
    assert np.array_equal(ours.predict(X * factor), expected.labels_)


def test_data_below_the_smallest_normal_number_is_refused_clearly():
    X = blobs() * 1e-310
    with pytest.raises(ValueError, match="too small"):
        KMeans(4, random_state=0).fit(X)


@pytest.mark.parametrize("weight", [1e307, 1e306])
def test_weights_whose_sums_overflow_are_refused_clearly(weight):
    X = blobs()
    weights = np.full(len(X), weight)
    with pytest.raises(ValueError, match="sample_weight is too large") as caught:
        KMeans(4, random_state=0).fit(X, sample_weight=weights)
    assert "divide sample_weight" in str(caught.value)


def test_large_weights_that_fit_give_scikit_learns_answer():
    X = blobs()
    init = X[:4].copy()
    weights = np.random.default_rng(1).random(len(X)) * 1e250
    expected = reference(X, init, weights)
    ours = KMeans(4, init=init, n_init=1).fit(X, sample_weight=weights)
    assert np.isfinite(ours.cluster_centers_).all()
    assert np.array_equal(ours.labels_, expected.labels_)
    np.testing.assert_allclose(
        ours.cluster_centers_, expected.cluster_centers_, rtol=1e-6, atol=1e-5
    )  # float32 rows, as in test_kmeans
    np.testing.assert_allclose(ours.inertia_, expected.inertia_, rtol=1e-6)
