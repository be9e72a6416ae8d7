"""What the command line checks before any work, so that a run that cannot succeed stops at once.

The output folder (a file in the way, no permission, a folder holding other settings' results),
every K against the images (more clusters than images) and against the memory the engine
estimates for it (with what --repeats keeps); a fit estimated to take hours is announced, its
repeats and their stability score (quadratic in the repeats) counted. Each refusal is a UsageError: the
CLI prints it as one `error:` line and exits with code 2, having written nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..data.sources import Planned

LONG_RUN_SECONDS = 3600  # a fit estimated to take longer is announced before it starts
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")  # which control groups this process is in
STABILITY_SECONDS_PER_ROW = 2e-8  # one pairwise agreement (adjusted Rand index), per image
KEPT_BYTES_PER_CENTRE_VALUE = 48  # per repeat: the centres (float64), a copy, history frames


class UsageError(Exception):
    """A mistake in the command line or the data; printed as one `error:` line, exit code 2."""


def check_output(output: Path, dataset: str, ks: list[int]) -> None:
    """Refuse an --output that cannot hold results (a file on the way, no write permission), creating nothing."""
    folder = output / dataset
    existing = folder
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        usable = existing.is_dir()
    except OSError as error:
        raise UsageError(f"cannot use --output {output}: {error.strerror or error}") from None
    if not usable:
        raise UsageError(
            f"cannot write the results to {folder}: {existing} is a file, not a folder; choose another --output"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(
            f"cannot write the results to {folder}: no permission to write in {existing}; choose another --output"
        )
    from ..results.experiment import SummaryError, check_folder

    try:
        check_folder(folder, ks)
    except SummaryError as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(
            f"cannot read {folder}: {error.strerror or error}; choose another --output"
        ) from None


def check_k_fits(args: argparse.Namespace, data) -> None:
    """Every K must be at most the number of images (say why there are so few when we know) and
    fit in memory, refused before any work; a fit that will take hours is announced."""
    too_big = [k for k in args.k if k > len(data)]
    if not too_big:
        check_cost(args, data)
        return
    why = ""
    if data.n_blank_skipped:
        why = f"; {data.n_blank_skipped:,} all-black images were skipped, --keep-blank keeps them"
    elif args.limit is not None and args.limit == len(data):
        why = f"; --limit {args.limit} keeps only that many"
    if not len(data):
        raise UsageError(f"no images to cluster in {data.source}{why}")
    raise UsageError(
        f"K={too_big[0]} is larger than the number of images ({len(data):,}): use K <= {len(data):,}{why}"
    )


def check_cost(args: argparse.Namespace, data) -> None:
    """The engine's estimate of each K's memory (refuse what does not fit) and time (announce
    hours), with --repeats counted: R fits, R labellings kept, R(R-1)/2 comparisons for the stability."""
    from ..engine.lloyd import estimate, largest_k

    n, d = data.all_pixel.shape
    repeats = getattr(args, "repeats", 1)
    settings = {
        "dtype": data.all_pixel.dtype,
        "init": args.init,
        "n_init": args.n_init,
        "max_iter": args.max_iter,
    }
    available = available_memory()
    for k in args.k:
        cost = estimate(n, d, k, **settings)
        kept, stability_seconds = repeats_cost(n, d, k, repeats)
        if available is not None and cost.bytes > available:
            most = largest_k(n, d, available, **settings)
            advice = f"use K <= {most:,}" if most else "use --limit to cluster fewer images"
            raise UsageError(
                f"K={k} needs about {gib(cost.bytes)} of working memory for {n:,} images and "
                f"{gib(available)} is available: {advice}"
            )
        if available is not None and cost.bytes + kept > available:
            most = max(1, (available - cost.bytes) // repeats_cost(n, d, k, 1)[0])
            raise UsageError(
                f"--repeats {repeats:,} keeps {repeats:,} fits of K={k} for the scores and the stability: about "
                f"{gib(cost.bytes + kept)} for {n:,} images and {gib(available)} is available: use "
                f"--repeats <= {most:,}"
            )
        seconds = cost.seconds * repeats + stability_seconds
        if seconds > LONG_RUN_SECONDS and not args.quiet:
            parts = []
            if cost.init_seconds * repeats > seconds / 2:
                parts.append(
                    f"{duration(cost.init_seconds * repeats)} of it choosing k-means++ starting centres"
                )
            if repeats > 1:
                parts.append(f"{repeats:,} repeats")
            if stability_seconds > seconds / 2:
                parts.append(f"{duration(stability_seconds)} of it comparing them for the stability")
            detail = f" ({'; '.join(parts)})" if parts else ""
            print(
                f"note: K={k} will take very long, roughly {duration(seconds)}{detail}; Ctrl-C stops it",
                file=sys.stderr,
            )


def planned_memory(args: argparse.Namespace) -> Callable[[Planned], None]:
    """The `plan` for load_dataset: refuse, before any image is read, a source whose images alone
    cannot fit in memory, or whose fit cannot fit beside them at the smallest K (the estimate of
    check_cost, for the images that --limit keeps)."""

    def check(planned: Planned) -> None:
        available = available_memory()
        if available is None:
            return
        height, width = planned.image_shape
        what = f"{planned.n_images:,} images of {height}x{width}"
        smaller = "use a smaller --size" if getattr(args, "size", None) else "use fewer or smaller images"
        if planned.load_bytes > available:
            raise UsageError(
                f"reading {planned.source} needs about {gib(planned.load_bytes)} of memory ({what}) and "
                f"{gib(available)} is available: {smaller}"
            )
        k = min(args.k)
        n = planned.n_images if args.limit is None else min(args.limit, planned.n_images)
        if k > n:
            return  # check_k_fits says so, with the reason, once the images are counted
        resident = planned.resident_bytes if n == planned.n_images else n * planned.pixels
        from ..engine.lloyd import estimate

        cost = estimate(
            n, planned.pixels, k, dtype="uint8", init=args.init, n_init=args.n_init, max_iter=args.max_iter
        )
        if resident + cost.bytes > available:
            advice = f"{smaller}, or --limit to cluster fewer of them"
            raise UsageError(
                f"K={k} needs about {gib(resident + cost.bytes)} of memory for {what} "
                f"({gib(resident)} of it the images) and {gib(available)} is available: {advice}"
            )

    return check


def gib(count: int) -> str:
    """A memory size for people: GiB with one decimal, MiB below 1 GiB."""
    return f"{count / 2**30:,.1f} GiB" if count >= 2**30 else f"{count / 2**20:,.0f} MiB"


def repeats_cost(n: int, d: int, k: int, repeats: int) -> tuple[int, float]:
    """What --repeats R adds to one K: bytes kept until the K is written (each repeat's labels,
    centres and history frames) and seconds for the stability (an agreement per pair of repeats)."""
    kept = repeats * (4 * n + KEPT_BYTES_PER_CENTRE_VALUE * k * d)
    pairs = repeats * (repeats - 1) // 2
    return kept, pairs * n * STABILITY_SECONDS_PER_ROW


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation, or None if unknown: the machine's (Linux
    MemAvailable), or less where this process is held to less: an address-space limit (ulimit -v)
    less what it already maps, a control group's limit (a container's) less what it already uses."""
    found = [_machine_memory(), _address_space_left(), _cgroup_memory_left()]
    known = [value for value in found if value is not None]
    return max(0, min(known)) if known else None


