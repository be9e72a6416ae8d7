"""Initial centres on a Dask cluster: random rows, greedy k-means++ and k-means||, chunk by chunk.

The client draws, the workers compute: each worker's block (chunks.py) keeps `closest`, its
points' squared distance to the nearest centre chosen so far, and counts those centres in
`n_chosen`; it answers for each of its chunks (potentials, draws, trials), so the client draws
chunk by chunk in X's order, whichever worker holds which chunk. A call asked for n_chosen
centres brings `closest` there by adopting last round's winning candidate (`adopt`), or rebuilds
it from `history` (all centres chosen so far, sent only to a call that answered LOST, after its
worker was lost). A rebuilt `closest` is
the same up to float32 rounding: the seeding stays a valid one, though not bit for bit the
undisturbed one.

`random_rows` picks the rows the in-memory engine picks for the same random state; k-means++ and
k-means|| draw chunk by chunk, so they start as well as in memory, not from the same centres.
"""

from __future__ import annotations

import math

import numpy as np

from .. import lloyd as engine
from .chunks import LOST, Block, Chunks, per_chunk_sums

# ---------------------------------------------------------------------- tasks (on the workers)


def _rows(block: Block, picked) -> list[np.ndarray]:
    """Rows of the chunks asked about (each: rows within that chunk), prepared (float32, centred
    and scaled as the engine reads them)."""
    return [block.data.block(block.edges[place] + np.asarray(indices)) for place, (indices,) in picked]


def _seed_closest(block: Block, n_chosen: int, adopt: int | None, history: np.ndarray | None) -> bool:
    if block.n_chosen == n_chosen and block.closest is not None:
        return True
    if block.n_chosen == n_chosen - 1 and block.trials is not None and adopt is not None:
        block.closest, block.trials = block.trials[:, adopt].copy(), None
    elif history is not None:
        block.n_chosen = -1
        d2 = block.data.sq_distances(history[:n_chosen].astype(np.float32), block.pool)
        block.closest, block.trials = d2.min(axis=1), None
    else:
        return False
    block.n_chosen = n_chosen
    return True


def _answer(block: Block, picked, per_chunk: np.ndarray) -> list:
    """The per-chunk values (one row per chunk of the block) of the chunks asked about."""
    return [per_chunk[place] for place, _ in picked]


def _seed_potential(block: Block, picked, n_chosen: int, *, adopt=None, history=None):
    """Each chunk's potential: the sum of `closest` over the first n_chosen centres."""
    if not _seed_closest(block, n_chosen, adopt, history):
        return LOST
    return _answer(block, picked, per_chunk_sums(block.closest, block.edges))


def _seed_pick(block: Block, picked, n_chosen: int, *, adopt=None, history=None):
    """Rows of each chunk asked about drawn with probability proportional to `closest` (D^2);
    its draws lie in 0..its potential."""
    if not _seed_closest(block, n_chosen, adopt, history):
        return LOST
    rows = []
    for place, (draws,) in picked:
        cumulative = np.cumsum(block.closest[block.rows_of(place)], dtype=np.float64)
        chosen = np.minimum(np.searchsorted(cumulative, draws), len(cumulative) - 1)
        rows.append(block.data.block(block.edges[place] + chosen))
    return rows


def _seed_try(block: Block, picked, n_chosen: int, candidates: np.ndarray, *, adopt=None, history=None):
    """Each chunk's potential with each candidate added (kept, for the winner to be adopted)."""
    if not _seed_closest(block, n_chosen, adopt, history):
        return LOST
    d2 = block.data.sq_distances(candidates, block.pool)
    np.minimum(d2, block.closest[:, None], out=d2)
    block.trials = d2
    return _answer(block, picked, per_chunk_sums(d2, block.edges))


