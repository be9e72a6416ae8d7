"""The Dask engine: the in-memory engine's answers on a Dask cluster, lazy predictions, lost workers.

Skipped when dask or distributed is not installed (`pip install -e ".[dask]"`).
"""

import itertools
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

da = pytest.importorskip(
    "dask.array", reason='the Dask tests need the dask extra: pip install -e ".[test,dask]"'
)
distributed = pytest.importorskip(
    "distributed", reason='the Dask tests need the dask extra: pip install -e ".[test,dask]"'
)

from kmeans_mnist.engine import lloyd as engine  # noqa: E402
from kmeans_mnist.engine.dask import fit as dask_engine  # noqa: E402
from test_kmeans import mnist_like  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """Two in-process workers of one thread: a real scheduler and workers, quick to start."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def digits(request):
    """4,000 real MNIST images when ../shared is there, synthetic ones otherwise."""
    from conftest import have_shared

    if have_shared():
        return request.getfixturevalue("mnist_pixels")[:4000]
    return mnist_like(4000, seed=7)


def same_fit(got, ref) -> None:
    """The Dask fit gave the in-memory engine's answer: labels, iterations, inertia, centres."""
    assert np.array_equal(np.asarray(got.labels_), ref.labels_)
    assert got.n_iter_ == ref.n_iter_ and got.converged_ == ref.converged_
    assert got.n_empty_reseeds_ == ref.n_empty_reseeds_
    assert got.inertia_ == pytest.approx(ref.inertia_, rel=1e-9)
    np.testing.assert_allclose(got.cluster_centers_, ref.cluster_centers_, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("chunks", [2000, (1000, 1000, 123, 1877)])
def test_same_answers_as_in_memory_from_the_same_start(client, digits, chunks):
    init = digits[np.random.default_rng(0).choice(len(digits), 10, replace=False)]
    ref = engine.fit(digits, 10, init=init)
    X = da.from_array(digits, chunks=(chunks, -1))
    seen = []
    got = dask_engine.fit(X, 10, init=init, callback=seen.append)
    assert isinstance(got.labels_, da.Array)
    same_fit(got, ref)
    assert [info.iteration for info in seen] == list(range(1, ref.n_iter_ + 1))


def test_iterations_reach_the_workers_without_a_task_each(client):
    """Per iteration the client calls each worker's actor directly: the scheduler sees the same
    number of tasks for 2 iterations as for 12 (setup, actors and labels only)."""
    pixels = np.random.default_rng(0).integers(28, 229, size=(2000, 784)).astype(np.uint8)  # slow to settle
    X = da.from_array(pixels, chunks=(500, -1))
    init = pixels[:6]
    counts = []
    for max_iter in (2, 12):
        with distributed.get_task_stream(client) as stream:
            got = dask_engine.fit(X, 6, init=init, tol=0, max_iter=max_iter)
        assert got.n_iter_ == max_iter
        counts.append(len(stream.data))
    assert counts[0] == counts[1] and counts[0] < 30


def scattered(client, X: np.ndarray, parts: int):
    """X sent to the workers in `parts` row chunks dealt round-robin (each worker's chunks are
    not next to each other in X), as a dask array over those futures."""
    edges = np.linspace(0, len(X), parts + 1).astype(int)
    futures = client.scatter([X[a:z] for a, z in itertools.pairwise(edges)], hash=False)
    dealt = da.concatenate(
        [
            da.from_delayed(future, shape=(z - a, X.shape[1]), dtype=X.dtype)
            for future, (a, z) in zip(futures, itertools.pairwise(edges), strict=True)
        ]
    ).persist()
    distributed.wait(dealt)
    return dealt


def test_many_small_chunks_cost_one_call_per_worker_per_iteration(client, digits, monkeypatch):
    """100 chunks of 40 rows, dealt round-robin to the two workers: each worker joins its 50 into
    one block, every assignment is one actor call per worker, and the answers (an emptied cluster
    re-seeded from the farthest point of X included) are the in-memory engine's."""
    from kmeans_mnist.engine.dask import chunks as dask_chunks

    calls = []
    run = dask_chunks.Host.run

    async def counted(self, message: bytes) -> bytes:
        fn, _, args, _, _ = pickle.loads(message)
        calls.append((fn.__name__, self.key, args[1] if fn.__name__ == "_step" else None))
        return await run(self, message)

    monkeypatch.setattr(dask_chunks.Host, "run", counted)  # the workers run in this process
    X = scattered(client, digits, 100)
    assert len({address for holders in client.who_has(X).values() for address in holders}) == 2
    init = np.concatenate([digits[:9], np.full((1, digits.shape[1]), 255, dtype=digits.dtype)])
    ref = engine.fit(digits, 10, init=init)
    assert ref.n_empty_reseeds_ >= 1
    blocks = []
    got = dask_engine.fit(X, 10, init=init, callback=lambda info: blocks.append(sorted(dask_chunks.BLOCKS)))
    same_fit(got, ref)
    assert got.labels_.chunks == X.chunks[:1]
    steps = [(key, version) for name, key, version in calls if name == "_step"]
    versions = sorted({version for _, version in steps})
    assert versions == list(range(1, len(versions) + 1)) and len(versions) >= ref.n_iter_
    assert len(steps) == 2 * len(versions)  # one call per worker per assignment
    units = {key[1] for key, _ in steps}
    assert len(units) == 2 and sorted(i for unit in units for i in unit) == list(range(100))
    assert all(len(keys) == 2 for keys in blocks)  # one block per worker held during the fit
    assert dask_chunks.BLOCKS == {}  # and none after it


def test_seeding_does_not_depend_on_which_worker_holds_which_chunk(client, digits):
    """The same chunks, dealt to the workers in two ways: the same k-means++ and k-means|| starts."""
    X = da.from_array(digits, chunks=(40, -1))
    dealt = scattered(client, digits, 100)
    for init in ("k-means++", "k-means||"):
        one = dask_engine.fit(X, 8, init=init, random_state=2, max_iter=1)
        other = dask_engine.fit(dealt, 8, init=init, random_state=2, max_iter=1)
        np.testing.assert_array_equal(one.cluster_centers_, other.cluster_centers_)


def test_workers_the_client_cannot_call_directly_fall_back_to_tasks(client, digits, monkeypatch):
    """Actor calls that never get through (workers reachable only through the scheduler): the
    fit runs on tasks, with the same answer, and does not set actors up again and again."""
    from kmeans_mnist.engine.dask import chunks as dask_chunks

    started = []
    start = dask_chunks.Chunks._start_hosts

    def unreachable(self, *args):
        raise OSError("no route to the worker")

    monkeypatch.setattr(dask_chunks.Chunks, "_by_hosts", unreachable)
    monkeypatch.setattr(dask_chunks.Chunks, "_start_hosts", lambda self: started.append(1) or start(self))
    X = digits[:2000]
    init = X[:6]
    same_fit(dask_engine.fit(da.from_array(X, chunks=(500, -1)), 6, init=init), engine.fit(X, 6, init=init))
    assert started == [1]


def test_same_answers_on_float_data_of_extreme_magnitude_and_without_a_cluster(digits):
    X = digits[:2000].astype(np.float32) * np.float32(1e30)  # scaled by a power of two, as in memory
    init = X[:6]
    ref = engine.fit(X, 6, init=init, tol=0)
    same_fit(dask_engine.fit(da.from_array(X, chunks=(700, -1)), 6, init=init, tol=0), ref)


def test_numpy_data_is_scattered_and_gives_the_same_answers(client):
    X = mnist_like(4000, seed=3)
    ref = engine.fit(X, 8, init="random", random_state=5, n_init=2)
    got = dask_engine.fit(X, 8, init="random", random_state=5, n_init=2)
    assert isinstance(got.labels_, np.ndarray)
    same_fit(got, ref)


def test_an_emptied_cluster_is_reseeded_as_in_memory(client):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (300, 2)), rng.normal(20, 1, (300, 2))])
    init = np.array([[0.0, 0.0], [20.0, 20.0], [1000.0, 1000.0]])  # the third attracts nobody
    ref = engine.fit(X, 3, init=init)
    got = dask_engine.fit(da.from_array(X, chunks=(250, -1)), 3, init=init)
    assert ref.n_empty_reseeds_ >= 1
    same_fit(got, ref)


