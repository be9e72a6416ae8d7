"""KMeans, the estimator: scikit-learn's interface over the pure NumPy engine (engine.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from . import engine
from .engine import InitProgress, IterationInfo

__all__ = ["InitProgress", "IterationInfo", "KMeans"]


class KMeans:
    """K-means clustering (Lloyd), with scikit-learn's parameters, attributes and results.

    init: "k-means++" (greedy, 2 + ln K candidates per centre, as scikit-learn),
    "random" (K distinct images picked at random, the original project's way), or a K x D array
    used as given. Convergence as scikit-learn: no label changes, or the squared centre shift
    summed over all centres <= tol x the mean per-feature variance of X.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | np.ndarray = "k-means++",
        n_init: int = 1,
        max_iter: int = 300,
        tol: float = 1e-4,
        random_state: int | np.random.Generator | None = None,
        verbose: bool = False,
        callback: Callable[[IterationInfo], Any] | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose
        self.callback = callback

    def fit(self, X: np.ndarray) -> KMeans:
        """Cluster X (N x D, uint8 or float); learned state lands in the `*_` attributes."""
        result = engine.fit(
            X,
            self.n_clusters,
            init=self.init,
            n_init=self.n_init,
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
            callback=self.callback,
            verbose=self.verbose,
        )
        self.__dict__.update(vars(result))
        return self

    def fit_predict(self, X: np.ndarray) -> np.ndarray:
        """Fit, then return the cluster of each point (0..K-1)."""
        return self.fit(X).labels_

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The nearest centre (0..K-1) of each row of X."""
        return engine.labels_inertia(self._check_new(X), self.cluster_centers_)[0]

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Euclidean distances from each row of X to every centre (N x K, float64)."""
        return engine.distances(self._check_new(X), self.cluster_centers_)

    def score(self, X: np.ndarray) -> float:
        """Minus the inertia of X against the fitted centres (higher is better), as scikit-learn."""
        return -float(engine.labels_inertia(self._check_new(X), self.cluster_centers_)[1])

    def _check_new(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "cluster_centers_"):
            raise ValueError("this KMeans is not fitted yet: call fit first")
        X = engine.check_X(X)
        if X.shape[1] != self.cluster_centers_.shape[1]:
            raise ValueError(
                f"X has {X.shape[1]} features, the model was fitted with {self.cluster_centers_.shape[1]}"
            )
        return X
