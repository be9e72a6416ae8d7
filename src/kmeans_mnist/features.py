"""Feature spaces: what K-means measures distances in (raw pixels, PCA, or a UMAP embedding).

    space = parse_space("umap:10")                 # pixels | pca[:N] | umap[:N]
    features = compute_features(data.all_pixel, space, seed=0, progress=print)
    features.values                                # N x d: what the engine clusters
    features.map_xy                                # N x 2: where each image lies on the map

K-means on raw pixels is the classical baseline (MNIST NMI about 0.50); after a manifold
embedding (UMAP) the clusters follow the digits (NMI about 0.85). The pictures always stay in
pixel space: the callers show each cluster's mean image and its most typical member.

- `pixels`: the images themselves; nothing is computed and nothing changes.
- `pca:N` (default N=50): pure NumPy, the top N eigenvectors of the float64 covariance, each
  with a fixed sign (its largest loading positive), so the same images give the same basis.
  The basis is plain arrays (`PCA.mean`, `PCA.basis`): a model stores them and predict uses them.
- `umap:N` (default N=10): umap-learn (`pip install "kmeans-mnist[embed]"`), imported only here
  and only when asked. The images are first reduced to 50 PCA dimensions (UMAP's neighbour search
  is then several times faster and finds the same neighbours for digits), then embedded with
  n_neighbors=15, min_dist=0 (tight clumps suit K-means) and random_state=seed (reproducible).
  The map's 2-D layout reuses the same neighbour graph.

Embeddings are slow (minutes for 70,000 images), so `compute_features` caches them in the
user cache folder (data/cache.py), keyed on a digest of the images, the method, its parameters
and the seed: a second run, or a sweep over K, reads them back in well under a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

METHODS = ("pixels", "pca", "umap")
DEFAULT_DIMS = {"pca": 50, "umap": 10}
UMAP_PCA_DIMS = 50  # PCA before UMAP's neighbour search (see the module docstring)
UMAP_PARAMS = {"n_neighbors": 15, "min_dist": 0.0, "metric": "euclidean"}
MAP_UMAP_PARAMS = {"n_neighbors": 15, "min_dist": 0.1}  # the 2-D map: a little spread, to be seen
MAP_PCA_SAMPLE = 2000  # rows that fit the map's 2-D PCA of raw pixels (a picture, not a model)
MAP_POINTS = 20000  # images placed on the map of raw pixels: a fixed sample (readable, cheap)
INSTALL_EMBED = 'pip install "kmeans-mnist[embed]"'
FEATURES_VERSION = 1  # bump when a cached embedding changes meaning

Progress = Callable[[str], None]


class FeatureError(ValueError):
    """A feature space that cannot be used (bad text, a missing extra); str() is one line."""


@dataclass(frozen=True)
class FeatureSpace:
    """Which space K-means runs in: method "pixels", "pca" or "umap", and its dimensions."""

    method: str = "pixels"
    dims: int | None = None

    @property
    def text(self) -> str:
        """As the option is written: "pixels", "pca:50", "umap:10"."""
        return self.method if self.method == "pixels" else f"{self.method}:{self.dims}"

    @property
    def slug(self) -> str:
        """For folder names: "pca50", "umap10" ("pixels" for pixels)."""
        return self.method if self.method == "pixels" else f"{self.method}{self.dims}"

    def params(self) -> dict:
        """Everything besides the images and the seed that changes the embedding (the cache key)."""
        if self.method == "umap":
            return {"dims": self.dims, "pca_dims": UMAP_PCA_DIMS, **UMAP_PARAMS}
        return {"dims": self.dims}


PIXELS = FeatureSpace()


def parse_space(text: str) -> FeatureSpace:
    """ "pixels", "pca", "pca:30", "umap", "umap:10" -> FeatureSpace; FeatureError otherwise."""
    match = re.fullmatch(r"\s*([a-z]+)\s*(?::\s*(\d+)\s*)?", text.lower())
    if not match or match.group(1) not in METHODS:
        raise FeatureError(
            f"--features wants pixels, pca[:N] or umap[:N] (e.g. pca:50, umap:10), got {text!r}"
        )
    method, dims = match.group(1), match.group(2)
    if method == "pixels":
        if dims is not None:
            raise FeatureError(f"--features pixels takes no dimensions, got {text!r}")
        return PIXELS
    value = DEFAULT_DIMS[method] if dims is None else int(dims)
    if value < 1:
        raise FeatureError(f"--features {method}:N needs N of at least 1, got {text!r}")
    return FeatureSpace(method, value)


def check_available(space: FeatureSpace) -> None:
    """FeatureError naming the install command when the space needs umap-learn and it is missing.
    Looks for the package without importing it (the import takes seconds)."""
    if space.method != "umap":
        return
    import importlib.util

    if importlib.util.find_spec("umap") is None:
        raise FeatureError(f"--features {space.text} needs umap-learn: {INSTALL_EMBED}")


# --- PCA, in NumPy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PCA:
    """A fitted PCA: features = (pixels - mean) @ basis. mean: D float64; basis: D x n float64."""

    mean: np.ndarray
    basis: np.ndarray
    variance: np.ndarray  # n: the variance along each component, largest first

    def transform(self, pixels: np.ndarray, chunk: int = 16384) -> np.ndarray:
        """N x n float32 coordinates: pixels @ basis - mean @ basis, in float32 products (about
        1e-6 relative, ample for K-means; one pass over the pixels, no centred copy)."""
        basis32 = self.basis.astype(np.float32)
        shift = (self.mean @ self.basis).astype(np.float32)
        out = np.empty((len(pixels), self.basis.shape[1]), dtype=np.float32)
        for start in range(0, len(pixels), chunk):
            rows = slice(start, start + chunk)
            out[rows] = np.asarray(pixels[rows], dtype=np.float32) @ basis32
            out[rows] -= shift
        return out


def fit_pca(pixels: np.ndarray, n_components: int, chunk: int = 8192, dtype=np.float64) -> PCA:
    """The top n_components principal axes of the rows of `pixels` (N x D), from the covariance
    matrix accumulated chunk by chunk (exact; D x D memory) and numpy.linalg.eigh.

    Each axis's sign is fixed so that its largest-magnitude loading is positive: eigh may return
    either sign, and a stored model must not depend on that.
    """
    n, d = pixels.shape
    if n < 2:
        raise FeatureError(f"PCA needs at least 2 images, got {n}")
    n_components = min(n_components, d, n - 1)
    mean = np.zeros(d, dtype=np.float64)
    for start in range(0, n, chunk):
        mean += np.asarray(pixels[start : start + chunk], dtype=np.float64).sum(axis=0)
    mean /= n
    scatter = np.zeros((d, d), dtype=np.float64)
    for start in range(0, n, chunk):
        block = np.asarray(pixels[start : start + chunk], dtype=dtype) - mean.astype(dtype)
        scatter += (block.T @ block).astype(np.float64)
    values, vectors = np.linalg.eigh(scatter / (n - 1))
    order = np.argsort(values)[::-1][:n_components]
    basis = vectors[:, order]
    signs = np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(basis.shape[1])])
    basis *= np.where(signs == 0, 1.0, signs)
    return PCA(mean, np.ascontiguousarray(basis), np.clip(values[order], 0, None))


# --- the features of a dataset ---------------------------------------------------------------


@dataclass
class Features:
    """The points K-means clusters, and how they were made.

    values: N x d (the uint8 pixels themselves for `pixels`, float32 otherwise).
    pca: the fitted PCA of a `pca` space (stored in model.npz, so predict can use it).
    map_xy: M x 2 float32, the 2-D layout of the map (UMAP's own 2-D for `umap`, else PCA's
    first two components); map_method says which. map_index: which images those M rows are
    (None: all N; the map of raw pixels places a fixed sample of 20,000).
    seconds: how long computing them took (0 when read from the cache); cached: whether they were.
    """

    space: FeatureSpace
    values: np.ndarray
    map_xy: np.ndarray
    map_method: str
    pca: PCA | None = None
    seconds: float = 0.0
    cached: bool = False
    seed: int = 0
    map_index: np.ndarray | None = None

    def centers_as_pixels(self, centers: np.ndarray, pixels: np.ndarray) -> np.ndarray:
        """Centres of this space shown as pixel rows (K x D float64): PCA's reconstruction
        (mean + centre @ basis.T), else the image nearest each centre (UMAP has no inverse)."""
        centers = np.asarray(centers, dtype=np.float64)
        if self.space.method == "pixels":
            return centers
        if self.pca is not None:
            return self.pca.mean + centers @ self.pca.basis.T
        return np.asarray(pixels[nearest_points(self.values, centers)], dtype=np.float64)

    def record(self) -> dict:
        """What a result file says about the space: {"features": "umap:10", ...}."""
        info = {"features": self.space.text, "map": self.map_method}
        if self.space.method != "pixels":
            info["feature_params"] = {**self.space.params(), "seed": self.seed}
        return info


def nearest_points(points: np.ndarray, centers: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """For each centre, the index of the point nearest it (K indices)."""
    centers32 = np.asarray(centers, dtype=np.float32)
    best = np.full(len(centers32), np.inf)
    where = np.zeros(len(centers32), dtype=np.int64)
    for start in range(0, len(points), chunk):
        block = np.asarray(points[start : start + chunk], dtype=np.float32)
        squared = (
            np.einsum("ij,ij->i", block, block)[None, :]
            - 2 * centers32 @ block.T
            + np.einsum("ij,ij->i", centers32, centers32)[:, None]
        )
        column = squared.argmin(axis=1)
        value = squared[np.arange(len(centers32)), column]
        better = value < best
        best[better], where[better] = value[better], start + column[better]
    return where


def cluster_means(pixels: np.ndarray, clusters: np.ndarray, k: int, chunk: int = 65536) -> np.ndarray:
    """The mean row of each cluster's members (K x D float64; zeros for an empty cluster)."""
    sums = np.zeros((k, pixels.shape[1]), dtype=np.float64)
    for start in range(0, len(pixels), chunk):
        labels = np.asarray(clusters[start : start + chunk])
        order = np.argsort(labels, kind="stable")
        present, first = np.unique(labels[order], return_index=True)
        block = np.asarray(pixels[start : start + chunk])[order]
        sums[present] += np.add.reduceat(block, first, axis=0, dtype=np.float64)
    counts = np.bincount(clusters, minlength=k).astype(np.float64)
    return sums / np.maximum(counts, 1)[:, None]