@pytest.mark.parametrize("init", ["k-means++", "k-means||"])
def test_seeding_on_chunks_is_reproducible_and_as_good(client, digits, init):
    """Chunk-wise seeding draws differently from the in-memory one, but as well."""
    few = digits[:3000]
    X = da.from_array(few, chunks=(1000, -1))
    first = dask_engine.fit(X, 8, init=init, random_state=3, max_iter=1)
    again = dask_engine.fit(X, 8, init=init, random_state=3, max_iter=1)
    np.testing.assert_array_equal(first.cluster_centers_, again.cluster_centers_)
    in_memory = [engine.fit(few, 8, random_state=seed, max_iter=1).inertia_ for seed in range(4)]
    assert first.inertia_ < 1.05 * np.mean(in_memory)


def test_random_start_picks_the_in_memory_rows(client, digits):
    X = da.from_array(digits, chunks=(4000, -1))
    same_fit(
        dask_engine.fit(X, 7, init="random", random_state=11),
        engine.fit(digits, 7, init="random", random_state=11),
    )


def test_without_a_cluster_chunks_run_on_threads_here(client, digits):
    import dask

    init = digits[:5]
    with dask.config.set(scheduler="threads"):  # Dask's own switch away from the default client
        assert dask_engine.current_client() is None
        got = dask_engine.fit(da.from_array(digits[:4000], chunks=(1000, -1)), 5, init=init)
    assert dask_engine.current_client() is client
    same_fit(got, engine.fit(digits[:4000], 5, init=init))


