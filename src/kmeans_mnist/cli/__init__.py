"""`python -m kmeans_mnist K [K ...]`: load a dataset once, cluster it for each K, write the results.

The only module that knows about arguments and exit codes: 0 on success, 2 with one `error:` line
for anything the user can fix, 130 when interrupted (143 for SIGTERM), 141 when stdout is closed
early. Heavy imports wait until the arguments are
known, so `--help` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..engine import params
from .preflight import UsageError, check_k_fits, check_output, planned_memory

DATASET_CHOICES = ("mnist", "fashion", "usps", "files")
OWN_FILES_HELP = "a folder of images (sub-folders name classes), IDX files, a .npy/.npz file or a CSV file"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT)
EXIT_BROKEN_PIPE = 141  # stdout closed early (`| head`), as a writer killed by SIGPIPE
EXIT_TERMINATED = 143  # SIGTERM


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the whole usage; one line is kinder
        raise UsageError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kmeans-mnist",
        description="Cluster MNIST, Fashion-MNIST, the USPS digit sheets or your own images with K-means and write "
        "the representatives, the clusters, the assignments and their scores.",
        epilog="Examples: python -m kmeans_mnist 3 4 5 6 7 --dataset usps; "
        "python -m kmeans_mnist 10 --dataset files --data-dir my-images/. "
        "A saved model assigns new images: kmeans-mnist predict MODEL SOURCE (see kmeans-mnist predict --help).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "k", nargs="+", metavar="K", help="number of clusters; several K run one after another"
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset",
        choices=DATASET_CHOICES,
        default="mnist",
        help="which images to cluster; 'files': your own, at --data-dir PATH",
    )
    _add_data_options(data)
    data.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="use a fixed pseudo-random subset of N images (for smoke runs); the same N gives the same images",
    )
    data.add_argument("--keep-blank", action="store_true", help="keep all-black images (skipped by default)")
    fit = parser.add_argument_group("clustering")
    fit.add_argument(
        "--init",
        choices=("k-means++", "k-means||", "random"),
        default="k-means++",
        help="how the K representatives start",
    )
    fit.add_argument("--n-init", type=int, default=1, metavar="N", help="restarts; the lowest inertia wins")
    fit.add_argument("--max-iter", type=int, default=300, metavar="N", help="iteration limit per restart")
    fit.add_argument(
        "--tol", type=float, default=1e-4, help="stop when the centres move less than this (relative)"
    )
    fit.add_argument(
        "--features",
        default="pixels",
        metavar="SPACE",
        help="the space K-means runs in: pixels, pca[:N] (default N=50) or umap[:N] (default N=10; needs "
        'pip install "kmeans-mnist[embed]"); embeddings are cached, pictures stay in pixels',
    )
    fit.add_argument("--seed", type=int, default=0, help="random seed: same seed, same results")
    fit.add_argument(
        "--repeats",
        default="1",
        metavar="R",
        help="fit each K R times (seeds SEED, SEED+1, ...): every score as mean ± std, and the stability",
    )
    fit.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="fit on a Dask cluster: its scheduler's address (tcp://host:8786), or 'local' to start one "
        "on this machine; same results (needs pip install 'kmeans-mnist[dask]')",
    )
    out = parser.add_argument_group("results")
    out.add_argument(
        "--output",
        default="output",
        metavar="DIR",
        help="results go to DIR/<experiment>/k<K>/ (<experiment>: the dataset, then any non-default settings)",
    )
    out.add_argument("--samples", type=int, default=64, metavar="N", help="members shown per cluster grid")
    out.add_argument(
        "--export-members",
        nargs="?",
        const="auto",
        default=None,
        choices=("auto", "png", "link", "copy"),
        metavar="HOW",
        help="also put every member of cluster NN into k<K>/clusters/NN/: link (symbolic links to your "
        "original files, under their own names; copies where links cannot be made), copy (copies of "
        "them), png (each image as a PNG named by its index); without HOW: link for your own files, png "
        "for the named datasets (which have no files of their own); originals are never changed",
    )
    out.add_argument(
        "--replace",
        action="store_true",
        help="when the experiment folder holds results made with other data or settings, move it aside "
        "to <folder>.replaced-<time> (never deleted) and start it anew, instead of refusing",
    )
    out.add_argument("--quiet", action="store_true", help="no progress bar, no table")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return parser


def _add_data_options(group) -> None:
    """The options that say where the images are and how to read them (clustering and predict)."""
    group.add_argument(
        "--data-dir",
        metavar="PATH",
        help="read the files from PATH instead of downloading with kagglehub (the Kaggle CSV files for "
        "mnist/fashion, usps_1.jpg..usps_5.jpg for usps, which ship with the package); with --dataset "
        f"files: {OWN_FILES_HELP}",
    )
    group.add_argument(
        "--split",
        choices=("train", "test", "all"),
        default="all",
        help="which part of mnist/fashion (or of IDX files, or of an .npz with x_train/x_test)",
    )
    group.add_argument(
        "--size",
        metavar="HxW",
        help="files: fit every image of a folder to HxW pixels, height x width (or NxN for N), as --resize "
        "says; without it all images must have one size",
    )
    group.add_argument(
        "--resize",
        choices=("stretch", "pad", "crop"),
        default=None,
        help="files, with --size: how an image of another size is fitted: stretch to HxW (the default; "
        "the aspect ratio is lost), pad (scaled to fit inside, black borders) or crop (scaled to cover, "
        "the centre kept)",
    )
    group.add_argument(
        "--grey",
        action="store_true",
        help="files: cluster colour images in grey (colour images are clustered in RGB by default)",
    )
    group.add_argument(
        "--shape", metavar="HxW", help="files: the image shape of flat rows (.npy N x D, CSV); default square"
    )
    group.add_argument(
        "--keys",
        metavar="IMAGES[,LABELS]",
        help="files: the arrays of an .npz to read (without it: images/labels, x/y or x_train/x_test...)",
    )
    group.add_argument(
        "--skip-unreadable",
        action="store_true",
        help="files: skip (and count) image files that cannot be read, instead of stopping at the first",
    )


def _version() -> str:
    from .. import __version__

    return __version__


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse and check everything that can be checked before loading any data."""
    args = build_parser().parse_args(argv)
    args.k = [_parse_whole(text, "K") for text in args.k]
    args.repeats = _parse_whole(args.repeats, "--repeats")
    if len(set(args.k)) != len(args.k):
        raise UsageError(f"K given twice: {' '.join(map(str, args.k))}; give each K once")
    for name, value, low in (("--limit", args.limit, 1), ("--samples", args.samples, 0)):
        if value is not None and value < low:
            raise UsageError(f"{name} must be at least {low}, got {value}")
    for option, name in (
        ("--n-init", "n_init"),
        ("--max-iter", "max_iter"),
        ("--seed", "seed"),
        ("--tol", "tol"),
    ):
        try:
            params.check(name, getattr(args, name))
        except params.ParameterError as error:
            raise UsageError(error.option_message(option)) from None
    for name, value in (("--output", args.output), ("--data-dir", args.data_dir)):
        if value is not None and not value.strip():  # Path("") would quietly mean the current folder
            raise UsageError(f"{name} is empty: give a folder, or leave the option out")
    if args.dataset == "usps" and args.split != "all":
        raise UsageError(
            "--split does not apply to usps: its five sheets have no train/test split; leave --split out"
        )
    _check_data_options(args, args.dataset)
    args.features = _parse_features(args.features)
    return args


