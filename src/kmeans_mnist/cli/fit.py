"""The fit command, `kmeans-mnist K [K ...]`: load the images once, put them in the feature
space, run the sweep over K, and say what was saved, in words that are true however it ended.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .exits import (
    EXIT_BROKEN_PIPE,
    EXIT_USAGE,
    clear_progress,
    handled,
    interrupted_by,
    interrupted_code,
    interrupts_unwrapped,
    os_reason,
    say_always,
    silence_stdout,
    write_advice,
)
from .options import load_options
from .preflight import UsageError, check_k_fits, check_output, planned_memory


def run(args: argparse.Namespace) -> int:
    """The fit command on parsed arguments; returns the exit code (UsageError for what the user
    can fix, KeyboardInterrupt before any K was saved: main words those)."""
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
            **load_options(args),
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
    from .sweep import ReportFailed, SummaryFailed, Sweep, WriteFailed

    settings, selection = _sweep_settings(args)
    from .results_table import ResultsTable, print_choice

    table = ResultsTable(
        terminal,
        args.k[-1],
        labelled=data.labels is not None,
        repeats=args.repeats,
        quiet=args.quiet,
        on_broken=silence_stdout,
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
            say_always(
                f"--replace: {sweep.folder} held results made with other data or settings; "
                f"moved it to {aside} (nothing deleted)"
            )
            sweep.check(args.k)
    except SummaryError as error:
        raise UsageError(_with_output_hint(error)) from None
    except OSError as error:
        raise UsageError(f"cannot read {sweep.folder}: {os_reason(error)}; choose another --output") from None
    try:
        with interrupts_unwrapped():
            sweep.run(args.k)
    except KeyboardInterrupt as interrupt:
        handled(interrupt)
        clear_progress()
        say_always(_interrupted(sweep, args.k, interrupt))
        return interrupted_code(interrupt)
    except WriteFailed as failure:
        raise UsageError(
            f"could not write the results of K={failure.k} to {failure.target}: {os_reason(failure.error)}; "
            f"{write_advice(failure.error)} (earlier results of K={failure.k} are unchanged"
            f"{_saved_before(sweep)})"
        ) from None
    except ReportFailed as failure:
        saved = " ".join(map(str, failure.ks))
        raise UsageError(
            f"could not write the pictures and report.html in {failure.folder}: {os_reason(failure.error)}; "
            f"{write_advice(failure.error)} (the results of K={saved} are complete)"
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
            reason = (
                f"could not update {failure.summary}: {os_reason(failure.error)}; "
                f"{write_advice(failure.error)}"
            )
        raise UsageError(f"{reason} ({after})") from None
    except (SummaryError, OSError) as error:  # drawing the chart, after every K was saved
        reason = _with_output_hint(error) if isinstance(error, SummaryError) else os_reason(error)
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
            silence_stdout()
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


def _interrupted(sweep, ks: list[int], interrupt: BaseException) -> str:
    """What an interrupted sweep saved, exactly (the chart is redrawn for the saved K first)."""
    from ..atomic import signals_held

    saved = [result.k for result in sweep.saved]
    if not saved:
        return f"{interrupted_by(interrupt)}: no partial results were written; earlier results are intact"
    chart = "the chart redrawn"
    if not getattr(sweep, "drawn", False):
        try:
            with signals_held(deliver=False):
                sweep.finish()
        except Exception:  # SummaryError, OSError, ReportFailed: the K are saved all the same
            chart = "the chart not redrawn"
    rest = [k for k in ks if k not in saved]
    text = (
        f"{interrupted_by(interrupt)}: K={_k_list(saved)} saved in {sweep.folder} "
        f"(summary.csv updated, {chart})"
    )
    if rest:
        text += f"; K={_k_list(rest)} not saved (no partial results were written; their earlier results are intact)"
    return text


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