def test_predict_is_lazy_and_agrees_with_the_fit(client):
    X = mnist_like(3000, seed=9)
    centers = engine.fit(X, 6, random_state=0).cluster_centers_
    reads = []

    def read(block):
        reads.append(len(block))
        return block

    lazy = da.from_array(X, chunks=(800, -1)).map_blocks(read, dtype=X.dtype, meta=X[:0])
    labels = dask_engine.predict(lazy, centers)
    distances = dask_engine.transform(lazy, centers)
    assert isinstance(labels, da.Array) and isinstance(distances, da.Array)
    assert reads == [] and labels.chunks == ((800, 800, 800, 600),)
    expected = engine.labels_inertia(X, centers)
    np.testing.assert_array_equal(labels.compute(), expected[0])
    np.testing.assert_allclose(distances.compute(), engine.distances(X, centers), rtol=1e-6)
    assert dask_engine.inertia(lazy, centers) == pytest.approx(expected[1], rel=1e-9)


def test_the_estimator_takes_dask_arrays(client):
    from kmeans_mnist import KMeans

    X = mnist_like(3000, seed=4)
    Xd = da.from_array(X, chunks=(1000, -1))
    init = X[:6].astype(np.float64)
    ref = KMeans(6, init=init).fit(X)
    model = KMeans(6, init=init).fit(Xd)
    assert isinstance(model.labels_, da.Array) and model.n_features_in_ == 784
    same_fit(model, ref)
    labels = model.predict(Xd)
    assert isinstance(labels, da.Array) and isinstance(model.transform(Xd), da.Array)
    np.testing.assert_array_equal(labels.compute(), ref.predict(X))
    np.testing.assert_allclose(model.transform(Xd).compute(), ref.transform(X), rtol=1e-6)
    assert model.score(Xd) == pytest.approx(ref.score(X), rel=1e-9)
    assert KMeans(6, init="k-means||", random_state=0).fit(Xd).cluster_centers_.shape == (6, 784)
    with pytest.raises(ValueError, match="sample_weight"):
        KMeans(6).fit(Xd, sample_weight=np.ones(3000))
    with pytest.raises(ValueError, match="features"):
        model.predict(Xd[:, :100])


def test_bad_dask_input_is_a_value_error(client):
    with pytest.raises(ValueError, match="NaN or infinity"):
        dask_engine.fit(da.from_array(np.array([[0.0, np.nan], [1.0, 2.0]]), chunks=1), 1)
    with pytest.raises(ValueError, match="n_clusters"):
        dask_engine.fit(da.zeros((3, 4), chunks=2), 5)
    with pytest.raises(ValueError, match="2-D"):
        dask_engine.fit(da.zeros(5, chunks=2), 1)


@pytest.fixture(scope="module")
def process_client():
    """Two worker processes under nannies: one can be killed, and the nanny starts a new one."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


def killer(client, at_iteration: int):
    """A callback that kills a worker process (SIGKILL) after the given iteration."""
    pids = list(client.run(os.getpid).values())
    killed = []

    def callback(info) -> None:
        if info.iteration == at_iteration and not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(time.monotonic())

    return callback, killed


@pytest.mark.parametrize("source", ["dask", "numpy"])
def test_a_worker_killed_mid_fit_changes_nothing(process_client, digits, source):
    """Dask recomputes the lost chunk (or we send it again), its state is rebuilt from the
    previous centres, and the fit ends with the in-memory engine's answer."""
    X = digits[:4000]
    init = X[:10]
    ref = engine.fit(X, 10, init=init)
    assert ref.n_iter_ > 4
    callback, killed = killer(process_client, at_iteration=3)
    data = da.from_array(X, chunks=(1000, -1)) if source == "dask" else X
    got = dask_engine.fit(data, 10, init=init, callback=callback, client=process_client)
    assert killed
    same_fit(got, ref)
    process_client.wait_for_workers(2, timeout=30)