def _parse_features(text: str):
    """--features as a features.FeatureSpace; a space whose extra is missing is refused here,
    before anything is loaded or written."""
    from ..features import FeatureError, check_available, parse_space

    try:
        space = parse_space(text)
        check_available(space)
    except FeatureError as error:
        raise UsageError(str(error)) from None
    return space


def _parse_whole(text: str, name: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name} must be a whole number, got {text!r}") from None
    try:
        params.check("n_clusters" if name == "K" else "repeats", value)
    except params.ParameterError as error:
        raise UsageError(error.option_message(name)) from None
    return value


def _check_data_options(args: argparse.Namespace, dataset: str) -> None:
    """Turn --size/--shape/--keys into values, refusing them where they mean nothing."""
    own = ("--size", args.size), ("--shape", args.shape), ("--keys", args.keys), ("--resize", args.resize)
    for name, value in (*own, ("--skip-unreadable", args.skip_unreadable), ("--grey", args.grey)):
        if value and dataset != "files":
            raise UsageError(f"{name} applies only to your own files (--dataset files), not to {dataset}")
    if dataset == "files" and args.data_dir is None:
        raise UsageError(f"--dataset files needs --data-dir PATH: {OWN_FILES_HELP}")
    args.size = _parse_height_width(args.size, "--size")
    if args.resize is not None and args.size is None:
        raise UsageError(f"--resize {args.resize} needs --size HxW: the size to fit the images to")
    args.shape = _parse_height_width(args.shape, "--shape")
    if args.keys is not None:
        names = [name.strip() for name in args.keys.split(",")]
        if len(names) > 2 or not all(names):
            raise UsageError(
                f"--keys wants IMAGES or IMAGES,LABELS (array names of the .npz), got {args.keys!r}"
            )
        args.keys = (names[0], names[1] if len(names) == 2 else None)


