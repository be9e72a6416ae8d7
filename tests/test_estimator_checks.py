"""scikit-learn's own estimator checks on KMeans (check_estimator, one test per check)."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from kmeans_mnist import KMeans

# At most two deliberate differences, each documented in docs/api.md.
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data": (
        "weights and repeated rows give the same objective, but k-means++ draws from a different "
        "number of rows, so the random start differs (scikit-learn's own KMeans lists this check too)"
    ),
}


@parametrize_with_checks(
    [KMeans(n_clusters=3, random_state=0)], expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS
)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