def _seed_sample(block: Block, picked, n_chosen: int, factor: float, potential: float, *, history=None):
    """k-means||: rows of each chunk drawn independently with probability factor x closest /
    potential, from the chunk's own stream (its seed)."""
    if not _seed_closest(block, n_chosen, None, history):
        return LOST
    rows = []
    for place, (seed,) in picked:
        closest = block.closest[block.rows_of(place)]
        draws = np.random.default_rng(seed).uniform(size=len(closest)) * potential
        rows.append(block.data.block(block.edges[place] + np.flatnonzero(draws < factor * closest)))
    return rows


def _seed_fold(block: Block, picked, n_chosen: int, new: np.ndarray, *, history=None):
    """k-means||: the new candidates join the centres of `closest`; the block's new potential."""
    if not _seed_closest(block, n_chosen, None, history):
        return LOST
    if len(new):
        nearest = block.data.sq_distances(new, block.pool).min(axis=1)
        np.minimum(block.closest, nearest, out=block.closest)
    block.n_chosen = n_chosen + len(new)
    return float(block.closest.sum(dtype=np.float64))


def _seed_counts(block: Block, picked, candidates: np.ndarray) -> np.ndarray:
    """k-means||: how many of the block's points have each candidate as their nearest."""
    data = block.data
    c32 = candidates.astype(np.float32)
    cn2 = engine.sq_norms(c32)
    counts = np.zeros(len(candidates), dtype=np.int64)
    for part in engine.chunks(data.shape[0]):
        labels = engine.nearest(data.block(part), data.xn2[part], candidates, c32, cn2)[0]
        counts += np.bincount(labels, minlength=len(candidates))
    return counts


# ---------------------------------------------------------------------- the client's side


def _fetch(chunks: Chunks, indices: np.ndarray) -> np.ndarray:
    """Prepared rows of X at `indices` (of all of X), in that order, from the chunks holding them."""
    owner = np.searchsorted(chunks.starts, indices, side="right") - 1
    parts = np.unique(owner)
    answers = chunks.each(
        _rows, only=list(parts), each=[(indices[owner == p] - chunks.starts[p],) for p in parts]
    )
    rows = np.empty((len(indices), answers[0].shape[1]), dtype=np.float32)
    for part, values in zip(parts, answers, strict=True):
        rows[owner == part] = values
    return rows


def random_rows(chunks: Chunks, k: int, rng: np.random.Generator) -> np.ndarray:
    """seeding.random_rows over chunks: K rows distinct in content, the same rows for the same
    random state (fetched in batches along the same permutation)."""
    order = rng.permutation(chunks.n)
    chosen: dict[bytes, np.ndarray] = {}
    batch = max(4 * k, 256)
    for start in range(0, chunks.n, batch):
        for values in _fetch(chunks, order[start : start + batch]):
            chosen.setdefault(values.tobytes(), values)
            if len(chosen) == k:
                return np.array(list(chosen.values()), dtype=np.float64)
    # Fewer distinct rows than k: repeat some; the surplus clusters stay empty, never NaN.
    rows = list(chosen.values())
    return np.array([rows[i % len(rows)] for i in range(k)], dtype=np.float64)


class _Seeding:
    """Seeding calls on the chunks: a LOST answer is asked again with the centres chosen so far."""

    def __init__(self, chunks: Chunks, history: np.ndarray):
        self.chunks, self.history = chunks, history

    def each(self, fn, *args, only=None, each=None, **kwargs) -> list:
        """fn's answer for each chunk (as Chunks.each)."""
        rebuild = {"history": self.history}
        return self.chunks.each(fn, *args, only=only, each=each, rebuild=rebuild, **kwargs)

    def units(self, fn, *args, **kwargs) -> list:
        """fn's answer for each unit (as Chunks.units)."""
        return self.chunks.units(fn, *args, rebuild={"history": self.history}, **kwargs)

    def draw(self, potentials: np.ndarray, draws: np.ndarray, n_chosen: int, adopt: int | None) -> np.ndarray:
        """Rows drawn by D^2: each draw (in 0..total potential) is taken by the chunk whose share holds it."""
        ends = np.cumsum(potentials)
        owner = np.minimum(np.searchsorted(ends, draws), len(ends) - 1)
        parts = np.unique(owner)
        each = [(draws[owner == p] - (ends[p] - potentials[p]),) for p in parts]
        answers = self.each(_seed_pick, n_chosen, only=list(parts), each=each, adopt=adopt)
        rows = np.empty((len(draws), self.history.shape[1]), dtype=np.float32)
        for part, values in zip(parts, answers, strict=True):
            rows[owner == part] = values
        return rows


