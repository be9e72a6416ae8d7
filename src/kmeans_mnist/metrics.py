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