def images_digest(pixels: np.ndarray) -> str:
    """blake2b of the images' shape and bytes: the cache key of their embeddings."""
    digest = hashlib.blake2b(repr((pixels.shape, pixels.dtype.str)).encode(), digest_size=16)
    digest.update(np.ascontiguousarray(pixels).data)
    return digest.hexdigest()


def compute_features(
    pixels: np.ndarray,
    space: FeatureSpace = PIXELS,
    *,
    seed: int = 0,
    progress: Progress | None = None,
    cache_dir=None,
    use_cache: bool = True,
) -> Features:
    """The features of `pixels` (N x D) in `space`, from the cache when they were computed before.

    progress(text) is told what is being done while an embedding is computed (it is the long
    part). FeatureError when umap-learn is needed and missing.
    """
    check_available(space)
    say = progress or (lambda text: None)
    started = time.perf_counter()
    if space.method == "pixels":
        # not cached: the map's sampled PCA costs about what hashing the images would
        index = _map_sample(len(pixels))
        return Features(space, pixels, _map_pca(pixels, index), "pca", seed=seed, map_index=index)
    if space.method == "pca":
        n, d = pixels.shape
        if space.dims > min(d, n - 1):  # fit_pca would give fewer axes than the records say
            most, why = (d, f"images of {d:,} pixels") if d <= n - 1 else (n - 1, f"{n:,} images")
            raise FeatureError(
                f"--features {space.text} asks for {space.dims:,} principal axes, but {why} give at most "
                f"{most:,}: use --features pca:{max(most, 1)} or fewer"
            )

        def compute_pca() -> dict[str, np.ndarray]:
            say(f"PCA to {space.dims} dimensions")
            pca = fit_pca(pixels, space.dims)
            return {"mean": pca.mean, "basis": pca.basis, "variance": pca.variance}

        arrays, hit = _cached_hit(pixels, "pca", space.params(), 0, compute_pca, cache_dir, use_cache)
        pca = PCA(arrays["mean"], arrays["basis"], arrays["variance"])
        values = pca.transform(pixels)
        map_xy = np.ascontiguousarray(values[:, :2]) if values.shape[1] >= 2 else _map_pca(pixels, None)
        return Features(
            space, values, map_xy, "pca", pca=pca, seconds=time.perf_counter() - started, cached=hit, seed=0
        )
    arrays, hit = _cached_hit(
        pixels,
        "umap",
        space.params(),
        seed,
        lambda: embed_umap(pixels, space.dims, seed, say),
        cache_dir,
        use_cache,
    )
    return Features(
        space,
        arrays["values"],
        arrays["map_xy"],
        "umap",
        seconds=time.perf_counter() - started,
        cached=hit,
        seed=seed,
    )


