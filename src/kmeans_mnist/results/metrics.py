"""How well clusters match known labels, all computed from one contingency table.

The table has one row per cluster (0..K-1) and one column per class (sorted label values),
so every score costs O(K x C) once it is built, whatever the number of images.
NMI and ARI follow scikit-learn's definitions, special cases included.
"""

import numpy as np


def contingency(labels: np.ndarray, clusters: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Count images per (cluster, class): a K x C int64 table, and the sorted class values.

    Clusters with no member still get a (zero) row, so row i is always cluster i.
    """
    labels = np.asarray(labels).ravel()
    clusters = np.asarray(clusters).ravel()
    if labels.size == 0 or labels.shape != clusters.shape:
        raise ValueError(f"need as many labels as clusters, and some: got {labels.size} and {clusters.size}")
    if clusters.min() < 0 or clusters.max() >= n_clusters:
        raise ValueError(f"cluster numbers must lie in 0..{n_clusters - 1}")
    classes, class_index = np.unique(labels, return_inverse=True)
    n_classes = len(classes)
    cells = clusters.astype(np.int64) * n_classes + class_index
    table = np.bincount(cells, minlength=n_clusters * n_classes).reshape(n_clusters, n_classes)
    return table.astype(np.int64), classes


def _n_samples(table: np.ndarray) -> int:
    n = int(np.sum(table))
    if n == 0:
        raise ValueError("the contingency table is empty")
    return n


def purity(table: np.ndarray) -> float:
    """Share of images that belong to their cluster's majority class."""
    table = np.asarray(table)
    return float(table.max(axis=1).sum() / _n_samples(table))


def accuracy(table: np.ndarray) -> float:
    """Share of images right under the best one-to-one matching of clusters to classes.

    Clusters (or classes) left without a partner count as wrong.
    """
    table = np.asarray(table)
    rows, columns = best_matching(table)
    return float(table[rows, columns].sum() / _n_samples(table))


def best_matching(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The one-to-one matching of rows to columns with the largest sum (the Hungarian method):
    (rows, columns), as scipy.optimize.linear_sum_assignment(table, maximize=True) returns them.

    Written out (shortest augmenting paths with potentials, one NumPy pass per step) because
    importing scipy.optimize costs about 0.3 s, a fifth of a whole USPS sweep, for a table of
    at most a few hundred cells. Ties may pick another matching of the same sum.
    """
    table = np.asarray(table, dtype=np.float64)
    transposed = table.shape[0] > table.shape[1]
    cost = -(table.T if transposed else table)  # n <= m: every row gets a column
    n, m = cost.shape
    row_potential, column_potential = np.zeros(n + 1), np.zeros(m + 1)
    owner = np.zeros(m + 1, dtype=np.int64)  # owner[j]: the row (from 1) holding column j, 0 if free
    came_from = np.zeros(m + 1, dtype=np.int64)
    for row in range(1, n + 1):
        owner[0], column = row, 0  # column 0: where the new row's path starts
        slack = np.full(m + 1, np.inf)
        visited = np.zeros(m + 1, dtype=bool)
        while owner[column]:
            visited[column] = True
            here = owner[column]
            reduced = cost[here - 1] - row_potential[here] - column_potential[1:]
            open_ = ~visited[1:]
            closer = open_ & (reduced < slack[1:])
            slack[1:][closer] = reduced[closer]
            came_from[1:][closer] = column
            candidates = np.where(open_, slack[1:], np.inf)
            nearest = int(np.argmin(candidates)) + 1
            step = candidates[nearest - 1]
            done = np.flatnonzero(visited)
            row_potential[owner[done]] += step
            column_potential[done] -= step
            slack[1:][open_] -= step
            column = nearest
        while column:  # flip the path back to its start
            previous = came_from[column]
            owner[column] = owner[previous]
            column = previous
    columns = np.flatnonzero(owner[1:])
    rows = owner[1:][columns] - 1
    order = np.argsort(rows)
    rows, columns = rows[order], columns[order]
    if transposed:
        rows, columns = columns, rows
        order = np.argsort(rows)
        rows, columns = rows[order], columns[order]
    return rows, columns


def matched_classes(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The class each cluster stands for: its column in the table, the share of its members in
    that class (0 for an empty cluster), and how it was chosen.

    "hungarian" for K <= classes: the one-to-one matching that `accuracy` scores, so no two
    clusters get the same class. "majority" for K > classes, where a one-to-one matching would
    leave clusters without a class: each cluster gets its most frequent class.
    """
    table = np.asarray(table)
    n_clusters, n_classes = table.shape
    if n_clusters <= n_classes:
        rows, columns = best_matching(table)
        match = np.empty(n_clusters, dtype=np.int64)
        match[rows] = columns
        method = "hungarian"
    else:
        match = table.argmax(axis=1).astype(np.int64)
        method = "majority"
    sizes = table.sum(axis=1)
    share = table[np.arange(n_clusters), match] / np.maximum(sizes, 1)
    return match, share.astype(np.float64), method


def _entropy(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def nmi(table: np.ndarray) -> float:
    """Normalized mutual information, arithmetic-mean normalization (scikit-learn's default).

    Both sides unsplit (one class, one cluster) is a perfect match: 1.0.
    """
    table = np.asarray(table, dtype=np.float64)
    cluster_sizes = table.sum(axis=1)
    class_sizes = table.sum(axis=0)
    n_clusters = np.count_nonzero(cluster_sizes)
    n_classes = np.count_nonzero(class_sizes)
    if n_clusters == n_classes and n_clusters <= 1:
        return 1.0
    if n_clusters == 1 or n_classes == 1:
        return 0.0
    n = table.sum()
    rows, columns = np.nonzero(table)
    joint = table[rows, columns] / n
    expected = cluster_sizes[rows] * class_sizes[columns] / (n * n)
    mutual_information = max(float((joint * np.log(joint / expected)).sum()), 0.0)
    if mutual_information == 0.0:
        return 0.0
    mean_entropy = (_entropy(cluster_sizes) + _entropy(class_sizes)) / 2
    return mutual_information / mean_entropy


def _pairs(counts: np.ndarray) -> int:
    """Number of unordered pairs within each group, summed (exact Python int)."""
    counts = np.asarray(counts, dtype=np.int64).ravel()
    return int((counts * (counts - 1) // 2).sum())


def ari(table: np.ndarray) -> float:
    """Adjusted Rand index, as scikit-learn's adjusted_rand_score (identical pairings: 1.0)."""
    table = np.asarray(table, dtype=np.int64)
    n = int(table.sum())
    together_both = _pairs(table)
    together_cluster = _pairs(table.sum(axis=1))
    together_class = _pairs(table.sum(axis=0))
    apart_both = n * (n - 1) // 2 - together_cluster - together_class + together_both
    cluster_only = together_cluster - together_both
    class_only = together_class - together_both
    if cluster_only == 0 and class_only == 0:
        return 1.0
    numerator = 2 * (together_both * apart_both - class_only * cluster_only)
    denominator = together_class * (class_only + apart_both) + together_cluster * (cluster_only + apart_both)
    return numerator / denominator


def evaluate(
    labels: np.ndarray, clusters: np.ndarray, n_clusters: int
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """All four scores, plus the table and classes they came from (for the confusion plot)."""
    table, classes = contingency(labels, clusters, n_clusters)
    scores = {"purity": purity(table), "accuracy": accuracy(table), "nmi": nmi(table), "ari": ari(table)}
    return scores, table, classes


# --- scores without labels: how well separated the clusters are ---------------------------------

SILHOUETTE_SAMPLE = 10_000  # exact silhouette up to this many images, a fixed sample above
SILHOUETTE_SEED = 0
DISPERSION_BLOCK_VALUES = 2**20  # values per block of a cluster's rows in dispersion_scores (8 MB as float64)
_FLOAT64_DISTANCES_UP_TO = 4096  # smaller samples keep float64 distances (the tests' exact mode)


class SilhouetteSample:
    """The silhouette of any labelling of X, from one set of pairwise distances.

    The pairwise distances of the images (all of them up to `sample_size`, else a fixed-seed
    sample of that many) do not depend on K, so they are computed once, on the first call, and
    every later labelling (each K, each repeat) costs one product of that matrix with the
    labelling's one-hot matrix. Only the half on and above the diagonal is kept (strips of rows;
    the other half is its mirror): memory sample_size^2 / 2 float32 (200 MB at 10,000; float64 at
    4,096 and below). Definitions as sklearn.metrics.silhouette_score (exact mode).
    """

    def __init__(self, X: np.ndarray, sample_size: int = SILHOUETTE_SAMPLE, seed: int = SILHOUETTE_SEED):
        self._X = X
        n = len(X)
        self.index = None
        if n > sample_size:
            self.index = np.sort(np.random.default_rng(seed).choice(n, sample_size, replace=False))
        self.size = n if self.index is None else sample_size
        self._distances: np.ndarray | None = None

    def score(self, labels: np.ndarray) -> float | None:
        """Mean silhouette of the sampled images under `labels` (N cluster numbers); None when
        undefined (fewer than 2 clusters among the sampled images, or as many as images)."""
        return self.scores([labels])[0]

    def scores(self, labelings: list[np.ndarray]) -> list[float | None]:
        """score() of several labellings with one pass over the distances."""
        encoded = []
        for labels in labelings:
            labels = np.asarray(labels).ravel()
            if len(labels) != len(self._X):
                raise ValueError(f"need {len(self._X)} labels, got {len(labels)}")
            if self.index is not None:
                labels = labels[self.index]
            values, codes = np.unique(labels, return_inverse=True)
            encoded.append((codes, len(values)))
        defined = [2 <= count <= self.size - 1 for _, count in encoded]
        if not any(defined):
            return [None] * len(labelings)
        strips = self._pairwise()
        offsets = np.cumsum([0] + [count for _, count in encoded])
        one_hot = np.zeros((self.size, offsets[-1]), dtype=strips[0][1].dtype)
        for (codes, _), offset in zip(encoded, offsets, strict=False):
            one_hot[np.arange(self.size), offset + codes] = 1
        # sums[i, c]: total distance of image i to cluster c's members. A strip holds the rows
        # start..start+b against every image from start on; its part right of the diagonal block
        # is also, transposed, those images' distances to the strip's rows.
        sums = np.zeros((self.size, offsets[-1]))
        for start, strip in strips:
            rows = slice(start, start + len(strip))
            sums[rows] += strip @ one_hot[start:]
            sums[rows.stop :] += strip[:, len(strip) :].T @ one_hot[rows]
        results: list[float | None] = []
        for (codes, count), offset, ok in zip(encoded, offsets, defined, strict=False):
            if not ok:
                results.append(None)
                continue
            results.append(_silhouette_from_sums(sums[:, offset : offset + count], codes, count))
        return results

    def _pairwise(self) -> list[tuple[int, np.ndarray]]:
        if self._distances is None:
            sample = self._X if self.index is None else self._X[self.index]
            dtype = np.float64 if self.size <= _FLOAT64_DISTANCES_UP_TO else np.float32
            self._distances = list(distance_strips(sample, dtype))
        return self._distances


def distance_strips(X: np.ndarray, dtype=np.float64, block: int = 1024):
    """Euclidean distances between the rows of X, the half on and above the diagonal: for each
    strip of `block` rows from `start`, (start, its distances to rows start..n-1), zero diagonal.

    The data are centred first (distances do not change, the expansion |x|^2 + |y|^2 - 2 x.y
    loses less to cancellation). The strips hold n^2 / 2 values: the other half is their mirror.
    """
    X = np.asarray(X, dtype=np.float64).reshape(len(X), -1)
    X = (X - X.mean(axis=0)).astype(dtype)
    norms = np.einsum("ij,ij->i", X, X)
    for start in range(0, len(X), block):
        rows = slice(start, min(start + block, len(X)))
        part = X[rows] @ X[start:].T
        part *= -2
        part += norms[rows, None]
        part += norms[None, start:]
        np.maximum(part, 0, out=part)
        np.sqrt(part, out=part)
        np.fill_diagonal(part, 0)  # the strip's first columns are its own rows
        yield start, part


def _silhouette_from_sums(sums: np.ndarray, codes: np.ndarray, count: int) -> float:
    sizes = np.bincount(codes, minlength=count).astype(np.float64)
    rows = np.arange(len(codes))
    own_size = sizes[codes]
    with np.errstate(divide="ignore", invalid="ignore"):
        intra = sums[rows, codes] / (own_size - 1)
        means = sums / sizes
    means[rows, codes] = np.inf
    inter = means.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = (inter - intra) / np.maximum(intra, inter)
    values[own_size <= 1] = 0.0  # a cluster of one: silhouette 0, as scikit-learn
    return float(np.mean(np.nan_to_num(values)))


def silhouette(X: np.ndarray, labels: np.ndarray, sample_size: int = SILHOUETTE_SAMPLE) -> float | None:
    """Mean silhouette (exact up to sample_size images, else on a fixed sample); None if undefined."""
    return SilhouetteSample(X, sample_size).score(labels)


def dispersion_scores(X: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """Calinski-Harabasz and Davies-Bouldin indices, as sklearn.metrics computes them.

    Two passes over the images sorted by cluster, a bounded block of rows at a time (a cluster of
    8.1M images memory-mapped must not become one float64 copy): exact integer sums for integer
    pixels (then the cluster means), then each image's distance to its cluster's mean. None when
    undefined (fewer than 2 non-empty clusters, or as many clusters as images).
    """
    X = np.asarray(X).reshape(len(X), -1)
    labels = np.asarray(labels).ravel()
    values, codes = np.unique(labels, return_inverse=True)
    n, count = len(X), len(values)
    if not 2 <= count <= n - 1:
        return {"calinski_harabasz": None, "davies_bouldin": None}
    order = np.argsort(codes, kind="stable")
    sizes = np.bincount(codes, minlength=count)
    ends = np.cumsum(sizes)
    exact = np.issubdtype(X.dtype, np.integer) or X.dtype == np.bool_
    means = np.empty((count, X.shape[1]), dtype=np.float64)
    mean_distance = np.empty(count)
    within = 0.0
    start = 0
    rows = max(1, DISPERSION_BLOCK_VALUES // max(1, X.shape[1]))
    for cluster, end in enumerate(ends):
        parts = [order[part : min(end, part + rows)] for part in range(start, end, rows)]
        total = sum(X[part].sum(axis=0, dtype=np.int64 if exact else np.float64) for part in parts)
        means[cluster] = total / (end - start)
        distance_sum = 0.0
        for part in parts:
            difference = X[part] - means[cluster]
            squared = np.einsum("ij,ij->i", difference, difference)
            within += float(squared.sum())
            distance_sum += float(np.sqrt(squared).sum())
        mean_distance[cluster] = distance_sum / (end - start)
        start = end
    overall = (means * sizes[:, None]).sum(axis=0) / n
    between = float((sizes * ((means - overall) ** 2).sum(axis=1)).sum())
    ch = 1.0 if within == 0.0 else between * (n - count) / (within * (count - 1.0))
    return {"calinski_harabasz": ch, "davies_bouldin": _davies_bouldin(means, mean_distance)}


def _davies_bouldin(means: np.ndarray, spread: np.ndarray, block: int = 1024) -> float:
    """mean over clusters of max over others of (spread_i + spread_j) / |mean_i - mean_j|.

    Computed in blocks of rows so that K x K distances are never all held at once.
    """
    count = len(means)
    norms = np.einsum("ij,ij->i", means, means)
    if np.allclose(spread, 0):
        return 0.0
    worst = np.empty(count)
    any_apart = False
    for start in range(0, count, block):
        rows = slice(start, min(start + block, count))
        squared = norms[rows, None] + norms[None, :] - 2 * means[rows] @ means.T
        gaps = np.sqrt(np.maximum(squared, 0))
        gaps[np.arange(gaps.shape[0]), np.arange(start, start + gaps.shape[0])] = 0
        any_apart = any_apart or not np.allclose(gaps, 0)
        gaps[gaps == 0] = np.inf
        worst[rows] = ((spread[rows, None] + spread[None, :]) / gaps).max(axis=1)
    return float(worst.mean()) if any_apart else 0.0


# --- across K and across repeats --------------------------------------------------------------


def knee(ks: list[int], inertias: list[float], sensitivity: float = 1.0) -> int | None:
    """The knee of a decreasing, convex inertia curve (Kneedle, Satopaa et al. 2011).

    The same answer as kneed.KneeLocator(ks, inertias, curve="convex", direction="decreasing",
    S=sensitivity) (its default offline mode, no smoothing): a few lines, so no dependency.
    None when there is no knee (fewer than 3 K, a flat or non-decreasing curve).
    """
    x = np.asarray(ks, dtype=np.float64)
    y = np.asarray(inertias, dtype=np.float64)
    order = np.argsort(x)
    x, y = x[order], y[order]
    if len(x) < 3 or not np.all(np.isfinite(y)) or np.ptp(y) == 0 or np.ptp(x) == 0:
        return None
    x_norm = (x - x.min()) / np.ptp(x)
    y_norm = (y - y.min()) / np.ptp(y)
    difference = (y_norm.max() - y_norm) - x_norm  # convex, decreasing -> a concave, increasing knee
    left, right = np.r_[difference[0], difference[:-1]], np.r_[difference[1:], difference[-1]]
    maxima = np.flatnonzero((difference >= left) & (difference >= right))
    minima = set(np.flatnonzero((difference <= left) & (difference <= right)).tolist())
    if not maxima.size:
        return None
    thresholds = difference[maxima] - sensitivity * np.abs(np.diff(x_norm).mean())
    maxima_seen, threshold, threshold_index, active = 0, 0.0, 0, True
    for i in range(maxima[0], len(x) - 1):
        if i in maxima:
            threshold, threshold_index = thresholds[maxima_seen], i
            maxima_seen += 1
            active = True
        if i in minima:
            threshold, active = 0.0, False
        if active and difference[i + 1] < threshold:
            return int(x[threshold_index])
    return None


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index between two labellings of the same images."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    _, a_codes = np.unique(a, return_inverse=True)
    table, _ = contingency(b, a_codes, int(a_codes.max()) + 1)
    return ari(table)


def stability(labelings: list[np.ndarray]) -> float | None:
    """Mean pairwise ARI between the labellings of several repeats (None for fewer than two)."""
    pairs = [
        agreement(labelings[i], labelings[j])
        for i in range(len(labelings))
        for j in range(i + 1, len(labelings))
    ]
    return float(np.mean(pairs)) if pairs else None