def _machine_memory() -> int | None:
    with (
        contextlib.suppress(OSError, ValueError, IndexError),
        open("/proc/meminfo", encoding="ascii") as file,
    ):
        for line in file:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


def _address_space_left() -> int | None:
    """RLIMIT_AS less the process's mapped size (VmSize), where both are known."""
    with contextlib.suppress(ImportError, OSError, ValueError, IndexError):
        import resource

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        if limit == resource.RLIM_INFINITY or limit < 0:
            return None
        with open("/proc/self/status", encoding="ascii") as file:
            for line in file:
                if line.startswith("VmSize:"):
                    return limit - int(line.split()[1]) * 1024
    return None


def _cgroup_memory_left() -> int | None:
    """A control group's memory limit less its usage (a container's), cgroup v2 or v1, where limited.
    Inside a container the group's own folder is often the mount's root: both are looked at."""
    groups = {}
    with contextlib.suppress(OSError, ValueError), open(PROC_CGROUP, encoding="ascii") as file:
        for line in file:
            _, controllers, relative = line.rstrip("\n").split(":", 2)
            groups[controllers] = relative.lstrip("/")
    root = CGROUP_ROOT
    places = []
    if "" in groups:  # v2: one hierarchy
        places += [
            (root / groups[""], "memory.max", "memory.current"),
            (root, "memory.max", "memory.current"),
        ]
    if "memory" in groups:  # v1: the memory controller's own hierarchy
        places += [(root / "memory" / groups["memory"], "memory.limit_in_bytes", "memory.usage_in_bytes")]
    places += [(root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes")]
    for folder, limit_name, usage_name in places:
        with contextlib.suppress(OSError, ValueError):
            limit = (folder / limit_name).read_text().strip()
            if limit == "max" or int(limit) >= 1 << 60:  # no limit here (v1 writes a huge number)
                return None
            return int(limit) - int((folder / usage_name).read_text())
    return None


def duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:,.0f} {unit}"
    return f"{seconds:.0f} seconds"