def _cached_hit(pixels, kind, params, seed, compute, cache_dir, use_cache):
    """(arrays, whether they came from the cache)."""
    if not use_cache:
        return compute(), False
    from .data.cache import cached_by_key

    computed = []

    def compute_once():
        computed.append(True)
        return compute()

    key = f"{images_digest(pixels)}|{kind}|{sorted(params.items())}|seed={seed}|v{FEATURES_VERSION}"
    arrays = cached_by_key(f"features-{kind}", key, compute_once, cache_dir)
    return arrays, not computed


def _map_sample(n: int) -> np.ndarray | None:
    """The fixed sample of images the map of raw pixels places (None: all of them)."""
    if n <= MAP_POINTS:
        return None
    return np.sort(np.random.default_rng(0).choice(n, MAP_POINTS, replace=False))


def _map_pca(pixels: np.ndarray, index: np.ndarray | None) -> np.ndarray:
    """The first two principal components of the images `index` (None: all), for the map (a
    picture, not a model): fitted on a fixed sample of 2,000 by randomized subspace iteration (a
    few thin products, where the covariance's full eigendecomposition takes seconds on a busy
    machine)."""
    sample = pixels
    if len(pixels) > MAP_PCA_SAMPLE:
        rows = np.sort(np.random.default_rng(0).choice(len(pixels), MAP_PCA_SAMPLE, replace=False))
        sample = pixels[rows]
    if len(sample) < 3:
        return np.zeros((len(pixels) if index is None else len(index), 2), dtype=np.float32)
    from threadpoolctl import threadpool_limits

    # thin products: BLAS threads only wait for each other
    with threadpool_limits(1, user_api="blas"):
        return _map_pca_fit(sample, pixels, index)


