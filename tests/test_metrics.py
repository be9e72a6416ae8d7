"""Scores from the contingency table agree with scikit-learn and with brute force."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from kmeans_mnist.results.metrics import accuracy, ari, contingency, evaluate, nmi, purity

TOLERANCE = 1e-10


def brute_force_accuracy(labels: np.ndarray, clusters: np.ndarray, n_clusters: int) -> float:
    """Try every one-to-one matching of clusters to classes; keep the best."""
    classes = np.unique(labels)
    best = 0
    if n_clusters >= len(classes):
        for chosen in itertools.permutations(range(n_clusters), len(classes)):
            best = max(
                best,
                sum(np.sum((clusters == k) & (labels == c)) for k, c in zip(chosen, classes, strict=True)),
            )
    else:
        for chosen in itertools.permutations(classes, n_clusters):
            best = max(best, sum(np.sum((clusters == k) & (labels == c)) for k, c in enumerate(chosen)))
    return best / len(labels)


def hand_purity(labels: np.ndarray, clusters: np.ndarray) -> float:
    majority = 0
    for k in np.unique(clusters):
        _, counts = np.unique(labels[clusters == k], return_counts=True)
        majority += counts.max()
    return majority / len(labels)


def check_against_references(labels: np.ndarray, clusters: np.ndarray, n_clusters: int) -> None:
    scores, table, classes = evaluate(labels, clusters, n_clusters)
    assert classes.tolist() == np.unique(labels).tolist()
    assert table.shape == (n_clusters, len(classes))
    assert table.sum() == len(labels)
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters), abs=TOLERANCE)
    assert scores["ari"] == pytest.approx(adjusted_rand_score(labels, clusters), abs=TOLERANCE)
    assert scores["purity"] == pytest.approx(hand_purity(labels, clusters), abs=TOLERANCE)
    assert scores["accuracy"] == pytest.approx(
        brute_force_accuracy(labels, clusters, n_clusters), abs=TOLERANCE
    )


def random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    n = int(rng.integers(1, 40))
    n_clusters = int(rng.integers(1, 6))
    n_classes = int(rng.integers(1, 6))
    label_values = rng.choice(np.arange(-3, 20), size=n_classes, replace=False)
    labels = rng.choice(label_values, size=n)
    clusters = rng.integers(0, n_clusters, size=n)  # some clusters often stay empty
    return labels, clusters, n_clusters


@pytest.mark.parametrize("seed", range(300))
def test_random_labelings_match_references(seed):
    labels, clusters, n_clusters = random_case(np.random.default_rng(seed))
    check_against_references(labels, clusters, n_clusters)


def test_clusters_tied_to_labels_match_references():
    """Mostly-agreeing labelings, where the scores are far from zero."""
    rng = np.random.default_rng(1)
    for _ in range(100):
        n_classes = int(rng.integers(2, 6))
        labels = rng.integers(0, n_classes, size=int(rng.integers(5, 60)))
        clusters = np.where(rng.random(labels.size) < 0.8, labels, rng.integers(0, n_classes, labels.size))
        check_against_references(labels, clusters, n_classes)


@pytest.mark.parametrize(
    ("labels", "clusters", "n_clusters"),
    [
        ([0, 0, 1, 1, 2, 2], [2, 2, 0, 0, 1, 1], 3),  # perfect agreement, renamed
        ([0, 0, 1, 1, 2, 2], [0, 0, 1, 1, 2, 2], 6),  # perfect, with empty clusters 3..5
        ([5, 5, 5, 5], [0, 0, 0, 0], 1),  # one class, one cluster
        ([5, 5, 5, 5], [0, 1, 2, 3], 4),  # one class split into singletons
        ([1, 2, 3, 4], [0, 0, 0, 0], 1),  # K == 1
        ([1, 2, 3, 4], [0, 1, 2, 3], 4),  # all singletons on both sides
        ([0, 0, 1, 1], [0, 1, 0, 1], 2),  # independent: NMI 0, ARI negative
        ([7], [0], 3),  # a single image
    ],
)
def test_special_cases_match_references(labels, clusters, n_clusters):
    check_against_references(np.array(labels), np.array(clusters), n_clusters)


def test_perfect_agreement_scores_one():
    labels = np.repeat(np.arange(4), 5)
    scores, _, _ = evaluate(labels, (labels + 1) % 4, 4)
    assert scores == pytest.approx({"purity": 1.0, "accuracy": 1.0, "nmi": 1.0, "ari": 1.0}, abs=TOLERANCE)


def test_contingency_rows_are_clusters_and_columns_sorted_classes():
    table, classes = contingency(np.array([9, 3, 3, 9, 5]), np.array([0, 0, 2, 2, 2]), 4)
    assert classes.tolist() == [3, 5, 9]
    assert table.dtype == np.int64
    assert table.tolist() == [[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 0, 0]]


def test_more_clusters_than_classes_counts_unmatched_as_wrong():
    table, _ = contingency(np.array([0, 0, 0, 0, 1, 1]), np.array([0, 0, 1, 1, 2, 2]), 3)
    assert accuracy(table) == pytest.approx(4 / 6)
    assert purity(table) == 1.0


def test_fewer_clusters_than_classes_counts_unmatched_as_wrong():
    table, _ = contingency(np.array([0, 0, 1, 1, 2, 2]), np.array([0, 0, 0, 0, 1, 1]), 2)
    assert accuracy(table) == pytest.approx(4 / 6)
    assert purity(table) == pytest.approx(4 / 6)


def test_large_input_is_fast_and_exact():
    """70k images: ARI needs exact integer pair counts (int64 products would overflow)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=70_000)
    clusters = np.where(rng.random(labels.size) < 0.7, labels, rng.integers(0, 10, labels.size))
    scores, table, _ = evaluate(labels, clusters, 10)
    assert scores["ari"] == pytest.approx(adjusted_rand_score(labels, clusters), abs=TOLERANCE)
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(labels, clusters), abs=TOLERANCE)
    assert ari(table) == scores["ari"] and nmi(table) == scores["nmi"]


@pytest.mark.parametrize(
    ("labels", "clusters", "n_clusters"),
    [([], [], 2), ([0, 1], [0], 2), ([0, 1], [0, 2], 2), ([0, 1], [-1, 0], 2)],
)
def test_contingency_rejects_bad_input(labels, clusters, n_clusters):
    with pytest.raises(ValueError):
        contingency(np.array(labels, dtype=np.int64), np.array(clusters, dtype=np.int64), n_clusters)