def _parse_height_width(text: str | None, name: str) -> tuple[int, int] | None:
    """'28' -> (28, 28), '32x48' -> (32, 48) (height x width)."""
    if text is None:
        return None
    parts = text.lower().replace("×", "x").split("x")
    try:
        values = [int(part) for part in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2) or min(values, default=0) < 1:
        raise UsageError(f"{name} wants HxW or N in pixels (e.g. 28x28 or 28), got {text!r}")
    return (values[0], values[-1])


def _load_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of load_dataset that the data options give."""
    return {
        "data_dir": args.data_dir,
        "split": args.split,
        "size": args.size,
        "shape": args.shape,
        "keys": args.keys,
        "skip_unreadable": args.skip_unreadable,
        "grey": args.grey,
        "resize": args.resize or "stretch",
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of `kmeans-mnist` and `python -m kmeans_mnist`; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    with _signals_as_interrupts():
        try:
            if argv[:1] == ["predict"]:
                return _predict_main(argv[1:])
            if sys.stdout is None:  # started with standard output closed (>&-): the table goes nowhere
                sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (for the process's life)
            with _interrupts_unwrapped():
                args = parse_args(argv)
                _import_pipeline()
                return on_scheduler(args, run)
        except UsageError as error:
            return _fail(str(error))
        except MemoryError as error:  # what the memory checks did not foresee: still one line
            reason = (str(error).splitlines() or ["an allocation failed"])[0]
            return _fail(
                f"out of memory ({reason}); use --limit to cluster fewer images, a smaller K or smaller images"
            )
        except KeyboardInterrupt as interrupt:  # before any K was saved; run() words the rest
            _handled(interrupt)
            _clear_progress()
            _say_always(
                f"interrupted{_by(interrupt)}: no partial results were written; earlier results are intact"
            )
            return _interrupted_code(interrupt)


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled exactly as Ctrl-C (cleanup, message), exit code 143."""


_received: list[int] = []  # the SIGINT/SIGTERM received during this main(), in order


@contextlib.contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt and SIGTERM Terminated, as Python's own handler would, and
    each is remembered for _interrupts_unwrapped()."""
    _received.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(number, frame):
        _received.append(number)
        raise Terminated if number == signal.SIGTERM else KeyboardInterrupt

    previous = {number: signal.signal(number, interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


@contextlib.contextmanager
def _interrupts_unwrapped() -> Iterator[None]:
    """Give back an interrupt that came out as another exception. One that lands inside an import
    does: Python 3.11 wraps it in a RuntimeError when it hits a class's __set_name__ (ipaddress's,
    under kagglehub), NumPy's C start-up reports it as "ImportError: PyCapsule_Import could not
    import module datetime". Any error after a SIGINT or SIGTERM arrived is that interrupt's."""
    try:
        yield
    except Exception as error:
        if not _received:
            raise
        raise (Terminated if _received[0] == signal.SIGTERM else KeyboardInterrupt)() from error


def _import_pipeline() -> None:
    """Import NumPy and the pipeline with SIGINT and SIGTERM held until they are whole (tens of
    milliseconds): an interrupt inside an import can come out as another error (see below), leave
    NumPy half imported, or be dropped by importlib's own callbacks. Held, it arrives as itself.
    After --help and the arguments, which need none of it."""
    from ..atomic import signals_held

    with signals_held():
        from ..results import predict  # noqa: F401
        from . import sweep  # noqa: F401 (NumPy, data, engine, results)


