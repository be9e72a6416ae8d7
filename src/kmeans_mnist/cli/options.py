"""The two commands' arguments: `kmeans-mnist K [K ...]` and `kmeans-mnist predict MODEL SOURCE`,
parsed and checked before any data is loaded (argparse; one `error:` line, never the usage).
"""

from __future__ import annotations

import argparse
import os

from ..engine import params
from .exits import import_held
from .preflight import UsageError

DATASET_CHOICES = ("mnist", "fashion", "usps", "files")
OWN_FILES_HELP = "a folder of images (sub-folders name classes), IDX files, a .npy/.npz file or a CSV file"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the whole usage; one line is kinder
        if (
            message.startswith("argument --export-members: invalid choice: '")
            and message.split("'")[1].isdigit()
        ):
            message += "; give K before it (kmeans-mnist 3 --export-members): a K after it is taken for HOW"
        raise UsageError(f"{message} (see --help)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown where they say something: not for an option that is off or absent unless
    given (None, False), where argparse would print "(default: None)"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kmeans-mnist",
        description="Cluster MNIST, Fashion-MNIST, the USPS digit sheets or your own images with K-means and write "
        "the representatives, the clusters, the assignments and their scores.",
        epilog="Examples: python -m kmeans_mnist 3 4 5 6 7 --dataset usps; "
        "python -m kmeans_mnist 10 --dataset files --data-dir my-images/. "
        "A saved model assigns new images: kmeans-mnist predict MODEL SOURCE (see kmeans-mnist predict --help).",
        formatter_class=_HelpFormatter,
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
    out.add_argument(
        "--quiet",
        action="store_true",
        help="no progress display, no table (errors and interrupts still say one line)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    return parser


def _add_data_options(group, predict: bool = False) -> None:
    """The options that say where the images are and how to read them (clustering and predict,
    whose SOURCE is the path of your own files)."""
    named = (
        "read the files from PATH instead of downloading with kagglehub (the Kaggle CSV files for "
        "mnist/fashion, usps_1.jpg..usps_5.jpg for usps, which ship with the package)"
    )
    group.add_argument(
        "--data-dir",
        metavar="PATH",
        help=f"for SOURCE mnist, fashion or usps: {named}"
        if predict
        else f"{named}; with --dataset files: {OWN_FILES_HELP}",
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
        help="files: assign colour images in grey, for a model fitted with --grey"
        if predict
        else "files: cluster colour images in grey (colour images are clustered in RGB by default)",
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
    import_held("..features", ".sweep")  # NumPy; the sweep's data, engine and results for the fit
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


def load_options(args: argparse.Namespace) -> dict:
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


def build_predict_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="kmeans-mnist predict",
        description="Assign every image of SOURCE to the nearest representative of a saved model and "
        "write index,label,cluster,distance as CSV (index,path,label,... for your own files; clusters "
        "numbered 1..K, as in every file).",
        epilog="Example: kmeans-mnist predict output/mnist/k10/model.npz mnist --split test --output test.csv",
        formatter_class=_HelpFormatter,
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
    _add_data_options(data, predict=True)
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
    if args.dataset == "files" and not os.path.lexists(args.source):
        raise UsageError(
            f"SOURCE {args.source} does not exist: give mnist, fashion, usps or a path ({OWN_FILES_HELP})"
        )
    if args.dataset == "usps" and args.split != "all":
        raise UsageError("--split does not apply to usps: its five sheets have no train/test split")
    _check_data_options(args, args.dataset)
    return args
