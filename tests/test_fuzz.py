"""Fuzzing: the CSV loader and the engine either give a right answer or a ValueError, nothing else.

The loader is checked against a slow, obvious reference parse of the documented format; any
file the reference refuses must raise DatasetError with a one-line message.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from cli_support import MNIST_HEADER
from kmeans_mnist.data.datasets import DatasetError, load_dataset
from kmeans_mnist.engine.estimator import KMeans

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = 785


# --- the reference -------------------------------------------------------------------------------


def reference_parse(data: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """The Kaggle MNIST CSV format as documented, parsed the slow way; None if the file is invalid.

    An optional UTF-8 BOM; LF or CRLF line endings (a final one optional); the exact header; at
    least one row; every row 785 fields of 1 to 3 ASCII digits, the label 0..9, the pixels 0..255.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data:
        return None
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the final newline
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if lines[0] != MNIST_HEADER.encode() or len(lines) < 2:
        return None
    rows = []
    for line in lines[1:]:
        fields = line.split(b",")
        if len(fields) != FIELDS:
            return None
        if not all(1 <= len(field) <= 3 and field.isdigit() for field in fields):
            return None
        values = [int(field) for field in fields]
        if values[0] > 9 or max(values[1:]) > 255:
            return None
        rows.append(values)
    table = np.array(rows, dtype=np.int64)
    return table[:, 1:].astype(np.uint8).reshape(-1, 28, 28), table[:, 0]


def load_both_ways(data: bytes) -> None:
    """Write data as mnist_train.csv, load it (parsing, then from the cache), check against the reference."""
    expected = reference_parse(data)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "mnist_train.csv").write_bytes(data)
        for attempt in ("parsed", "cached"):
            try:
                loaded = load_dataset(
                    "mnist", data_dir=folder, split="train", keep_blank=True, cache_dir=Path(folder) / "cache"
                )
            except DatasetError as error:
                message = str(error)
                assert message and len(message.splitlines()) == 1, repr(message)
                assert expected is None, f"refused a valid file ({attempt}): {message}"
                return
            assert expected is not None, f"accepted an invalid file ({attempt})"
            images, labels = expected
            assert loaded.images.dtype == np.uint8 and loaded.images.shape == (len(images), 28, 28)
            assert np.array_equal(loaded.images, images), attempt
            assert np.array_equal(loaded.labels, labels), attempt


# --- files: valid ones, then mutations of them ----------------------------------------------------

ODD_FIELDS = [b"", b" 7", b"7 ", b"+1", b"-1", b"-0", b"1.0", b"1e2", b"0x1", b"007", b"0000", b"256", b"999", b"10",
              b"99999999999999999999", b"\xef\xbb\xbf1", b"\t1", b"\xd9\xa3", b"nan"]  # fmt: skip
NEWLINES = [b"\n", b"\r\n", b"\r", b"\n\r", b"\r\r\n"]


