"""`python -m kmeans_mnist K [K ...]`: load a dataset once, cluster it for each K, write the results.

The only module that knows about arguments and exit codes: 0 on success, 2 with one `error:` line
for anything the user can fix, 130 when interrupted. Heavy imports wait until the arguments are
known, so `--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from pathlib import Path

DATASET_CHOICES = ("mnist", "fashion", "usps")
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A mistake in the command line or the data; printed as one `error:` line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the whole usage; one line is kinder
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kmeans-mnist",
        description="Cluster MNIST, Fashion-MNIST or the USPS digit sheets with K-means and write "
        "the representatives, the clusters, the assignments and their scores.",
        epilog="Example: python -m kmeans_mnist 3 4 5 6 7 --dataset usps --data-dir dataset/usps",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "k", nargs="+", metavar="K", help="number of clusters; several K run one after another"
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASET_CHOICES, default="mnist", help="which images to cluster")
    data.add_argument(
        "--data-dir",
        metavar="DIR",
        help="read the files from DIR instead of downloading with kagglehub (the Kaggle CSV files for "
        "mnist/fashion, usps_1.jpg..usps_5.jpg for usps; usps defaults to dataset/usps)",
    )
    data.add_argument(
        "--split", choices=("train", "test", "all"), default="all", help="which part of mnist/fashion"
    )
    data.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="use a fixed pseudo-random subset of N images (for smoke runs); the same N gives the same images",
    )
    data.add_argument("--keep-blank", action="store_true", help="keep all-black images (skipped by default)")
    fit = parser.add_argument_group("clustering")
    fit.add_argument(
        "--init", choices=("k-means++", "random"), default="k-means++", help="how the K representatives start"
    )
    fit.add_argument("--n-init", type=int, default=1, metavar="N", help="restarts; the lowest inertia wins")
    fit.add_argument("--max-iter", type=int, default=300, metavar="N", help="iteration limit per restart")
    fit.add_argument(
        "--tol", type=float, default=1e-4, help="stop when the centres move less than this (relative)"
    )
    fit.add_argument("--seed", type=int, default=0, help="random seed: same seed, same results")
    out = parser.add_argument_group("results")
    out.add_argument("--output", default="output", metavar="DIR", help="results go to DIR/<dataset>/k<K>/")
    out.add_argument("--samples", type=int, default=64, metavar="N", help="members shown per cluster grid")
    out.add_argument("--export-members", action="store_true", help="also write every member as its own PNG")
    out.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check everything that can be checked before loading any data."""
    args = build_parser().parse_args(argv)
    args.k = [_parse_k(text) for text in args.k]
    if len(set(args.k)) != len(args.k):
        raise UsageError(f"K given twice: {' '.join(map(str, args.k))}; give each K once")
    for name, value, low in (
        ("--limit", args.limit, 1),
        ("--n-init", args.n_init, 1),
        ("--max-iter", args.max_iter, 1),
        ("--samples", args.samples, 0),
        ("--seed", args.seed, 0),  # numpy's generators take no negative seed
    ):
        if value is not None and value < low:
            raise UsageError(f"{name} must be at least {low}, got {value}")
    if not args.tol >= 0 or args.tol == float("inf"):
        raise UsageError(f"--tol must be a finite number >= 0, got {args.tol}")
    for name, value in (("--output", args.output), ("--data-dir", args.data_dir)):
        if value is not None and not value.strip():  # Path("") would quietly mean the current folder
            raise UsageError(f"{name} is empty: give a folder, or leave the option out")
    if args.dataset == "usps" and args.split != "all":
        raise UsageError(
            "--split does not apply to usps: its five sheets have no train/test split; leave --split out"
        )
    return args