def _handled(interrupt: BaseException) -> None:
    """Tell CPython that this KeyboardInterrupt was handled. One that passed through exec() of a
    string on its way (scipy's imports do that) sets a flag that makes `python -m` kill itself
    with SIGINT at exit, whatever the exit code; any exec() of a string clears that flag."""
    exec("")


def _by(interrupt: BaseException) -> str:
    return " by SIGTERM" if isinstance(interrupt, Terminated) else ""


def _interrupted_code(interrupt: BaseException) -> int:
    return EXIT_TERMINATED if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED


def _fail(message: str) -> int:
    _clear_progress()
    _say_always(f"error: {message}")
    return EXIT_USAGE


def _say_always(text: str) -> None:
    """A line on stderr; a closed stderr is not worth a traceback."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def _clear_progress() -> None:
    """A progress line or bar on screen goes before a message takes its place."""
    progress = sys.modules.get(f"{__package__}.progress")  # loaded only once a run has started
    if progress is not None:
        with contextlib.suppress(OSError, ValueError):
            progress.clear()


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
            _say_always(cluster_line(args.cluster))
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


def run(args: argparse.Namespace) -> int:
    from ..data.datasets import DatasetError, load_dataset
    from .progress import Terminal

    terminal = Terminal(quiet=args.quiet, n_init=args.n_init)
    say = terminal.say
    folder = Path(args.output) / _experiment(args)
    check_output(Path(args.output), folder.name, args.k)  # before the load and the fits, not after them
    started = time.perf_counter()
    terminal.phase(f"loading {args.dataset}")
    try:
        data = load_dataset(
            args.dataset,
            limit=args.limit,
            keep_blank=args.keep_blank,
            plan=planned_memory(args),  # refuses images or a fit that cannot fit, before reading them
            **_load_options(args),
        )
    except DatasetError as error:
        raise UsageError(str(error)) from None
    load_seconds = time.perf_counter() - started
    terminal.done()
    check_k_fits(args, data)
    from .sigbus import mapped_file, say_on_sigbus

    if mapped_file(data.images):  # a file cut short while mapped: one line, not a silent SIGBUS
        say_on_sigbus(mapped_file(data.images), EXIT_USAGE)
    say(f"loaded {loaded_words(data)} ({load_seconds:.2f}s)")

    features = _features(args, data, terminal)

    from ..results.experiment import SettingsMismatch, SummaryError
    from .sweep import ReportFailed, SummaryFailed, Sweep, WriteFailed, signals_held

    settings, selection = _sweep_settings(args)
    from .results_table import ResultsTable, print_choice

    table = ResultsTable(
        terminal,
        args.k[-1],
        labelled=data.labels is not None,
        repeats=args.repeats,
        quiet=args.quiet,
        on_broken=_silence_stdout,
    )
    sweep = Sweep(
        Path(args.output),
        data,
        settings,
        selection=selection,
        load_seconds=load_seconds,
        progress=lambda k, repeat: terminal.fit(k, repeat, args.repeats),
        on_saved=table,
        features=features,
    )
    try:
        try:
            sweep.check(args.k)  # a folder that cannot take these results: say so before any fit
        except SettingsMismatch:
            if not args.replace:
                raise
            aside = sweep.experiment.move_aside()
            _say_always(
                f"--replace: {sweep.folder} held results made with other data or settings; "
                f"moved it to {aside} (nothing deleted)"
            )
            sweep.check(args.k)
    except SummaryError as error:
        raise UsageError(_with_output_hint(error)) from None
    except OSError as error:
        raise UsageError(f"cannot read {sweep.folder}: {_reason(error)}; choose another --output") from None
    try:
        with _interrupts_unwrapped():
            sweep.run(args.k)
    except KeyboardInterrupt as interrupt:
        _handled(interrupt)
        _clear_progress()
        _say_always(_interrupted(sweep, args.k, interrupt, signals_held))
        return _interrupted_code(interrupt)
    except WriteFailed as failure:
        raise UsageError(
            f"could not write the results of K={failure.k} to {failure.target}: {_reason(failure.error)}; "
            f"{_advice(failure.error)} (earlier results of K={failure.k} are unchanged{_saved_before(sweep)})"
        ) from None
    except ReportFailed as failure:
        saved = " ".join(map(str, failure.ks))
        raise UsageError(
            f"could not write the pictures and report.html in {failure.folder}: {_reason(failure.error)}; "
            f"{_advice(failure.error)} (the results of K={saved} are complete)"
        ) from None
    except SummaryFailed as failure:
        if failure.swapped:
            after = (
                f"the results of K={failure.k} are complete in {failure.folder}; the next run in "
                f"{sweep.folder} brings summary.csv up to date"
            )
        else:
            after = f"nothing was saved for K={failure.k}: its earlier results are unchanged{_saved_before(sweep)}"
        reason = _with_output_hint(failure.error) if isinstance(failure.error, SummaryError) else None
        if reason is None:
            reason = f"could not update {failure.summary}: {_reason(failure.error)}; {_advice(failure.error)}"
        raise UsageError(f"{reason} ({after})") from None
    except (SummaryError, OSError) as error:  # drawing the chart, after every K was saved
        reason = _with_output_hint(error) if isinstance(error, SummaryError) else _reason(error)
        raise UsageError(
            f"could not draw {sweep.folder / 'k-choice.png'}: {reason} ({_saved_words(sweep.saved)}; "
            "summary.csv and results.md are up to date; the next run redraws the chart)"
        ) from None
    terminal.done()
    if not args.quiet:
        try:
            print_choice(sweep)
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the results are written; end quietly, as a pipe's writer does
            table.broken = True
        if table.broken:
            _silence_stdout()
            return EXIT_BROKEN_PIPE
    return 0


def _features(args: argparse.Namespace, data, terminal):
    """The data in the --features space (from the cache when it was computed before), with its
    progress on the terminal; the map's coordinates come with it."""
    from ..features import FeatureError, compute_features

    space = args.features
    started = time.perf_counter()
    label = f"embedding {len(data):,} images with {space.text}"
    try:
        features = compute_features(
            data.all_pixel,
            space,
            seed=args.seed,
            progress=lambda text: terminal.phase(f"{label}: {text} ({time.perf_counter() - started:.0f}s)"),
        )
    except FeatureError as error:
        raise UsageError(str(error)) from None
    terminal.done()
    if space.method != "pixels":
        how = "read from the cache" if features.cached else "computed and cached"
        terminal.say(f"features {space.text}: {how} ({time.perf_counter() - started:.2f}s)")
    return features