def _map_pca_fit(sample: np.ndarray, pixels: np.ndarray, index: np.ndarray | None) -> np.ndarray:
    centred = np.asarray(sample, dtype=np.float32)
    mean = centred.mean(axis=0, dtype=np.float64)
    centred -= mean.astype(np.float32)
    basis = top_axes(centred, 2)
    return PCA(mean, basis, np.zeros(basis.shape[1])).transform(pixels if index is None else pixels[index])


def top_axes(centred: np.ndarray, count: int, iterations: int = 5, seed: int = 0) -> np.ndarray:
    """D x count: the leading principal axes of centred rows, by randomized subspace iteration
    (Halko et al. 2011) with a fixed start and the fixed sign of fit_pca. Pads with zero axes
    when the rows have fewer dimensions."""
    d = centred.shape[1]
    width = min(d, count + 8)
    subspace = np.random.default_rng(seed).standard_normal((d, width)).astype(centred.dtype)
    for _ in range(iterations):
        subspace, _ = np.linalg.qr(centred.T @ (centred @ subspace))
    small = (centred @ subspace).astype(np.float64)
    _, _, vt = np.linalg.svd(small, full_matrices=False)
    axes = subspace.astype(np.float64) @ vt[:count].T
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    axes *= np.where(signs == 0, 1.0, signs)
    if axes.shape[1] < count:
        axes = np.pad(axes, ((0, 0), (0, count - axes.shape[1])))
    return axes