@st.composite
def rows(draw, count: int) -> list[list[bytes]]:
    """count rows of 785 fields: a random label and pixels, mostly zero like MNIST digits."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (count, FIELDS - 1))
    pixels[rng.random(pixels.shape) < 0.7] = 0
    labels = rng.integers(0, 10, count)
    return [
        [str(value).encode() for value in [label, *row]] for label, row in zip(labels, pixels, strict=True)
    ]


@st.composite
def valid_files(draw) -> bytes:
    table = draw(rows(draw(st.integers(1, 4))))
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    body = newline.join([MNIST_HEADER.encode(), *(b",".join(row) for row in table)])
    return (
        (b"\xef\xbb\xbf" if draw(st.booleans()) else b"") + body + (newline if draw(st.booleans()) else b"")
    )


@st.composite
def structured_files(draw) -> bytes:
    """Rows built field by field: odd fields and field counts, mixed line endings, BOMs, blank lines."""
    table = draw(rows(draw(st.integers(0, 4))))
    for row in table:
        for _ in range(draw(st.integers(0, 2))):
            position = draw(st.integers(0, len(row) - 1))
            row[position] = draw(
                st.sampled_from(ODD_FIELDS) | st.integers(0, 10**30).map(lambda n: str(n).encode())
            )
        change = draw(st.sampled_from([0, 0, 0, 0, -1, 1, -2, 2]))
        if change < 0:
            del row[change:]
        else:
            row.extend([b"0"] * change)
    lines = [MNIST_HEADER.encode() if draw(st.integers(0, 9)) else draw(st.binary(max_size=20))]
    lines += [b",".join(row) for row in table]
    if draw(st.integers(0, 4)) == 0:
        lines.insert(draw(st.integers(1, len(lines))), b"")
    text = b""
    for line in lines:
        text += line + draw(st.sampled_from(NEWLINES[:2] * 4 + NEWLINES))
    if draw(st.booleans()):
        text = text[: -draw(st.integers(1, 2))]
    if draw(st.integers(0, 5)) == 0:
        text = b"\xef\xbb\xbf" * draw(st.integers(1, 2)) + text
    return text


MUTATION_BYTES = st.sampled_from(list(b"0123456789,\n\r -+.e\t\xef\xbb\xbf\x00")) | st.integers(0, 255)


@st.composite
def mutated_files(draw) -> bytes:
    """A valid file with a few bytes inserted, deleted or replaced."""
    data = bytearray(draw(valid_files()))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["insert", "delete", "replace", "cut"]))
        if action == "insert":
            data[position:position] = bytes(draw(st.lists(MUTATION_BYTES, min_size=1, max_size=4)))
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 6))]
        elif action == "replace":
            data[position] = draw(MUTATION_BYTES)
        else:
            del data[position:]
    return bytes(data)


@FUZZ
@given(valid_files())
def test_valid_files_load_exactly(data):
    assert reference_parse(data) is not None
    load_both_ways(data)


@FUZZ
@given(structured_files())
def test_odd_files_load_exactly_or_fail_in_one_line(data):
    load_both_ways(data)


@FUZZ
@given(mutated_files())
def test_mutated_files_load_exactly_or_fail_in_one_line(data):
    load_both_ways(data)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_fail_in_one_line(data):
    load_both_ways(data)


@pytest.mark.parametrize(
    "data", [b"", b"\xef\xbb\xbf", b"\n", b"\r\n", MNIST_HEADER.encode(), MNIST_HEADER.encode() + b"\n\n"]
)
def test_nearly_empty_files(data):
    load_both_ways(data)


# --- the engine ---------------------------------------------------------------------------------


@st.composite
def engine_cases(draw):
    n = draw(st.integers(1, 30))
    d = draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(
        st.sampled_from(["uint8", "int64", "float32", "float64", "bool", "constant", "duplicates", "scaled"])
    )
    if kind == "uint8":
        X = rng.integers(0, 256, (n, d), dtype=np.uint8)
    elif kind == "int64":
        X = rng.integers(-(10**6), 10**6, (n, d))
    elif kind == "bool":
        X = rng.random((n, d)) < 0.5
    elif kind == "constant":
        X = np.full((n, d), draw(st.sampled_from([0.0, 1.0, -3.5, 255.0])))
    elif kind == "duplicates":
        distinct = rng.normal(size=(draw(st.integers(1, 3)), d))
        X = distinct[rng.integers(0, len(distinct), n)]
    else:
        X = rng.normal(size=(n, d)).astype(np.float32 if kind == "float32" else np.float64)
        if kind == "scaled":
            X = X * 10.0 ** draw(st.integers(-150, 150))
    if kind in ("float32", "float64") and draw(st.integers(0, 9)) == 0:
        X[draw(st.integers(0, n - 1)), draw(st.integers(0, d - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf])
        )
    # valid parameters, then (half the time) one of them made wrong
    k = draw(st.integers(1, n))
    params = {
        "init": draw(st.sampled_from(["k-means++", "random", "array"])),
        "n_init": draw(st.integers(1, 3)),
        "max_iter": draw(st.sampled_from([1, 2, 5, 300])),
        "tol": draw(st.sampled_from([1e-4, 0.0, 1.0])),
        "random_state": draw(st.integers(0, 2**32 - 1)),
    }
    wrong = draw(st.sampled_from([None, None, None, "k", "init", "n_init", "max_iter", "tol"]))
    if wrong == "k":
        k = draw(st.sampled_from([0, -1, n + 1, 2.0, True, "3", None]))
    elif wrong == "init":
        params["init"] = draw(st.sampled_from(["bogus", "wrong-shape", "nan"]))
    elif wrong is not None:
        params[wrong] = draw(
            st.sampled_from(
                {"n_init": [0, -1, 1.5], "max_iter": [0, -3], "tol": [-1e-3, np.nan, np.inf]}[wrong]
            )
        )
    if isinstance(params["init"], str) and params["init"] in ("array", "wrong-shape", "nan"):
        rows = k if wrong != "k" else 1
        finite = (
            X[np.isfinite(X).all(axis=1)].astype(np.float64) if X.dtype.kind == "f" else X.astype(np.float64)
        )
        scale = (float(np.std(finite)) or float(np.max(np.abs(finite)))) if finite.size else 1.0
        scale = scale or 1.0
        # starting centres near the data, on its scale: far-off ones overflow float32 (engine issue)
        init = X[rng.integers(0, n, rows)].astype(np.float64) + rng.normal(size=(rows, d)) * scale
        if params["init"] == "wrong-shape":
            init = np.zeros((rows, d + 1))
        elif params["init"] == "nan":
            init[0, 0] = np.nan
        params["init"] = init
    event(f"wrong: {wrong}, X: {kind}")
    return X, k, params, wrong is not None or not np.all(np.isfinite(X))


@settings(max_examples=300, deadline=None)
@given(engine_cases())
def test_engine_fits_or_raises_value_error(case):
    X, k, params, refused = case
    model = KMeans(k, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an overflow or invalid value inside is a failure too
        # ...but not scikit-learn's notices: duplicate points, or n_init with given centres
        warnings.filterwarnings("ignore", category=ConvergenceWarning)
        warnings.filterwarnings("ignore", message="Explicit initial center", category=RuntimeWarning)
        try:
            model.fit(X)
        except ValueError as error:
            assert refused, f"valid input refused: {error}"
            return
    assert not refused, "invalid input accepted"
    n, d = X.shape
    assert isinstance(k, int) and 1 <= k <= n
    centers = model.cluster_centers_
    assert centers.shape == (k, d) and np.all(np.isfinite(centers))
    assert model.labels_.shape == (n,) and model.labels_.min() >= 0 and model.labels_.max() < k
    assert np.isfinite(model.inertia_) and model.inertia_ >= 0
    assert 1 <= model.n_iter_ <= params["max_iter"]