def _export_mode(how: str | None) -> bool | str:
    """--export-members as write_run takes it: False, True (auto) or png/link/copy."""
    return False if how is None else True if how == "auto" else how


def loaded_words(data) -> str:
    """'456 images of 64x64, colour, from photos: ..., 1 non-image file skipped': what was loaded."""
    kind = ", colour" if data.channels == 3 else ", converted to grey" if data.converted_to_grey else ""
    if data.resize is not None:
        kind += f", fitted by {data.resize}"
    skipped = f", {data.n_blank_skipped:,} all-black skipped" if data.n_blank_skipped else ""
    if data.n_unreadable_skipped:
        skipped += f", {data.n_unreadable_skipped:,} unreadable files skipped"
    if data.n_not_images_skipped:
        count = data.n_not_images_skipped
        skipped += f", {count:,} non-image file{'s' if count != 1 else ''} skipped"
    height, width = data.image_shape
    return f"{len(data):,} images of {height}x{width}{kind}{',' if kind else ''} from {data.source}{skipped}"


def _k_list(ks) -> str:
    return ", ".join(map(str, ks))


def _saved_words(results) -> str:
    ks = [result.k for result in results]
    return f"K={_k_list(ks)} {'was' if len(ks) == 1 else 'were'} saved"


def _saved_before(sweep) -> str:
    return f"; {_saved_words(sweep.saved)} before it" if sweep.saved else ""


def _with_output_hint(error: Exception) -> str:
    from ..results.experiment import SettingsMismatch

    if isinstance(error, SettingsMismatch):
        return f"{error}, choose another --output, or add --replace to have it moved aside"
    return str(error)


