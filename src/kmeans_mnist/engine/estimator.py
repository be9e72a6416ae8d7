"""KMeans, the estimator: a drop-in for scikit-learn's `sklearn.cluster.KMeans` over our engine.

Parameters, methods, attributes and answers as scikit-learn's (dense data); the work is done by
the pure NumPy engine (engine.py), which the command line calls directly so that it never pays
for importing scikit-learn. Validation follows scikit-learn's conventions: the constructor only
stores its arguments, `fit` checks them and raises a ValueError naming the parameter.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

from . import lloyd as engine
from . import params
from .lloyd import InitProgress, IterationInfo

__all__ = ["InitProgress", "IterationInfo", "KMeans"]

ALGORITHMS = ("lloyd", "elkan")  # both run the engine's exact Lloyd with Elkan-style bounds


class KMeans(ClassNamePrefixFeaturesOutMixin, ClusterMixin, TransformerMixin, BaseEstimator):
    """K-means clustering with scikit-learn's interface and answers, faster.

    Parameters are scikit-learn's, with the same meanings and defaults:

    n_clusters: number of clusters K (>= 1, at most the number of samples).
    init: "k-means++" (greedy, 2 + ln K candidates per centre, weighted by sample_weight),
        "k-means||" (Bahmani et al., 2012: 5 rounds of about 2K candidates drawn in one pass
        each, reduced by weighted k-means++; for data where K passes are too many; not in
        scikit-learn), "random" (K distinct rows drawn at random, by weight), a K x D array of
        initial centres (used as given, one run), or a callable `init(X, n_clusters,
        random_state)` returning one.
    n_init: restarts, the lowest inertia kept; "auto" is 1 for "k-means++" or an array, 10 for
        "random" or a callable.
    max_iter: iteration limit per restart.
    tol: stop when the squared centre shift summed over all centres is <= tol x the mean
        per-feature variance of X (or when no label changes).
    verbose: print one line per iteration when > 0.
    random_state: None (numpy's global random state), an int, a RandomState or a Generator.
    copy_x: accepted for compatibility; X is never modified either way.
    algorithm: "lloyd" or "elkan"; both run the same exact engine (Lloyd's iterations with
        Elkan-style bounds), whose labels are those of exact arithmetic.
    callback: ours: called with an IterationInfo (run, iteration, inertia, n_changed,
        center_shift, centers, seconds) after every iteration.

    Attributes after fit: cluster_centers_ (K x D; float32 for float32 X, float64 otherwise),
    labels_, inertia_, n_iter_, n_features_in_, feature_names_in_ (for DataFrames with string
    column names), and ours: converged_ (False when a run stopped at max_iter),
    n_empty_reseeds_ (clusters that emptied and were re-seeded with the farthest point).
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        init: str | np.ndarray | Callable = "k-means++",
        n_init: int | str = "auto",
        max_iter: int = 300,
        tol: float = 1e-4,
        verbose: int = 0,
        random_state: int | np.random.RandomState | np.random.Generator | None = None,
        copy_x: bool = True,
        algorithm: str = "lloyd",
        callback: Callable[[IterationInfo], Any] | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.copy_x = copy_x
        self.algorithm = algorithm
        self.callback = callback

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y=None, sample_weight=None) -> KMeans:
        """Cluster X (N x D: uint8 images as loaded, or any numbers); returns self.

        y is ignored. sample_weight (N, >= 0) weighs each point in the means, the inertia and
        the k-means++ draws, as scikit-learn does. X may be a dask array: see _fit_dask.
        """
        if _is_dask_array(X):
            return self._fit_dask(X, sample_weight)
        self._check_params()
        X = validate_data(self, X, dtype="numeric", reset=True)
        n_samples = X.shape[0]
        if self.n_clusters > n_samples:
            raise ValueError(
                f"n_samples={n_samples} should be >= n_clusters={self.n_clusters}: "
                f"use n_clusters <= {n_samples}"
            )
        init = self.init
        if engine.is_array(init):
            engine.check_init_array(init, self.n_clusters, X.shape[1])
            if self.n_init not in ("auto", 1):
                warnings.warn(
                    f"Explicit initial center position passed: performing only one init "
                    f"in KMeans instead of n_init={self.n_init}.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        result = engine.fit(
            X,
            self.n_clusters,
            init=init,
            n_init=self._n_init(),
            max_iter=self.max_iter,
            tol=float(self.tol),
            random_state=_generator(self.random_state),
            sample_weight=sample_weight,
            callback=self.callback,
            verbose=bool(self.verbose),
        )
        self._adopt(result, X.dtype)
        distinct = np.count_nonzero(np.bincount(self.labels_, minlength=self.n_clusters))  # N labels unsorted
        if distinct < self.n_clusters:
            warnings.warn(
                f"Number of distinct clusters ({distinct}) found smaller than n_clusters "
                f"({self.n_clusters}). Possibly due to duplicate points in X.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def fit_predict(self, X, y=None, sample_weight=None) -> np.ndarray:
        """Fit, then return the cluster of each point (0..K-1)."""
        return self.fit(X, sample_weight=sample_weight).labels_

    def fit_transform(self, X, y=None, sample_weight=None) -> np.ndarray:
        """Fit, then return the distances of each point to every centre (N x K)."""
        if _is_dask_array(X):
            return self.fit(X, sample_weight=sample_weight).transform(X)
        return self.fit(X, sample_weight=sample_weight)._distances(self._validated(X))

    # ------------------------------------------------------------------ new data

    def predict(self, X, sample_weight=None) -> np.ndarray:
        """The nearest centre (0..K-1) of each row of X. sample_weight is accepted and ignored
        (a point's cluster does not depend on its weight), as in scikit-learn before 1.5."""
        check_is_fitted(self)
        if _is_dask_array(X):
            return self._dask().predict(self._dask_checked(X), self.cluster_centers_)
        return engine.labels_inertia(self._validated(X), self.cluster_centers_)[0]

    def transform(self, X) -> np.ndarray:
        """Euclidean distances from each row of X to every centre (N x K)."""
        check_is_fitted(self)
        if _is_dask_array(X):
            distances = self._dask().transform(
                self._dask_checked(X), self.cluster_centers_.astype(np.float64)
            )
            return distances.astype(self.cluster_centers_.dtype)
        return self._distances(self._validated(X))

    def score(self, X, y=None, sample_weight=None) -> float:
        """Minus the (weighted) inertia of X against the fitted centres: higher is better."""
        check_is_fitted(self)
        if _is_dask_array(X):
            if sample_weight is not None:
                raise ValueError("sample_weight is not supported with a dask array")
            return -self._dask().inertia(self._dask_checked(X), self.cluster_centers_.astype(np.float64))
        X = self._validated(X)
        return -engine.labels_inertia(X, self.cluster_centers_, sample_weight)[1]

    # ------------------------------------------------------------------ on a Dask cluster

    def _fit_dask(self, X, sample_weight) -> KMeans:
        """fit on a dask array, on the current dask.distributed client (dask_engine): the same
        answers as in memory; labels_ is then a dask array whose chunks stay on the workers.
        init may also be "k-means||" there."""
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported with a dask array")
        if callable(self.init):
            raise ValueError("a callable init is not supported with a dask array: give an array of centres")
        init = self.init
        if isinstance(init, str) and init == "k-means||":  # checked as k-means++, its in-memory kin
            self.init = "k-means++"
            try:
                self._check_params()
            finally:
                self.init = init
        else:
            self._check_params()
        if engine.is_array(init):
            engine.check_init_array(init, self.n_clusters, X.shape[1])
        result = self._dask().fit(
            X,
            self.n_clusters,
            init=init,
            n_init=self._n_init(),
            max_iter=self.max_iter,
            tol=float(self.tol),
            random_state=_generator(self.random_state),
            callback=self.callback,
            verbose=bool(self.verbose),
        )
        self.__dict__.pop("feature_names_in_", None)
        self.n_features_in_ = X.shape[1]
        self._adopt(result, X.dtype)
        return self

    def _adopt(self, result, dtype: np.dtype) -> None:
        """The fitted attributes from an engine's result; float32 data gives float32 centres."""
        self.cluster_centers_ = result.cluster_centers_.astype(
            np.float32 if dtype == np.float32 else np.float64
        )
        self.labels_ = result.labels_
        self.inertia_ = result.inertia_
        self.n_iter_ = result.n_iter_
        self.converged_ = result.converged_
        self.n_empty_reseeds_ = result.n_empty_reseeds_
        self._n_features_out = self.n_clusters

    def _dask(self):
        from .dask import fit as dask_engine

        return dask_engine

    def _dask_checked(self, X):
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has shape {X.shape}, the model was fitted with {self.n_features_in_} features"
            )
        return X

    # ------------------------------------------------------------------ internals

    def _validated(self, X) -> np.ndarray:
        return validate_data(self, X, dtype="numeric", reset=False)

    def _distances(self, X: np.ndarray) -> np.ndarray:
        distances = engine.distances(X, self.cluster_centers_.astype(np.float64))
        return distances.astype(self.cluster_centers_.dtype, copy=False)

    def _n_init(self) -> int:
        """scikit-learn's n_init="auto": 1 for k-means++ or given centres, 10 for random or a callable."""
        if self.n_init != "auto":
            return 1 if engine.is_array(self.init) else self.n_init
        return 10 if (callable(self.init) or (isinstance(self.init, str) and self.init == "random")) else 1

    def _check_params(self) -> None:
        """A ValueError naming the first parameter that is not usable (the data is checked after)."""
        for name in ("n_clusters", "n_init", "max_iter", "tol"):
            params.check(name, getattr(self, name))
        if isinstance(self.init, str) and self.init not in engine.INITS:
            raise ValueError(
                "init must be 'k-means++', 'k-means||', 'random', an array of initial centres or a callable, "
                f"got {self.init!r}"
            )
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be 'lloyd' or 'elkan', got {self.algorithm!r}")
        if not isinstance(self.verbose, (numbers.Integral, bool)):
            raise ValueError(f"verbose must be an integer or a bool, got {self.verbose!r}")
        if not isinstance(self.copy_x, (bool, np.bool_)):
            raise ValueError(f"copy_x must be True or False, got {self.copy_x!r}")
        if self.callback is not None and not callable(self.callback):
            raise ValueError(
                f"callback must be None or a callable taking an IterationInfo, got {self.callback!r}"
            )
        _generator(self.random_state, check_only=True)


def _is_dask_array(X) -> bool:
    """True for a dask.array.Array (told by its type, without importing Dask)."""
    return type(X).__name__ == "Array" and type(X).__module__.startswith("dask.")


def _generator(random_state, check_only: bool = False) -> np.random.Generator | None:
    """The engine's Generator for scikit-learn's random_state.

    An int seeds it directly (the same int always gives the same bits, as the command line's
    --seed); a RandomState (or None: numpy's global one, as scikit-learn) gives a seed drawn
    from it; a Generator is used as it is.
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state!r}")
        return None if check_only else np.random.default_rng(int(random_state))
    if random_state is None or isinstance(random_state, np.random.RandomState):
        if check_only:
            return None
        legacy = random_state if random_state is not None else np.random.mtrand._rand
        return np.random.default_rng(legacy.randint(np.iinfo(np.int32).max))
    raise ValueError(
        f"random_state must be None, an integer >= 0, a numpy RandomState or Generator, got {random_state!r}"
    )
