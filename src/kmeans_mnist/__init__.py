"""kmeans-mnist: fast, trustworthy K-means for image datasets on one laptop.

    from kmeans_mnist import KMeans, load_dataset
    data = load_dataset("mnist")
    model = KMeans(10, random_state=0).fit(data.all_pixel)

Names are imported lazily so that `python -m kmeans_mnist --help` stays fast (KMeans imports
scikit-learn; the command line never does).
"""

__version__ = "0.2.0"
__all__ = ["Dataset", "DatasetError", "KMeans", "ModelError", "load_dataset", "load_model"]

_HOMES = {
    "KMeans": "engine.estimator",
    "Dataset": "data.datasets",
    "DatasetError": "data.errors",
    "load_dataset": "data.datasets",
    "load_model": "results.model",
    "ModelError": "results.model",
}


def __getattr__(name: str):
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module 'kmeans_mnist' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