def _interrupted(sweep, ks: list[int], interrupt: BaseException, signals_held) -> str:
    """What an interrupted sweep saved, exactly (the chart is redrawn for the saved K first)."""
    saved = [result.k for result in sweep.saved]
    if not saved:
        return f"interrupted{_by(interrupt)}: no partial results were written; earlier results are intact"
    chart = "the chart redrawn"
    if not getattr(sweep, "drawn", False):
        try:
            with signals_held(deliver=False):
                sweep.finish()
        except Exception:  # SummaryError, OSError, ReportFailed: the K are saved all the same
            chart = "the chart not redrawn"
    rest = [k for k in ks if k not in saved]
    text = f"interrupted{_by(interrupt)}: K={_k_list(saved)} saved in {sweep.folder} (summary.csv updated, {chart})"
    if rest:
        text += f"; K={_k_list(rest)} not saved (no partial results were written; their earlier results are intact)"
    return text


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the flush at exit does not fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _sweep_settings(args: argparse.Namespace):
    """The arguments as the sweep's Settings and Selection (the one place that maps them)."""
    from .sweep import Selection, Settings

    settings = Settings(
        init=args.init,
        n_init=args.n_init,
        max_iter=args.max_iter,
        tol=args.tol,
        seed=args.seed,
        repeats=args.repeats,
        scheduler=args.scheduler,
        cluster=getattr(args, "cluster", None),
        samples=args.samples,
        export_members=_export_mode(args.export_members),
        features=args.features.text,
    )
    return settings, Selection(split=args.split, limit=args.limit, keep_blank=args.keep_blank)


def _experiment(args: argparse.Namespace) -> str:
    """The experiment folder's name for these arguments, as the sweep will name it."""
    from ..results.experiment import experiment_name
    from .sweep import experiment_settings

    return experiment_name(args.dataset, **experiment_settings(*_sweep_settings(args)))


def _reason(error: OSError) -> str:
    return error.strerror or (str(error).splitlines() or [type(error).__name__])[0]


def _advice(error: OSError) -> str:
    """What to do about a failed write (its temp files are already gone)."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free some disk space or choose another --output"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "choose an --output folder you can write to"
    return "check the --output folder"


# --- predict: a saved model assigns new images ---------------------------------------------------


def build_predict_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kmeans-mnist predict",
        description="Assign every image of SOURCE to the nearest representative of a saved model and "
        "write index,label,cluster,distance as CSV (clusters numbered 1..K, as in every file).",
        epilog="Example: kmeans-mnist predict output/mnist/k10/model.npz mnist --split test --output test.csv",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "model", metavar="MODEL", help="a model.npz that a run wrote (output/<dataset>/k<K>/)"
    )
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help=f"mnist, fashion or usps (with the options below), or a path: {OWN_FILES_HELP}",
    )
    parser.add_argument(
        "--output",
        metavar="FILE",
        help="write the CSV to FILE (replaced whole; a pipe or a device is written into; '-': standard output) "
        "instead of standard output; never the model or the data predict reads",
    )
    data = parser.add_argument_group("data")
    _add_data_options(data)
    parser.add_argument("--quiet", action="store_true", help="no message on standard error")
    return parser


def parse_predict_args(argv: list[str]) -> argparse.Namespace:
    args = build_predict_parser().parse_args(argv)
    if args.source in DATASET_CHOICES and args.source != "files":
        args.dataset = args.source
    else:
        if args.data_dir is not None:
            raise UsageError(f"--data-dir does not apply when SOURCE is a path ({args.source}): leave it out")
        args.dataset, args.data_dir = "files", args.source
    for name, value in (("--output", args.output), ("--data-dir", args.data_dir), ("SOURCE", args.source)):
        if value is not None and not value.strip():
            raise UsageError(f"{name} is empty: give a path, or leave the option out")
    if args.dataset == "usps" and args.split != "all":
        raise UsageError("--split does not apply to usps: its five sheets have no train/test split")
    _check_data_options(args, args.dataset)
    return args


def _predict_main(argv: list[str]) -> int:
    """predict from its arguments; an interrupt at any moment is told in predict's own words."""
    state = argparse.Namespace(output=None, written=None)
    try:
        with _interrupts_unwrapped():
            args = parse_predict_args(argv)
            state.output = args.output
            _import_pipeline()
            return run_predict(args, state)
    except KeyboardInterrupt as interrupt:
        _handled(interrupt)
        _say_always(f"interrupted{_by(interrupt)}: {_predict_interrupted(state.output, state.written)}")
        return _interrupted_code(interrupt)


