"""kmeans-mnist: fast, trustworthy K-means for image datasets on one laptop.

    from kmeans_mnist import KMeans, load_dataset
    data = load_dataset("mnist")
    model = KMeans(10, random_state=0).fit(data.all_pixel)

Names are imported lazily so that `python -m kmeans_mnist --help` stays fast.
"""

__version__ = "0.1.0"
__all__ = ["Dataset", "DatasetError", "KMeans", "load_dataset"]


def __getattr__(name: str):
    if name == "KMeans":
        from .kmeans import KMeans

        return KMeans
    if name in ("Dataset", "DatasetError", "load_dataset"):
        from . import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module 'kmeans_mnist' has no attribute {name!r}")
