"""The predict command, `kmeans-mnist predict MODEL SOURCE`: a saved model assigns new images,
written as CSV; an interrupt at any moment is told in predict's own words.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .exits import (
    handled,
    import_held,
    interrupted_by,
    interrupted_code,
    interrupts_unwrapped,
    say_always,
    silence_stdout,
)
from .options import load_options, parse_predict_args
from .preflight import UsageError


def predict_main(argv: list[str]) -> int:
    """predict from its arguments; an interrupt at any moment is told in predict's own words."""
    state = argparse.Namespace(output=None, written=None)
    try:
        with interrupts_unwrapped():
            args = parse_predict_args(argv)
            state.output = args.output
            import_held("..data.datasets", "..results.predict")
            return run_predict(args, state)
    except KeyboardInterrupt as interrupt:
        handled(interrupt)
        say_always(f"{interrupted_by(interrupt)}: {_predict_interrupted(state.output, state.written)}")
        return interrupted_code(interrupt)


def run_predict(args: argparse.Namespace, state: argparse.Namespace | None = None) -> int:
    """Assign the images of args.source to the model's clusters and write the CSV. state.written
    tells how far the writing got (for the words of an interrupt, which the caller says)."""
    from ..atomic import signals_held
    from ..data.datasets import DatasetError, load_dataset
    from ..results.predict import PredictError, Written, assign, check_output, read_model, write_predictions

    written = Written()
    if state is not None:
        state.written = written
    try:
        output = check_output(args.output, _predict_inputs(args))
        model = read_model(Path(args.model))
        options = {**load_options(args), "resize": args.resize or model.resize or "stretch"}
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
        silence_stdout()
        return 0
    if not args.quiet and output.path is not None:
        say_always(f"assigned {len(data):,} images of {data.source} to K={len(model.centers)}: {args.output}")
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
