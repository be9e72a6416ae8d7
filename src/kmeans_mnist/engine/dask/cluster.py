"""What a Dask cluster is, in a few plain values: so that a run on one says so (the command
line's terminal line, summary.json, report.html) and its figures can be read for what they are.

Asks the scheduler only (no task): its address, workers, threads, memory, and its dashboard's
address when it serves one (the scheduler lists a "dashboard" service whenever its HTTP server
runs, which it does without bokeh too: then there is no dashboard to link to).
"""

from __future__ import annotations

import contextlib
from typing import Any


def describe_cluster(client) -> dict[str, Any]:
    """The cluster of a dask.distributed `client` as a dict of plain values (JSON-ready):
    scheduler (its address), workers, threads, memory_bytes (the workers' memory limits added up,
    0 when unlimited) and dashboard (its address, or None when there is none)."""
    info = client.scheduler_info()
    workers = info.get("workers", {})
    return {
        "scheduler": info.get("address", getattr(client.scheduler, "address", None)),
        "workers": int(info.get("n_workers", len(workers))),
        "threads": int(info.get("total_threads", sum(w.get("nthreads", 0) for w in workers.values()))),
        "memory_bytes": int(
            info.get("total_memory", sum(w.get("memory_limit", 0) for w in workers.values()))
        ),
        "dashboard": _dashboard(client, info),
    }


def _dashboard(client, info: dict) -> str | None:
    if "dashboard" not in info.get("services", {}):
        return None
    served = True
    with contextlib.suppress(Exception):  # a scheduler that runs no code of ours: say what it lists
        served = bool(client.run_on_scheduler(_serves_dashboard))
    if not served:
        return None
    with contextlib.suppress(Exception):
        return str(client.dashboard_link)
    return None


def _serves_dashboard() -> bool:
    """On the scheduler: whether its dashboard can be drawn (it needs bokeh)."""
    import importlib.util

    return importlib.util.find_spec("bokeh") is not None


def cluster_line(cluster: dict[str, Any]) -> str:
    """The terminal's line for a run on the cluster `describe_cluster` described."""
    workers, threads = cluster["workers"], cluster["threads"]
    memory = f", {cluster['memory_bytes'] / 1e9:.1f} GB" if cluster.get("memory_bytes") else ""
    dashboard = f"dashboard {cluster['dashboard']}" if cluster.get("dashboard") else "no dashboard"
    return (
        f"fitting on the Dask cluster at {cluster['scheduler']}: {workers} worker{'s' * (workers != 1)}, "
        f"{threads} thread{'s' * (threads != 1)}{memory}; {dashboard}"
    )