def kmeans_plusplus(chunks: Chunks, k: int, rng: np.random.Generator, chosen) -> np.ndarray:
    """Greedy k-means++ (seeding.kmeans_plusplus) over chunks: each new centre is the best of
    2 + ln K candidates drawn by D^2. Each chunk keeps its points' distance to the nearest centre;
    per centre, the chunks owning the draws send those rows, then all chunks try them."""
    n_trials = 2 + int(math.log(k))
    centers = np.empty((k, len(chunks.prep[0])), dtype=np.float64)
    centers[0] = _fetch(chunks, rng.integers(chunks.n, size=1))[0]
    if chosen is not None:
        chosen(1)
    seeding = _Seeding(chunks, centers)
    potentials = np.array(seeding.each(_seed_potential, 1))
    adopt = None
    for c in range(1, k):
        draws = rng.uniform(size=n_trials) * potentials.sum()
        candidates = seeding.draw(potentials, draws, c, adopt)
        tried = np.array(seeding.each(_seed_try, c, candidates, adopt=adopt))  # chunks x candidates
        adopt = int(tried.sum(axis=0).argmin())
        potentials = tried[:, adopt]
        centers[c] = candidates[adopt]
        if chosen is not None:
            chosen(c + 1)
    return centers


def kmeans_parallel(chunks: Chunks, k: int, rng: np.random.Generator, rounds: int = 5) -> np.ndarray:
    """k-means|| (Bahmani et al., 2012) over chunks: `rounds` rounds in which every point joins
    the candidates with probability 2K x its D^2 / the potential (each chunk draws from its own
    stream, seeded by the client's generator), candidates weighted by how many points are nearest
    to them, reduced to K by weighted greedy k-means++ here (there are only about 10K of them)."""
    candidates = _fetch(chunks, rng.integers(chunks.n, size=1))
    seeding = _Seeding(chunks, candidates)
    potential = float(np.sum(seeding.each(_seed_potential, 1)))
    for _ in range(rounds):
        if potential == 0:
            break
        streams = [(int(seed),) for seed in rng.integers(2**63, size=len(chunks.sizes))]
        new = np.concatenate(seeding.each(_seed_sample, len(candidates), 2.0 * k, potential, each=streams))
        potential = float(np.sum(seeding.units(_seed_fold, len(candidates), new)))
        candidates = seeding.history = np.concatenate([candidates, new])
    weights = np.sum(chunks.units(_seed_counts, candidates.astype(np.float64)), axis=0)
    return _weighted_plusplus(candidates.astype(np.float64), weights.astype(np.float64), k, rng)


def _weighted_plusplus(
    points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Greedy k-means++ on a few weighted points (k-means||'s reduction), in float64."""
    if len(points) <= k:  # too few candidates (few distinct points): repeat some
        return points[np.arange(k) % len(points)]
    n_trials = 2 + int(math.log(k))
    norms = engine.sq_norms(points)

    def sq_distances(to: np.ndarray) -> np.ndarray:
        return np.maximum(norms[:, None] - 2 * points @ to.T + engine.sq_norms(to)[None, :], 0.0)

    centers = [points[rng.choice(len(points), p=weights / weights.sum())]]
    closest = sq_distances(centers[0][None])[:, 0]
    for _ in range(1, k):
        draws = rng.uniform(size=n_trials) * (weights @ closest)
        picks = np.minimum(np.searchsorted(np.cumsum(weights * closest), draws), len(points) - 1)
        trial = np.minimum(sq_distances(points[picks]), closest[:, None])
        best = int((weights @ trial).argmin())
        centers.append(points[picks[best]])
        closest = trial[:, best]
    return np.array(centers)