# ---------------------------------------------------------------------- the command line


def test_scheduler_local_writes_the_same_results(tmp_path, monkeypatch):
    from cli_support import isolated_env, write_kaggle
    from kmeans_mnist import cli

    write_kaggle(tmp_path / "data", n_train=300, n_test=100)
    for name, value in isolated_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    common = ["5", "--data-dir", "data", "--samples", "2", "--quiet", "--init", "random"]
    assert cli.main([*common, "--output", "plain"]) == 0
    before = distributed.client._get_global_client()
    assert cli.main([*common, "--output", "dask", "--scheduler", "local"]) == 0
    assert distributed.client._get_global_client() is before  # the command's cluster is gone
    (plain,), (on_dask,) = (
        sorted((tmp_path / out).glob("*/k5/assignments.csv")) for out in ("plain", "dask")
    )
    assert plain.relative_to(tmp_path / "plain") == on_dask.relative_to(tmp_path / "dask")  # same experiment
    assert plain.read_bytes() == on_dask.read_bytes()


def test_a_dask_run_says_so_in_the_terminal_summary_and_report(tmp_path, monkeypatch, capsys):
    import json
    import re

    from cli_support import isolated_env, write_kaggle
    from kmeans_mnist import cli

    write_kaggle(tmp_path / "data", n_train=300, n_test=100)
    for name, value in isolated_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    args = ["4", "--data-dir", "data", "--samples", "0", "--init", "random", "--output", "out"]
    assert cli.main([*args, "--scheduler", "local"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("fitting on the Dask cluster at ")]
    assert len(lines) == 1, err
    said = re.fullmatch(
        r"fitting on the Dask cluster at (tcp://\S+): (\d+) workers?, (\d+) threads?.*; (.+)", lines[0]
    )
    assert said, lines[0]
    (summary,) = (tmp_path / "out").glob("*/k4/summary.json")
    recorded = json.loads(summary.read_text())["dask_cluster"]
    assert [recorded["scheduler"], str(recorded["workers"]), str(recorded["threads"])] == list(
        said.groups()[:3]
    )
    assert recorded["workers"] >= 1 and recorded["threads"] >= recorded["workers"]
    dashboard = recorded["dashboard"]
    assert said.group(4) == (f"dashboard {dashboard}" if dashboard else "no dashboard")
    report = (summary.parent.parent / "report.html").read_text()
    assert "Dask cluster" in report and recorded["scheduler"] in report


def test_describe_cluster_gives_the_dashboard_only_when_there_is_one(client, monkeypatch):
    from kmeans_mnist.engine.dask import cluster

    monkeypatch.setattr(cluster, "_serves_dashboard", lambda: False)  # as without bokeh
    described = cluster.describe_cluster(client)
    assert described == {
        "scheduler": client.scheduler.address,
        "workers": 2,
        "threads": 2,
        "memory_bytes": sum(w["memory_limit"] for w in client.scheduler_info()["workers"].values()),
        "dashboard": None,
    }
    assert cluster.cluster_line(described).endswith(
        f": 2 workers, 2 threads, {described['memory_bytes'] / 1e9:.1f} GB; no dashboard"
    )
    monkeypatch.setattr(cluster, "_serves_dashboard", lambda: True)
    assert cluster.describe_cluster(client)["dashboard"] == client.dashboard_link


def test_an_unreachable_scheduler_is_one_error_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    from kmeans_mnist import cli
    from kmeans_mnist.cli import scheduler

    monkeypatch.setattr(scheduler, "SCHEDULER_TIMEOUT", 1)
    monkeypatch.chdir(tmp_path)
    code = cli.main(["3", "--scheduler", "tcp://127.0.0.1:1", "--output", "out"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: cannot reach the Dask scheduler")
    assert list(tmp_path.iterdir()) == []


def test_without_scheduler_the_command_imports_nothing_of_dask(tmp_path):
    from cli_support import isolated_env, write_kaggle

    write_kaggle(tmp_path / "data")
    script = (
        "import sys; from kmeans_mnist import cli;"
        "code = cli.main(['3', '--data-dir', 'data', '--quiet', '--samples', '0']);"
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'dask', 'distributed'}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=isolated_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert result.stdout.split() == ["0", "[]"], result.stderr
    help_text = subprocess.run(
        [sys.executable, "-m", "kmeans_mnist", "--help"], capture_output=True, text=True
    )
    assert "--scheduler ADDRESS" in help_text.stdout