# --- UMAP --------------------------------------------------------------------------------------


def embed_umap(
    pixels: np.ndarray, dims: int, seed: int = 0, progress: Progress | None = None, with_map: bool = True
) -> dict[str, np.ndarray]:
    """{"values": N x dims, "map_xy": N x 2} (float32): PCA to 50, then UMAP (module docstring).

    The 2-D map reuses the neighbour graph of the first embedding (precomputed_knn), so it costs
    only its layout; with_map=False leaves it out (then no "map_xy").
    """
    say = progress or (lambda text: None)
    if len(pixels) < 20:
        raise FeatureError(f"UMAP needs at least 20 images, got {len(pixels)}")
    say("PCA to 50 dimensions")
    reduced = fit_pca(pixels, UMAP_PCA_DIMS).transform(pixels) if pixels.shape[1] > UMAP_PCA_DIMS else pixels
    reduced = np.asarray(reduced, dtype=np.float32)
    say("loading umap-learn")
    with _quiet_warnings():
        import umap

    stream = _UmapProgress(say)
    with _quiet_warnings(), contextlib.redirect_stdout(stream):
        reducer = umap.UMAP(
            n_components=dims,
            random_state=seed,
            verbose=True,
            tqdm_kwds={"file": stream, "mininterval": 0.5},
            **UMAP_PARAMS,
        )
        stream.stage = f"UMAP to {dims} dimensions"
        values = reducer.fit_transform(reduced)
        if dims == 2 or not with_map:
            map_xy = values
        else:
            stream.stage = "UMAP to 2 dimensions for the map"
            # below 4,096 images umap-learn takes exact distances and keeps no graph: recomputed
            knn = getattr(reducer, "_knn_indices", None)
            knn = (None, None, None) if knn is None else (knn, reducer._knn_dists, None)
            map_xy = umap.UMAP(
                n_components=2,
                random_state=seed,
                precomputed_knn=knn,
                verbose=True,
                tqdm_kwds={"file": stream, "mininterval": 0.5},
                **MAP_UMAP_PARAMS,
            ).fit_transform(reduced)
    arrays = {"values": np.ascontiguousarray(values, dtype=np.float32)}
    if with_map:
        arrays["map_xy"] = np.ascontiguousarray(map_xy, dtype=np.float32)
    return arrays


@contextlib.contextmanager
def _quiet_warnings():
    """umap-learn warns that random_state turns off its threads (which is wanted: reproducible)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


class _UmapProgress(io.TextIOBase):
    """umap-learn's verbose lines and epoch bar, turned into short progress texts."""

    def __init__(self, say: Progress):
        self.say, self.stage = say, "UMAP"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        epochs = re.findall(r"(\d+)/(\d+) \[", text)
        if epochs:
            done, total = epochs[-1]
            self.say(f"{self.stage}: layout, epoch {done}/{total}")
        else:  # only umap's own timestamped steps ("Finding Nearest Neighbors"), not its repr
            for line in text.splitlines():
                step = re.match(r"^\w{3} \w{3} +\d+ [\d:]+ \d{4} (.+)", line.strip())
                if step:
                    self.say(f"{self.stage}: {step.group(1)[:60].lower()}")
        return len(text)