def run_predict(args: argparse.Namespace, state: argparse.Namespace | None = None) -> int:
    """Assign the images of args.source to the model's clusters and write the CSV. state.written
    tells how far the writing got (for the words of an interrupt, which the caller says)."""
    from ..data.datasets import DatasetError, load_dataset
    from ..results.predict import PredictError, Written, assign, check_output, read_model, write_predictions
    from .sweep import signals_held

    written = Written()
    if state is not None:
        state.written = written
    try:
        output = check_output(args.output, _predict_inputs(args))
        model = read_model(Path(args.model))
        options = {**_load_options(args), "resize": args.resize or model.resize or "stretch"}
        if args.size is None and args.dataset == "files" and _is_image_folder(Path(args.data_dir)):
            # images of another size are fitted to the model's, as the fit fitted its own
            options["size"] = model.image_shape
        data = load_dataset(args.dataset, keep_blank=True, **options)
        if data.image_shape != model.image_shape:
            raise UsageError(
                f"{args.model} is a model of {model.image_shape[0]}x{model.image_shape[1]} images (HxW), but "
                f"{args.source} holds {data.image_shape[0]}x{data.image_shape[1]} images: use a model fitted "
                "on images of that size"
            )
        if data.channels != model.channels:
            raise UsageError(_channels_mismatch(args, model.channels, data.channels))
        clusters, distances = assign(model.points(data.all_pixel), model.centers)
        write_predictions(
            output, data.labels, clusters, distances, written, held=signals_held, paths=data.paths
        )
    except (DatasetError, PredictError) as error:
        raise UsageError(str(error)) from None
    except BrokenPipeError:  # the reader of stdout went away (| head): nothing more to say to it
        _silence_stdout()
        return 0
    if not args.quiet and output.path is not None:
        _say_always(
            f"assigned {len(data):,} images of {data.source} to K={len(model.centers)}: {args.output}"
        )
    return 0


def _predict_interrupted(output: str | None, written) -> str:
    """What an interrupted predict left behind, exactly (written: None before it was made)."""
    if written is not None and written.replaced:
        return f"the predictions were written to {output} before the interrupt"
    if written is not None and written.started:
        return f"{output or 'standard output'} may hold part of the predictions"
    if output is None or output == "-":
        return "nothing was written"
    return f"{output} was not written (a file that was there is unchanged)"


def _predict_inputs(args: argparse.Namespace) -> list[Path]:
    """The files and folders predict reads, which its --output must never be: the model, the
    data's file or folder, the parsed-data cache, and kagglehub's for a named dataset without
    --data-dir."""
    from ..data import cache

    inputs = [
        Path(args.model),
        cache.cache_folder(),
    ]  # the parsed-data cache, where the data may be read from
    if args.data_dir is not None:
        inputs.append(Path(args.data_dir))
    else:
        inputs.append(Path(os.environ.get("KAGGLEHUB_CACHE") or Path.home() / ".cache" / "kagglehub"))
    return inputs


def _is_image_folder(path: Path) -> bool:
    """Whether path is a folder of image files (where --size applies), not one of IDX files."""
    from ..data.sources import _idx_files

    return path.is_dir() and not _idx_files(path)


def _channels_mismatch(args: argparse.Namespace, model_channels: int, data_channels: int) -> str:
    if model_channels == 1:
        return (
            f"{args.model} is a model of grey images, but {args.source} holds colour images: add --grey "
            "to assign them in grey, or use a model fitted in colour"
        )
    return (
        f"{args.model} is a model of colour (RGB) images, but {args.source} holds grey images"
        f"{' (--grey)' if args.grey else ''}: use a model fitted on grey images (--grey)"
    )


if __name__ == "__main__":
    sys.exit(main())