def _parse_k(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise UsageError(f"K must be a whole number, got {text!r}") from None
    if k < 1:
        raise UsageError(f"K must be at least 1, got {k}")
    return k


def main(argv: list[str] | None = None) -> int:
    """Entry point of `kmeans-mnist` and `python -m kmeans_mnist`; returns the exit code."""
    try:
        return run(parse_args(argv))
    except UsageError as error:
        return _fail(str(error))
    except KeyboardInterrupt:
        _clear_progress()
        print("interrupted: no partial results were written; earlier results are intact", file=sys.stderr)
        return EXIT_INTERRUPTED


def _fail(message: str) -> int:
    _clear_progress()
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _clear_progress() -> None:
    """A progress line or bar on screen goes before a message takes its place."""
    progress = sys.modules.get(f"{__package__}.progress")  # loaded only once a run has started
    if progress is not None:
        progress.clear()


def run(args: argparse.Namespace) -> int:
    from .datasets import DatasetError, load_dataset
    from .progress import Terminal

    terminal = Terminal(quiet=args.quiet, n_init=args.n_init)
    say = terminal.say
    _check_output(Path(args.output), args.dataset)  # before the load and the fits, not after them
    started = time.perf_counter()
    terminal.phase(f"loading {args.dataset}")
    try:
        data = load_dataset(
            args.dataset,
            data_dir=args.data_dir,
            split=args.split,
            limit=args.limit,
            keep_blank=args.keep_blank,
        )
    except DatasetError as error:
        raise UsageError(str(error)) from None
    load_seconds = time.perf_counter() - started
    from .sweep import interrupt_deferred

    # scipy's import runs exec(), and a Ctrl-C inside exec() makes Python end by SIGINT, not with
    # exit code 130: the import is done before the fits, with Ctrl-C held back until it is over.
    with interrupt_deferred():
        from . import metrics  # noqa: F401
    terminal.done()
    _check_k_fits(args, data)
    blank = f", {data.n_blank_skipped} all-black skipped" if data.n_blank_skipped else ""
    say(
        f"loaded {len(data):,} images of {data.image_shape[0]}x{data.image_shape[1]} from {data.source}{blank} ({load_seconds:.2f}s)"
    )

    from .sweep import ReportFailed, Settings, SummaryFailed, Sweep, WriteFailed

    settings = Settings(
        init=args.init,
        n_init=args.n_init,
        max_iter=args.max_iter,
        tol=args.tol,
        seed=args.seed,
        samples=args.samples,
        export_members=args.export_members,
    )
    sweep = Sweep(
        Path(args.output),
        data,
        settings,
        load_seconds=load_seconds,
        progress=terminal.fit,
        on_saved=None if args.quiet else _TablePrinter(terminal, last_k=args.k[-1]),
    )
    try:
        results = sweep.run(args.k)
    except WriteFailed as failure:
        raise UsageError(
            f"could not write the results of K={failure.k} to {failure.target}: {_reason(failure.error)}; "
            f"{_advice(failure.error)} (earlier results of K={failure.k} are unchanged)"
        ) from None
    except ReportFailed as failure:
        saved = " ".join(map(str, failure.ks))
        raise UsageError(
            f"could not write the pictures and report.html in {failure.folder}: {_reason(failure.error)}; "
            f"{_advice(failure.error)} (the results of K={saved} are complete)"
        ) from None
    except SummaryFailed as failure:
        from .summary import SummaryError

        if isinstance(failure.error, SummaryError):
            raise UsageError(
                f"{failure.error} (the results of K={failure.k} are complete in {failure.folder})"
            ) from None
        raise UsageError(
            f"could not update {failure.summary}: {_reason(failure.error)}; {_advice(failure.error)} "
            f"(the results of K={failure.k} are complete in {failure.folder}; "
            "summary.csv and elbow.png are unchanged)"
        ) from None
    terminal.done()
    if results and not args.quiet:
        folder = results[-1].folder.parent
        print(f"summary: {folder / 'summary.csv'}, report: {folder / 'report.html'}")
    return 0


def _check_output(output: Path, dataset: str) -> None:
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
    summary = folder / "summary.csv"
    if summary.is_file():  # a run must be able to add its row: find out now, not after the fit
        from .summary import SummaryError, read_summary

        try:
            read_summary(summary)
        except SummaryError as error:
            raise UsageError(str(error)) from None
        except OSError as error:
            raise UsageError(
                f"cannot read {summary}: {error.strerror or error}; choose another --output"
            ) from None


def _check_k_fits(args: argparse.Namespace, data) -> None:
    """Every K must be at most the number of images; say why there are so few when we know."""
    too_big = [k for k in args.k if k > len(data)]
    if not too_big:
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


def _reason(error: OSError) -> str:
    return error.strerror or (str(error).splitlines() or [type(error).__name__])[0]


def _advice(error: OSError) -> str:
    """What to do about a failed write (its temp files are already gone)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some disk space or choose another --output"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose an --output folder you can write to"
    return "check the --output folder"


class _TablePrinter:
    """Prints each K's results line as soon as that K is saved, under a header printed once;
    after the last K, says that the sweep's pictures and report are being drawn."""

    def __init__(self, terminal, last_k: int):
        self.terminal, self.last_k, self.header_done = terminal, last_k, False

    def __call__(self, result) -> None:
        self.terminal.done()
        if not self.header_done:
            print(f"{'K':>4} {'iter':>5} {'inertia':>12} {'accuracy':>9} {'NMI':>7}  folder", flush=True)
            self.header_done = True
        row = result.row
        note = "" if result.converged else "  (stopped at --max-iter)"
        if result.reseeds:
            note += f"  ({result.reseeds} emptied cluster(s) re-seeded)"
        print(
            f"{row['k']:>4} {row['n_iter']:>5} {float(row['inertia']):>12.4e} {row['accuracy'] or '-':>9} "
            f"{row['nmi'] or '-':>7}  {result.folder}{note}",
            flush=True,
        )
        if result.k == self.last_k:
            self.terminal.phase("drawing the sweep's pictures and report.html")


if __name__ == "__main__":
    sys.exit(main())
