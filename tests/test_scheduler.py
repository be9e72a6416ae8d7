"""--scheduler: every network wait is bounded, and Ctrl-C on a local cluster is one line.

Skipped when distributed is not installed (`pip install -e ".[dask]"`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

distributed = pytest.importorskip(
    "distributed", reason='the --scheduler tests need the dask extra: pip install -e ".[test,dask]"'
)

from cli_support import isolated_env, write_fixed_width_mnist, write_kaggle  # noqa: E402
from kmeans_mnist import cli  # noqa: E402
from kmeans_mnist.cli import scheduler  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def http_server(tmp_path):
    """`python -m http.server` on a free port of localhost: accepts connections, never speaks Dask."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "http.server did not start"
                time.sleep(0.1)
        yield f"tcp://127.0.0.1:{port}"
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    write_kaggle(tmp_path / "data", n_train=60, n_test=20)
    for name, value in isolated_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_server_that_is_not_a_scheduler_is_an_error_within_the_timeout(workdir, http_server, capsys):
    """It used to hang forever: distributed bounds the connection, not the handshake after it."""
    started = time.monotonic()
    code = cli.main(["3", "--data-dir", "data", "--scheduler", http_server, "--output", "out", "--quiet"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: cannot reach the Dask scheduler") and "5 s" in err[0]
    assert elapsed < scheduler.SCHEDULER_TIMEOUT + 10
    assert not (workdir / "out").exists()


def test_a_real_scheduler_passes_the_handshake_check(workdir, capsys):
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None, protocol="tcp"
    ) as cluster:
        code = cli.main(
            [
                "3",
                "--data-dir",
                "data",
                "--scheduler",
                cluster.scheduler_address,
                "--output",
                "out",
                "--quiet",
            ]
        )
    assert code == 0, capsys.readouterr().err
    assert list((workdir / "out").glob("*/k3/model.npz"))


def test_ctrl_c_on_a_local_cluster_is_one_line(tmp_path):
    """A terminal's Ctrl-C reaches every process of the group, the cluster's workers included:
    they used to print ~65 lines of tracebacks; now the one `interrupted:` line, exit 130."""
    write_fixed_width_mnist(tmp_path / "data", 20_000)
    env = isolated_env(tmp_path)
    env["PYTHONUNBUFFERED"] = "1"
    args = ["40", "--data-dir", "data", "--split", "train", "--n-init", "20", "--scheduler", "local"]
    process = subprocess.Popen(
        [sys.executable, "-m", "kmeans_mnist", *args, "--output", "out", "--samples", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, which the signal goes to, as a terminal's
    )
    try:
        before = []
        for line in process.stderr:
            before.append(line)
            if line.startswith("loaded "):
                break
        assert before and before[-1].startswith("loaded "), "".join(before)
        time.sleep(2)  # into the fit, on the cluster's workers
        os.killpg(process.pid, signal.SIGINT)
        rest = process.stderr.read()
        assert process.wait(timeout=120) == 130, rest
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    lines = [line for line in rest.replace("\r", "\n").splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted"), rest
    assert not list(Path(tmp_path / "out").glob("*/k40"))
