"""--scheduler: the Dask cluster a fit runs on, reached (or started) before the run and closed
after it; Dask is imported only here, and only then."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

from .exits import say_always
from .preflight import UsageError

SCHEDULER_TIMEOUT = 5  # seconds to reach a --scheduler before giving up


def on_scheduler(args: argparse.Namespace, run: Callable[[argparse.Namespace], int]) -> int:
    """run(args), connected first to the Dask cluster of --scheduler when one is given (Dask is
    imported only then); an unreachable scheduler is an error after SCHEDULER_TIMEOUT seconds."""
    if args.scheduler is None:
        return run(args)
    if not args.scheduler.strip():
        raise UsageError("--scheduler is empty: give tcp://host:port, or 'local'")
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError("--scheduler needs Dask: pip install 'kmeans-mnist[dask]'") from None
    import logging

    # A Ctrl-C cancels Dask's pending gathers; asyncio would print them as never-retrieved errors.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    with contextlib.ExitStack() as stack:
        dask_logs = logging.getLogger("distributed")
        stack.callback(dask_logs.setLevel, dask_logs.level)  # last on the way out (see below)
        if args.scheduler == "local":
            with _workers_ignore_interrupts():
                cluster = stack.enter_context(
                    LocalCluster(
                        dashboard_address=":0", silence_logs=logging.ERROR
                    )  # a free port: 8787 may be taken
                )
            client = stack.enter_context(Client(cluster))
        else:
            try:
                _probe_scheduler(args.scheduler, SCHEDULER_TIMEOUT)
                client = stack.enter_context(Client(args.scheduler, timeout=SCHEDULER_TIMEOUT))
            except Exception as error:  # OSError, TimeoutError, ValueError for a malformed address
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise UsageError(
                    f"cannot reach the Dask scheduler at {args.scheduler} ({reason}); start one with "
                    "`dask scheduler` and `dask worker ADDRESS`, or use --scheduler local"
                ) from None
        # Closed first on the way out: the run has said its last line (results, `interrupted:`);
        # the scheduler's complaints about workers going away as the cluster closes are not news.
        stack.callback(dask_logs.setLevel, logging.CRITICAL + 1)
        from ..engine.dask.cluster import cluster_line, describe_cluster

        args.cluster = describe_cluster(client)  # recorded in each K's summary.json
        if not args.quiet:
            say_always(cluster_line(args.cluster))
        return run(args)


@contextlib.contextmanager
def _workers_ignore_interrupts() -> Iterator[None]:
    """SIGINT ignored while --scheduler local starts its worker processes, which inherit that.

    A Ctrl-C at the terminal goes to every process of the foreground group: the workers would
    each print a traceback of their own. Ignoring it, they are stopped by this process instead,
    which closes the cluster on its way out (and prints the one `interrupted:` line)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _probe_scheduler(address: str, seconds: float) -> None:
    """Connect to `address` and read its Dask handshake, all within `seconds`, or raise.

    distributed's Client bounds the connection by its timeout, not the handshake that follows:
    a server that accepts connections and then says nothing (an HTTP server, such as the
    dashboard's port) would keep it waiting forever."""
    import asyncio

    from distributed.comm import connect

    async def probe() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=seconds), seconds)
        await comm.close()

    try:
        asyncio.run(probe())
    except asyncio.TimeoutError:
        raise TimeoutError(f"no Dask handshake within {seconds} s: is this the scheduler's port?") from None
